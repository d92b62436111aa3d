"""WAL archiving: how fast a backlog of 64 WAL segments drains, hadr against pgBackRest, sync and async.

The method of ``/work/shared/bench-reference/wal_archive_bench.sh``, in Python: for each variant a fresh
cluster (initdb) runs with ``archive_command='/bin/false'`` while 64 segments are written (14,000 rows of
~830 bytes, then ``pg_switch_wal()``, 64 times), so they pile up as ``.ready`` files. The clock starts when
``archive_command`` is switched to the variant under test (ALTER SYSTEM + reload) and stops when
``pg_stat_archiver.last_archived_wal`` reaches the last segment: segments/s is the backlog over that time.
Dirty pages are flushed (``sync``) before the clock starts, so no variant pays for the writing of another.

Variants (both sides zstd level 3, unencrypted, into a local repository, run by the server as postgres):

* pgBackRest sync:  ``pgbackrest --stanza=bench archive-push %p`` (compress-type=zst, process-max=2)
* pgBackRest async: the same with archive-async=y and a spool-path
* hadr sync:  ``archive_command_for(policy, source)`` with async_archive off
* hadr async: the same with async_archive on, archive_workers 2
* hadr async, encrypted (informative): the same with an encryption key (AES-256-GCM)

hadr's modules are byte-compiled first (``compileall``), as ``pip install`` does for a regular install: the
server inherits ``PYTHONDONTWRITEBYTECODE`` here, and without bytecode every archive_command would compile
hadr again. Sides are interleaved and the median of ``HADR_BENCH_WAL_RUNS`` (default 3) counts;
``HADR_BENCH_WAL_SEGMENTS`` changes the backlog and ``HADR_BENCH_DIR`` (default /tmp) where clusters and
repositories go. Run as root.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml
from runner import ROOT, Figure

sys.path.insert(0, str(ROOT))

from hadr_backup.procs import free_port, prepare_dir_for_postgres  # noqa: E402
from hadr_backup.sandbox.servers import PostgresCluster  # noqa: E402

SEGMENTS = int(os.environ.get("HADR_BENCH_WAL_SEGMENTS", 64))
RUNS = int(os.environ.get("HADR_BENCH_WAL_RUNS", 3))
BASE = Path(os.environ.get("HADR_BENCH_DIR", "/tmp")) / "hadr-bench-wal"


def as_postgres(argv: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"failed: {argv}\n{done.stdout}{done.stderr}")
    return done


def postgres_file(path: Path, text: str) -> Path:
    path.write_text(text)
    shutil.chown(path, "postgres", "postgres")
    return path


# -- the variants: each returns the archive_command, after preparing its repository ------------------


def pgbackrest(work: Path, cluster: PostgresCluster, *, asynchronous: bool) -> str:
    conf = postgres_file(
        work / "pgbackrest.conf",
        "\n".join(
            [
                "[global]",
                f"repo1-path={prepare_dir_for_postgres(work / 'pgbr-repo')}",
                "compress-type=zst",
                "compress-level=3",
                "process-max=2",
                f"lock-path={prepare_dir_for_postgres(work / 'pgbr-lock')}",
                f"spool-path={prepare_dir_for_postgres(work / 'pgbr-spool')}",
                f"archive-async={'y' if asynchronous else 'n'}",
                "log-level-console=off",
                "log-level-stderr=off",
                "log-level-file=off",
                "start-fast=y",
                "[bench]",
                f"pg1-path={cluster.data_dir}",
                f"pg1-port={cluster.port}",
                "pg1-host-user=postgres",
                f"pg1-socket-path={cluster.base_dir}",
                "",
            ]
        ),
    )
    as_postgres(["pgbackrest", f"--config={conf}", "--stanza=bench", "stanza-create"])
    return f"pgbackrest --config={conf} --stanza=bench archive-push %p"


def hadr(work: Path, cluster: PostgresCluster, *, asynchronous: bool, encrypted: bool = False) -> str:
    from hadr_backup.policy.load import parse_policy
    from hadr_backup.postgres.archive import archive_command_for
    from hadr_backup.repo.keys import create_key_file
    from hadr_backup.repo.repository import init_repo

    source = {
        "name": "bench",
        "dsn": cluster.dsn(),
        "async_archive": asynchronous,
        "archive_workers": 2,
        "spool_dir": str(prepare_dir_for_postgres(work / "hadr-spool")),
    }
    data = {
        "repository": {"path": str(prepare_dir_for_postgres(work / "hadr-repo"))},
        "compression": {"level": 3, "threads": 2},
        "sources": {"postgres": [source]},
    }
    if encrypted:
        create_key_file(work / "hadr.key")
        shutil.chown(work / "hadr.key", "postgres", "postgres")
        data["encryption"] = {"key_file": str(work / "hadr.key")}
    policy_file = postgres_file(work / "policy.yaml", yaml.safe_dump(data))
    init_repo(parse_policy(data, str(policy_file)))
    return archive_command_for(policy_file, "bench")


VARIANTS = {
    "pgbackrest-sync": lambda w, c: pgbackrest(w, c, asynchronous=False),
    "pgbackrest-async": lambda w, c: pgbackrest(w, c, asynchronous=True),
    "hadr-sync": lambda w, c: hadr(w, c, asynchronous=False),
    "hadr-async": lambda w, c: hadr(w, c, asynchronous=True),
    "hadr-async-encrypted": lambda w, c: hadr(w, c, asynchronous=True, encrypted=True),
}


# -- one measurement -------------------------------------------------------------------------------


def drain(variant: str) -> tuple[int, float]:
    """(backlog segments, seconds to archive them) for one fresh cluster."""
    work = BASE / variant
    shutil.rmtree(work, ignore_errors=True)
    prepare_dir_for_postgres(work)
    cluster = PostgresCluster(
        work,
        free_port(),
        checksums=False,
        settings={
            "archive_mode": "on",
            "archive_command": "/bin/false",
            "max_wal_size": "8GB",
            "log_min_messages": "fatal",
        },
    )
    cluster.init()
    cluster.start()
    try:
        command = VARIANTS[variant](work, cluster)
        with cluster.connect() as conn:
            conn.execute("create table t(x text)")
            for _ in range(SEGMENTS):
                conn.execute("insert into t select md5(g::text)||repeat('x',800) from generate_series(1,14000) g")
                conn.execute("select pg_switch_wal()")
            target = conn.execute("select pg_walfile_name(pg_switch_wal())").fetchone()[0]
            ready = len(list((cluster.data_dir / "pg_wal" / "archive_status").glob("*.ready")))
            os.sync()  # the backlog's dirty pages are written before the clock starts, for every variant
            started = time.perf_counter()
            conn.execute(f"alter system set archive_command = {_literal(command)}")
            conn.execute("select pg_reload_conf()")
            while conn.execute("select coalesce(last_archived_wal, '') from pg_stat_archiver").fetchone()[0] < target:
                time.sleep(0.02)
            elapsed = time.perf_counter() - started
        return ready, elapsed
    finally:
        cluster.stop("immediate")
        time.sleep(1.5)  # a pusher lingering after the drain exits before its directory goes
        shutil.rmtree(work, ignore_errors=True)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def measure(variants: list[str]) -> dict[str, float]:
    """Median segments/s of each variant, interleaved over RUNS rounds."""
    rates: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(RUNS):
        for variant in variants:
            ready, seconds = drain(variant)
            rates[variant].append(ready / seconds)
            print(f"  {variant}: {ready} segments in {seconds:.2f}s = {ready / seconds:.1f}/s", file=sys.stderr)
    return {v: statistics.median(r) for v, r in rates.items()}


def compile_hadr() -> None:
    import compileall

    compileall.compile_dir(str(ROOT / "hadr_backup"), quiet=1)


def run() -> list[Figure]:
    compile_hadr()
    version = subprocess.run(["pgbackrest", "version"], capture_output=True, text=True).stdout.split()[-1]
    rates = measure(list(VARIANTS))
    competitor = f"pgBackRest {version} archive-push (zst, process-max=2{{}})"
    return [
        Figure(
            f"WAL drain, {SEGMENTS}-segment backlog, sync",
            rates["hadr-sync"],
            rates["pgbackrest-sync"],
            "segments/s",
            True,
            competitor.format(""),
            "",
        ),
        Figure(
            f"WAL drain, {SEGMENTS}-segment backlog, async",
            rates["hadr-async"],
            rates["pgbackrest-async"],
            "segments/s",
            True,
            competitor.format(", archive-async=y"),
            "ratio >= 1.0",
        ),
        Figure(
            f"WAL drain, {SEGMENTS}-segment backlog, async, hadr encrypted",
            rates["hadr-async-encrypted"],
            rates["pgbackrest-async"],
            "segments/s",
            True,
            competitor.format(", archive-async=y, unencrypted"),
            "",
        ),
    ]


if __name__ == "__main__":
    compile_hadr()
    chosen = sys.argv[1:] or list(VARIANTS)
    for name, rate in measure(chosen).items():
        print(f"{name}: {rate:.1f} segments/s")
