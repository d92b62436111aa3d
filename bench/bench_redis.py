"""Redis snapshot: ``hadr backup redis`` against ``redis-cli --rdb - | zstd -T2 -3 > file``.

One redis-server holds ``HADR_BENCH_REDIS_KEYS`` (default 1,000,000) keys of 100 bytes (DEBUG POPULATE),
with ``repl-diskless-sync-delay 0`` for both sides (the default 5 s would add 5 s to each). hadr compresses
with zstd level 3 on 2 threads into a local, unencrypted repository. Sides are interleaved and the median of
``RUNS`` counts: wall seconds, and CPU seconds (user + sys of the child processes, the Redis server's fork
not included on either side). Then ``hadr restore redis --latest --to DIR`` of the last snapshot,
which includes loading it into a scratch redis-server and comparing the key counts, and ``--into`` an
empty live redis-server: once by the replica path, once by the DUMP/RESTORE copy (a target whose
REPLICAOF is renamed away); wall and CPU seconds of hadr, the CPU including the scratch redis-server it
starts (which loads the RDB and serves it), not the target.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from runner import ROOT, Figure

sys.path.insert(0, str(ROOT))

from hadr_backup.procs import free_port  # noqa: E402
from hadr_backup.sandbox.servers import RedisServer  # noqa: E402

KEYS = int(os.environ.get("HADR_BENCH_REDIS_KEYS", 1_000_000))
RUNS = int(os.environ.get("HADR_BENCH_REDIS_RUNS", 3))
COMPETITOR = "redis-cli --rdb - | zstd -q -T2 -3"
HADR = [sys.executable, "-m", "hadr_backup"]


def measured(argv: list[str] | str, stdout=subprocess.DEVNULL, **kwargs) -> tuple[float, float]:
    """(wall seconds, user+sys CPU seconds of the children) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(argv, check=True, stdout=stdout, shell=isinstance(argv, str), **kwargs)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run() -> list[Figure]:
    work = Path(tempfile.mkdtemp(prefix="hadr-bench-redis-"))
    server = RedisServer(work / "redis", free_port(), extra={"enable-debug-command": "yes"})
    (work / "redis").mkdir()
    server.start()
    try:
        client = server.client()
        client.execute_command("DEBUG", "POPULATE", KEYS, "key", 100)
        client.config_set("repl-diskless-sync-delay", 0)
        policy = work / "policy.yaml"
        data = {
            "repository": {"path": str(work / "repo")},
            "compression": {"level": 3, "threads": 2},
            "sources": {"redis": [{"name": "bench", "url": server.url}]},
        }
        policy.write_text(yaml.safe_dump(data))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run([*HADR, "--policy", str(policy), "init"], check=True, stdout=subprocess.DEVNULL, env=env)
        ours, theirs = [], []
        for _ in range(RUNS):
            ours.append(measured([*HADR, "--policy", str(policy), "backup", "redis"], env=env))
            theirs.append(measured(f"redis-cli -p {server.port} --rdb - 2>/dev/null | zstd -q -T2 -3 > {work}/s.zst"))
        restore = measured(
            [*HADR, "--policy", str(policy), "restore", "redis", "--latest", "--to", str(work / "out")], env=env
        )
        into = {path: restore_into(work, policy, env, path) for path in ("replica", "copy")}
        what = f"{KEYS // 1000}k keys of 100 B"
        median = lambda runs, i: statistics.median(r[i] for r in runs)  # noqa: E731
        return [
            Figure(
                f"redis snapshot, {what}", median(ours, 0), median(theirs, 0), "s", False, COMPETITOR, "ratio >= 0.91"
            ),
            Figure(f"redis snapshot CPU, {what}", median(ours, 1), median(theirs, 1), "s", False, COMPETITOR, ""),
            Figure(f"redis restore --to DIR (loaded, checked), {what}", restore[0], None, "s", False, "-", ""),
            *(
                Figure(
                    f"redis restore --into a live instance, {path} path{cpu}, {what}",
                    runs[i],
                    None,
                    "s",
                    False,
                    "-",
                    "",
                )
                for path, runs in into.items()
                for i, cpu in ((0, ""), (1, " CPU"))
            ),
        ]
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def restore_into(work: Path, policy: Path, env: dict, path: str) -> tuple[float, float]:
    """``hadr restore redis --latest --into`` an empty redis-server; ``path`` "copy": its REPLICAOF is
    renamed away, so hadr falls back to DUMP/RESTORE. Checks the path taken and the key count."""
    folder = work / f"into-{path}"
    folder.mkdir()
    extra = {}
    if path == "copy":
        (folder / "renamed.conf").write_text('rename-command REPLICAOF ""\nrename-command SLAVEOF ""\n')
        extra = {"include": str(folder / "renamed.conf")}
    target = RedisServer(folder, free_port(), extra=extra)
    target.start()
    try:
        argv = [*HADR, "--policy", str(policy), "--json", "restore", "redis", "--latest", "--into", target.url]
        with tempfile.TemporaryFile("w+") as out:
            figures = measured(argv, stdout=out, env=env)
            out.seek(0)
            result = json.load(out)
        assert result["into"]["path"] == path, result["into"]
        assert target.client().dbsize() == KEYS, target.client().dbsize()
        return figures
    finally:
        target.stop()
