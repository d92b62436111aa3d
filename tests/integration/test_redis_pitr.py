"""`hadr restore redis --to DIR` from the AOF archive on real redis-server processes, against an oracle:
a key written every ~150 ms, the second of each write recorded; restored to several seconds T, the key
set equals the oracle's at second granularity (every write of a second <= T, none later). A target
before the archived base exits 2 touching nothing; a damaged piece fails the restore, naming it, and
leaves no directory behind."""

from __future__ import annotations

import math
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import redis

from hadr_backup.procs import free_port, wait_until
from hadr_backup.repo import layout
from tests.helpers import hadr_cli
from tests.integration.test_redis_aof_archive import SOURCE, archivable, archive, policy
from tests.schema_check import assert_schema

INTERVAL = 0.15


class Writer(threading.Thread):
    """SET w:<n> every INTERVAL; per key the seconds (client clock, same host) before and after the
    reply: equal, the write is of that second; different, it straddles a second boundary."""

    def __init__(self, client: redis.Redis, seconds: float):
        super().__init__(daemon=True)
        self.client, self.seconds = client, seconds
        self.written: dict[str, tuple[int, int]] = {}

    def run(self) -> None:
        stop = time.time() + self.seconds
        number = 0
        while time.time() < stop:
            before = time.time()
            self.client.set(f"w:{number}", str(before))
            self.written[f"w:{number}"] = (math.floor(before), math.floor(time.time()))
            number += 1
            time.sleep(INTERVAL)

    def must_hold(self, second: int) -> set[str]:
        return {key for key, (_, after) in self.written.items() if after <= second}

    def must_lack(self, second: int) -> set[str]:
        return {key for key, (before, _) in self.written.items() if before > second}


def run_writer_archiving(server, policy_file: Path, seconds: float, archive_every: float) -> Writer:
    writer = Writer(server.client(), seconds)
    writer.start()
    while writer.is_alive():
        writer.join(archive_every)
        archive(policy_file)
    archive(policy_file)  # once more at the end: everything written is archived
    return writer


def utc(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def restore(policy_file: Path, to: Path, *target: str, expect: int = 0):
    done = hadr_cli(policy_file, "--json", "restore", "redis", *target, "--to", str(to))
    assert done.returncode == expect, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return assert_schema("restore-redis", done.stdout) if expect == 0 else done


def keys_in(directory: Path, aof_name: str) -> set[str]:
    """The keys a plain redis-server started on the restored directory holds."""
    port = free_port()
    argv = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", "",
        "--appendonly", "yes", "--appenddirname", "appendonlydir", "--appendfilename", aof_name,
    ]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, decode_responses=True)
    try:
        assert wait_until(lambda: _pong(client), 30, 0.05), f"redis-server did not start on {directory}"
        return set(client.keys("*"))
    finally:
        process.kill()
        process.wait()


def _pong(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False


def test_restores_to_three_seconds_equal_the_oracle(redis_factory, tmp_path: Path) -> None:
    server = archivable(redis_factory)
    policy_file = policy(tmp_path, server)
    writer = run_writer_archiving(server, policy_file, seconds=8, archive_every=2.5)
    seconds = sorted({before for before, after in writer.written.values() if before == after})
    assert len(seconds) >= 7, seconds

    info = assert_schema("info", hadr_cli(policy_file, "--json", "info", check=True).stdout)
    (window,) = [w for s in info["sources"] for w in s["restorable_window"] if w["kind"] == "aof"]
    assert window["end"].startswith(utc(seconds[-1]).replace(" ", "T"))  # the last write's second

    for second in (seconds[1], seconds[len(seconds) // 2], seconds[-2]):
        to = tmp_path / f"at-{second}"
        restored = restore(policy_file, to, "--target-time", utc(second))
        assert restored["from"] == "aof" and restored["backup_id"] is None
        assert restored["reached"].startswith(utc(second).replace(" ", "T"))  # a write in that second
        keys = keys_in(to, "appendonly.aof")
        assert writer.must_hold(second) <= keys, f"T={second}: missing {writer.must_hold(second) - keys}"
        assert not keys & writer.must_lack(second), f"T={second}: later writes {keys & writer.must_lack(second)}"
        straddling = set(writer.written) - writer.must_hold(second) - writer.must_lack(second)
        assert len(straddling) <= 1  # only a write across the boundary T|T+1 may go either way
        assert restored["keys"] == {"db0": len(keys)}

    everything = restore(policy_file, tmp_path / "latest", "--latest")
    assert keys_in(tmp_path / "latest", "appendonly.aof") == set(writer.written)
    assert everything["reached"].startswith(utc(seconds[-1]).replace(" ", "T"))


def test_outside_the_window_exits_2_and_a_damaged_piece_fails_naming_it(redis_factory, tmp_path: Path) -> None:
    server = archivable(redis_factory)
    policy_file = policy(tmp_path, server)
    started = math.floor(time.time())
    writer = run_writer_archiving(server, policy_file, seconds=2.5, archive_every=1.0)
    last = max(after for _, after in writer.written.values())

    untouched = tmp_path / "untouched"
    untouched.mkdir()
    for target in (utc(started - 60), utc(last + 60)):
        done = restore(policy_file, untouched, "--target-time", target, expect=2)
        assert "AOF archive: from" in done.stderr, done.stderr
        assert list(untouched.iterdir()) == []

    # the first piece of the incr file: read only while the restore writes, after the base
    incr_dir = layout.aof_file_prefix(SOURCE, "appendonly.aof.1.incr.aof")
    pieces = sorted(p for p in (tmp_path / "repo").rglob("*") if p.is_file() and incr_dir in str(p))
    assert len(pieces) >= 2, pieces
    damaged = pieces[0]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    to = tmp_path / "damaged"
    done = restore(policy_file, to, "--latest", expect=1)
    assert damaged.name in done.stderr and "damaged" in done.stderr, done.stderr
    assert not to.exists()
