"""PostgreSQL base backup, restore and PITR: hadr against pgBackRest on the same pgbench database.

One cluster (data checksums on) holds a pgbench database of scale ``HADR_BENCH_PG_SCALE`` (default 50,
about 790 MB). Its archive_command pushes every segment to both tools, so each backup waits for the same
archiving. Both compress with zstd (level 3) on 2 workers (pgBackRest: compress-type=zst, process-max=2,
start-fast=y; hadr: compression.level 3, threads 2) into a local repository, unencrypted on both sides.

* full backup: wall time of ``pgbackrest --type=full backup`` and of ``hadr backup pg``;
* restore: wall time of ``pgbackrest restore`` and of ``hadr restore pg --backup ID`` into an empty
  directory (no server start; hadr flushes the restored files to disk before it returns);
* PITR end to end: restore, start and replay a pgbench run up to a time in its middle, until the server
  is promoted (``--type=time --target-action=promote`` and ``pg_ctl start`` for pgBackRest; ``hadr
  restore pg --target-time T --start --target-action promote``); both results are checked to hold the
  same pgbench_history rows.

Sides are interleaved and the median of ``RUNS`` counts. Runs as root (servers run as ``postgres``);
``HADR_BENCH_DIR`` (default /tmp) is where the cluster and both repositories go.
"""

from __future__ import annotations

import os
import shlex
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

SCALE = int(os.environ.get("HADR_BENCH_PG_SCALE", 50))
RUNS = int(os.environ.get("HADR_BENCH_PG_RUNS", 3))
PGBENCH_SECONDS = 20
STANZA = "bench"
COMPETITOR = "pgBackRest {version} (zst, process-max=2)"
BIN = "/usr/lib/postgresql/15/bin"


def sh(
    argv: list[str] | str, *, as_postgres: bool = False, check: bool = True, **kwargs
) -> subprocess.CompletedProcess:
    if isinstance(argv, str):
        argv = ["bash", "-c", argv]
    if as_postgres:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kwargs)
    if check and done.returncode != 0:
        raise RuntimeError(
            f"failed ({done.returncode}): {shlex.join(argv)}\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        )
    return done


def timed(argv: list[str] | str, **kwargs) -> float:
    os.sync()
    began = time.perf_counter()
    sh(argv, **kwargs)
    elapsed = time.perf_counter() - began
    print(f"  {elapsed:6.2f} s  {shlex.join(argv) if isinstance(argv, list) else argv}", file=sys.stderr, flush=True)
    return elapsed


class Bench:
    """The cluster, pgBackRest's configuration and hadr's policy, under one directory."""

    def __init__(self, base: Path):
        self.base = base
        self.cluster = PostgresCluster(base / "pg", free_port())
        self.pgbr_conf = base / "pgbackrest.conf"
        self.policy = base / "policy.yaml"

    def hadr(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "hadr_backup", "--policy", str(self.policy), *args]

    def pgbackrest(self, *args: str) -> list[str]:
        return ["pgbackrest", f"--config={self.pgbr_conf}", f"--stanza={STANZA}", *args]

    def psql(self, sql: str, port: int | None = None) -> str:
        return sh(
            [
                f"{BIN}/psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(port or self.cluster.port),
                "-U",
                "postgres",
                "-Atc",
                sql,
                "postgres",
            ]
        ).stdout.strip()

    def set_up(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)
        for name in ("", "pgbr-repo", "pgbr-spool", "pgbr-log", "hadr-repo"):
            prepare_dir_for_postgres(self.base / name)
        self._write_configs()
        self.cluster.init()
        self.cluster.write_settings({"max_wal_size": "4GB", "checkpoint_timeout": "30min"})
        self.cluster.start()
        sh(
            [
                f"{BIN}/pgbench",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.cluster.port),
                "-U",
                "postgres",
                "-i",
                "-s",
                str(SCALE),
                "-q",
                "postgres",
            ]
        )
        # archiving is turned on after the load, so that the load's WAL is not what is measured
        self.cluster.stop()
        push_both = (
            f"{shlex.join(self.pgbackrest('archive-push'))} %p && "
            f"{shlex.join(self.hadr('wal-push', '--source', 'main'))} %p"
        )
        self.cluster.write_settings(
            {"max_wal_size": "4GB", "checkpoint_timeout": "30min", "archive_mode": "on", "archive_command": push_both}
        )
        self.cluster.start()
        sh(self.pgbackrest("stanza-create"), as_postgres=True)
        sh(self.hadr("init"))

    def _write_configs(self) -> None:
        self.pgbr_conf.write_text(
            f"[global]\nrepo1-path={self.base / 'pgbr-repo'}\nrepo1-retention-full=99\ncompress-type=zst\n"
            f"compress-level=3\nprocess-max=2\nstart-fast=y\nlog-level-console=warn\n"
            f"log-path={self.base / 'pgbr-log'}\n"
            f"spool-path={self.base / 'pgbr-spool'}\narchive-async=y\nlock-path={self.base / 'pgbr-log'}\n"
            f"[{STANZA}]\npg1-path={self.cluster.data_dir}\npg1-port={self.cluster.port}\n"
            f"pg1-socket-path={self.cluster.base_dir}\n"
        )
        policy = {
            "repository": {"path": str(self.base / "hadr-repo")},
            "compression": {"level": 3, "threads": 2},
            "sources": {
                "postgres": [
                    {
                        "name": "main",
                        "dsn": f"host=127.0.0.1 port={self.cluster.port} user=postgres dbname=postgres",
                        "backup_timeout": 300,
                    }
                ]
            },
        }
        self.policy.write_text(yaml.safe_dump(policy))
        for path in (self.pgbr_conf, self.policy):
            shutil.chown(path, "postgres", "postgres")

    def tear_down(self) -> None:
        self.cluster.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    # -- measurements ------------------------------------------------------------------------------

    def backups(self) -> tuple[list[float], list[float]]:
        ours, theirs = [], []
        for _ in range(RUNS):
            theirs.append(timed(self.pgbackrest("--type=full", "backup"), as_postgres=True))
            ours.append(timed(self.hadr("backup", "pg")))
        return ours, theirs

    def restores(self) -> tuple[list[float], list[float]]:
        ours, theirs = [], []
        target = self.base / "restored"
        for _ in range(RUNS):
            self._empty(target)
            theirs.append(
                timed(self.pgbackrest(f"--pg1-path={target}", "--type=immediate", "restore"), as_postgres=True)
            )
            self._empty(target)
            ours.append(
                timed(self.hadr("restore", "pg", "--backup", self._newest_backup(), "--to", str(target), "--force"))
            )
        self._empty(target)
        return ours, theirs

    def pitr(self) -> tuple[list[float], list[float]]:
        target_time = self._workload()
        port = free_port()
        target = self.base / "pitr"
        ours, theirs, results = [], [], set()
        for _ in range(RUNS):
            self._empty(target)
            os.sync()
            began = time.perf_counter()
            sh(
                self.pgbackrest(
                    f"--pg1-path={target}",
                    "--type=time",
                    f"--target={target_time}",
                    "--target-action=promote",
                    "restore",
                ),
                as_postgres=True,
            )
            sh(
                [
                    f"{BIN}/pg_ctl",
                    "-D",
                    str(target),
                    "-l",
                    str(self.base / "pitr.log"),
                    "-o",
                    f"-p {port} -c archive_mode=off",
                    "start",
                ],
                as_postgres=True,
            )
            self._wait_promoted(port)
            theirs.append(time.perf_counter() - began)
            results.add(("pgBackRest", self.psql("select count(*), sum(delta) from pgbench_history", port)))
            self._stop(target)
            self._empty(target)
            os.sync()
            began = time.perf_counter()
            sh(
                self.hadr(
                    "restore",
                    "pg",
                    "--target-time",
                    target_time,
                    "--to",
                    str(target),
                    "--start",
                    "--port",
                    str(port),
                    "--target-action",
                    "promote",
                )
            )
            ours.append(time.perf_counter() - began)
            results.add(("hadr", self.psql("select count(*), sum(delta) from pgbench_history", port)))
            self._stop(target)
            print(f"  PITR: hadr {ours[-1]:.2f} s, pgBackRest {theirs[-1]:.2f} s", file=sys.stderr, flush=True)
        self._empty(target)
        if len({rows for _, rows in results}) != 1:
            raise RuntimeError(f"PITR results differ: {sorted(results)}")
        return ours, theirs

    def _workload(self) -> str:
        """pgbench for PGBENCH_SECONDS; the target is the server's clock in the middle of it."""
        run = subprocess.Popen(
            [
                f"{BIN}/pgbench",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.cluster.port),
                "-U",
                "postgres",
                "-c",
                "2",
                "-T",
                str(PGBENCH_SECONDS),
                "postgres",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(PGBENCH_SECONDS / 2)
        target_time = self.psql("select to_char(clock_timestamp() at time zone 'utc', 'YYYY-MM-DD HH24:MI:SS.US')")
        run.wait()
        self.psql("select pg_switch_wal()")
        last = self.psql("select pg_walfile_name(pg_current_wal_lsn())")
        self.psql("select pg_switch_wal()")
        deadline = time.monotonic() + 300
        while self.psql("select last_archived_wal from pg_stat_archiver") < last and time.monotonic() < deadline:
            time.sleep(0.5)
        return target_time + "+00"

    def _wait_promoted(self, port: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = sh(
                [
                    f"{BIN}/psql",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "postgres",
                    "-Atc",
                    "select pg_is_in_recovery()",
                    "postgres",
                ],
                check=False,
            )
            if done.returncode == 0 and done.stdout.strip() == "f":
                return
            time.sleep(0.05)
        raise RuntimeError("pgBackRest's restored server was not promoted in time")

    def _newest_backup(self) -> str:
        return self._newest_entry()["id"]

    def _newest_entry(self) -> dict:
        import json

        listed = json.loads(sh(self.hadr("--json", "list", "pg")).stdout)
        entries = listed.get("backups", listed) if isinstance(listed, dict) else listed
        return [e for e in entries if e.get("state") == "complete"][-1]

    def stored_sizes(self) -> tuple[float, float]:
        """MB stored for the newest full backup by each (without WAL)."""
        import json

        info = json.loads(sh(self.pgbackrest("--output=json", "info"), as_postgres=True).stdout)
        theirs = info[0]["backup"][-1]["info"]["repository"]["size"]
        return self._newest_entry()["stored_size"] / 1e6, theirs / 1e6

    def _stop(self, data_dir: Path) -> None:
        sh([f"{BIN}/pg_ctl", "-D", str(data_dir), "-m", "immediate", "stop"], as_postgres=True, check=False)

    def _empty(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
        prepare_dir_for_postgres(path)
        os.chmod(path, 0o700)


def run() -> list[Figure]:
    if not shutil.which("pgbackrest"):
        raise RuntimeError("bench_pg needs pgbackrest (bash scripts/setup.sh --bench)")
    version = sh(["pgbackrest", "version"]).stdout.split()[-1]
    bench = Bench(Path(os.environ.get("HADR_BENCH_DIR", "/tmp")) / "hadr-bench-pg")
    try:
        bench.set_up()
        backup_ours, backup_theirs = bench.backups()
        size_ours, size_theirs = bench.stored_sizes()
        restore_ours, restore_theirs = bench.restores()
        pitr_ours, pitr_theirs = bench.pitr()
    finally:
        bench.tear_down()
    competitor = COMPETITOR.format(version=version)
    median = statistics.median
    return [
        Figure(
            f"pg full backup, pgbench scale {SCALE}",
            median(backup_ours),
            median(backup_theirs),
            "s",
            False,
            competitor,
            "ratio >= 1.0",
        ),
        Figure(f"pg full backup stored, pgbench scale {SCALE}", size_ours, size_theirs, "MB", False, competitor, ""),
        Figure(
            f"pg restore, pgbench scale {SCALE}",
            median(restore_ours),
            median(restore_theirs),
            "s",
            False,
            competitor,
            "ratio >= 1.0",
        ),
        Figure(
            f"pg PITR end to end ({PGBENCH_SECONDS} s pgbench, replay to its middle)",
            median(pitr_ours),
            median(pitr_theirs),
            "s",
            False,
            competitor,
            "",
        ),
    ]


if __name__ == "__main__":
    for figure in run():
        print(figure)
