"""`hadr archive redis` on real redis-server processes: the archived pieces of each AOF file, concatenated,
equal the file byte for byte; a rewrite between runs loses nothing; kill -9 mid-copy followed by a rerun
neither loses nor duplicates a byte; wrong settings exit 2 with the CONFIG SET lines; no aof_dir on this
host means snapshots only (and `hadr info` says so)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from hadr_backup.policy.load import load_policy
from hadr_backup.repo import layout
from hadr_backup.repo.repository import open_repo
from hadr_backup.sandbox.servers import RedisServer
from tests.helpers import hadr_cli, write_policy
from tests.schema_check import assert_schema

SOURCE = "queue"
# appendfsync always: Redis writes the AOF before it replies (everysec may postpone a write() while a
# background fsync runs), so the files the tests read hold every write they made
ARCHIVABLE = {"aof-disable-auto-gc": True, "appendfsync": "always"}


def archivable(redis_factory) -> RedisServer:
    return redis_factory(appendonly=True, aof_timestamp=True, extra=ARCHIVABLE)


def policy(tmp_path: Path, server: RedisServer, aof_dir: str | None = "") -> Path:
    entry = {"name": SOURCE, "url": server.url}
    if aof_dir is not None:
        entry["aof_dir"] = aof_dir or str(server.dir)
    data = {"repository": {"path": str(tmp_path / "repo")}, "sources": {"redis": [entry]}}
    path = write_policy(tmp_path / "policy.yaml", data)
    hadr_cli(path, "init", check=True)
    return path


def archive(policy_file: Path, expect: int = 0) -> dict:
    done = hadr_cli(policy_file, "--json", "archive", "redis")
    assert done.returncode == expect, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return assert_schema("archive-redis", done.stdout)


def write(server: RedisServer, prefix: str, count: int, size: int = 20) -> None:
    pipe = server.client().pipeline(transaction=False)
    for i in range(count):
        pipe.set(f"{prefix}:{i}", f"{prefix}-{i}-".encode() * max(1, size // 10))
    pipe.execute()


def rewrite(server: RedisServer, timeout: float = 60) -> None:
    """BGREWRITEAOF, and wait until it is done: a new base, the old files history."""
    client = server.client()
    done = client.info("persistence")["aof_rewrites"]
    client.bgrewriteaof()
    deadline = time.monotonic() + timeout
    while client.info("persistence")["aof_rewrite_in_progress"] or client.info("persistence")["aof_rewrites"] <= done:
        assert time.monotonic() < deadline, "the rewrite did not finish"
        time.sleep(0.05)


def aof_dir(server: RedisServer) -> Path:
    return server.dir / "appendonlydir"


def aof_files(server: RedisServer) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in aof_dir(server).iterdir() if not p.name.endswith(".manifest")}


def archived(policy_file: Path) -> tuple[dict, dict[str, bytes]]:
    """The archive state, and per file its pieces concatenated; asserts that the stored pieces of each
    file are exactly the state's, contiguous from 0, none overlapping."""
    with open_repo(load_policy(str(policy_file))) as repo:
        state, _ = repo.read_json_versioned(layout.aof_state(SOURCE))
        assert state is not None
        contents = {}
        for name, record in state["files"].items():
            stored = [layout.split_aof_piece(i.key) for i in repo.store.list(layout.aof_file_prefix(SOURCE, name))]
            recorded = [(start, end) for start, end, _sha in record["pieces"]]
            assert stored == recorded, f"{name}: stored pieces {stored} are not the recorded {recorded}"
            assert [s for s, _ in recorded] == [0] + [e for _, e in recorded[:-1]], f"{name}: not contiguous"
            data = b"".join(b"".join(repo.read_object(layout.aof_piece(SOURCE, name, s, e))) for s, e in recorded)
            assert len(data) == record["archived"]
            contents[name] = data
    return state, contents


def assert_prefixes(contents: dict[str, bytes], files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert name in contents, f"{name} is not archived"
        assert contents[name] == data[: len(contents[name])], f"{name}: archived bytes differ from the file"


def test_two_runs_archive_the_files_and_then_only_the_new_tail(redis_factory, tmp_path: Path) -> None:
    server = archivable(redis_factory)
    policy_file = policy(tmp_path, server)
    write(server, "first", 500)
    one = archive(policy_file)
    files = aof_files(server)
    state, contents = archived(policy_file)
    assert set(contents) == set(files)
    assert contents == files  # a quiet server: every file archived to its end
    incr = next(name for name in files if name.endswith(".incr.aof"))
    assert b"#TS:" in contents[incr] and b"first:499" in contents[incr]
    assert {f["name"]: f["bytes"] for f in one["files"]} == {name: len(data) for name, data in files.items()}

    time.sleep(1.1)  # a new second: a new #TS annotation
    write(server, "second", 300)
    two = archive(policy_file)
    new_files = aof_files(server)
    _, contents = archived(policy_file)
    assert contents == new_files
    by_name = {f["name"]: f for f in two["files"]}
    assert by_name[incr]["bytes"] == len(new_files[incr]) - len(files[incr]) > 0
    assert by_name[incr]["pieces"] == 1
    assert two["bytes_archived"] == by_name[incr]["bytes"]  # the base file is not copied again
    assert contents[incr][len(files[incr]) :].count(b"#TS:") >= 1


def test_rewrite_between_runs_loses_nothing(redis_factory, tmp_path: Path) -> None:
    server = archivable(redis_factory)
    policy_file = policy(tmp_path, server)
    write(server, "before", 200)
    archive(policy_file)
    write(server, "between", 200)
    rewrite(server)
    write(server, "after", 200)
    before_run = aof_files(server)  # old base + old incr (now history), new base + new incr
    assert len(before_run) == 4
    manifest = (aof_dir(server) / "appendonly.aof.manifest").read_text()
    history = [line.split()[1] for line in manifest.splitlines() if line.endswith("type h")]
    assert len(history) == 2

    result = archive(policy_file)
    _, contents = archived(policy_file)
    assert contents == before_run  # history whole to its end, the new base and incr too
    assert sorted(result["removed"]) == sorted(history)
    assert not any((aof_dir(server) / name).exists() for name in history)
    incrs = b"".join(data for name, data in sorted(contents.items()) if name.endswith(".incr.aof"))
    for key in (b"before:199", b"between:199", b"after:199"):
        assert key in incrs
    again = archive(policy_file)  # removed history files are not missed: nothing to do, no warning
    assert again["bytes_archived"] == 0 and again["warnings"] == []


def test_kill_during_copy_then_rerun_loses_and_duplicates_nothing(redis_factory, tmp_path: Path) -> None:
    server = archivable(redis_factory)
    policy_file = policy(tmp_path, server)
    repo_aof = tmp_path / "repo" / "aof"
    rng = random.Random(7)
    killed = torn = 0
    for round_ in range(4):
        write(server, f"big{round_}", 150, size=40_000)  # ~6 MB more of incr per round
        child = subprocess.Popen(
            [sys.executable, "-m", "hadr_backup", "--policy", str(policy_file), "archive", "redis"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if round_ % 2 == 0:  # the moment a piece is being written
            deadline = time.monotonic() + 20
            while not any(p.name.endswith(".tmp") for p in repo_aof.rglob(".*")) and child.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.005)
        else:
            time.sleep(rng.uniform(0.3, 1.2))
        child.send_signal(signal.SIGKILL)
        killed += child.wait() == -signal.SIGKILL
        torn += any(p.name.endswith(".tmp") for p in repo_aof.rglob(".*"))
    assert killed >= 2, "the runs ended before they could be killed"
    assert torn >= 1, "no kill landed while a piece was being written"
    archive(policy_file)
    _, contents = archived(policy_file)
    assert contents == aof_files(server)
    assert not [p for p in repo_aof.rglob(".*") if p.name.endswith(".tmp")]  # the killed runs' leftovers are gone


def test_piece_stored_but_not_recorded_is_adopted(redis_factory, tmp_path: Path) -> None:
    """The window a kill -9 rarely hits: the piece is stored, the state still says the old offset."""
    server = archivable(redis_factory)
    policy_file = policy(tmp_path, server)
    write(server, "one", 100)
    archive(policy_file)
    state_file = tmp_path / "repo" / layout.aof_state(SOURCE)
    old_state = state_file.read_bytes()
    write(server, "two", 100)
    archive(policy_file)
    state_file.unlink()
    state_file.write_bytes(old_state)  # as if the run had died after storing the piece
    write(server, "three", 100)
    result = archive(policy_file)
    incr = next(f for f in result["files"] if f["type"] == "i")
    assert incr["pieces"] == 2  # the adopted piece and the new tail
    _, contents = archived(policy_file)
    assert contents == aof_files(server)


def test_wrong_settings_exit_2_with_the_config_set_lines(redis_factory, tmp_path: Path) -> None:
    server = redis_factory(appendonly=True, aof_timestamp=False)
    policy_file = policy(tmp_path, server)
    done = hadr_cli(policy_file, "archive", "redis")
    assert done.returncode == 2, done.stderr
    cli = f"redis-cli -h 127.0.0.1 -p {server.port}"
    for line in ("CONFIG SET aof-timestamp-enabled yes", "CONFIG SET aof-disable-auto-gc yes", "CONFIG REWRITE"):
        assert f"{cli} {line}" in done.stderr
    assert "CONFIG SET appendonly" not in done.stderr
    assert not (tmp_path / "repo" / "aof").exists()
    for line in done.stderr.splitlines():  # the printed lines are exactly what fixes it
        if line.strip().startswith(cli) and "REWRITE" not in line:
            server.client().execute_command(*line.split()[5:])
    assert archive(policy_file)["mode"] == "archiving"


def test_without_aof_dir_on_this_host_snapshots_only(redis_factory, tmp_path: Path) -> None:
    server = redis_factory()
    policy_file = policy(tmp_path, server, aof_dir=None)
    result = archive(policy_file)
    assert result["mode"] == "snapshots-only" and "snapshots only" in result["note"] and result["files"] == []
    human = hadr_cli(policy_file, "archive", "redis", check=True).stdout
    assert "snapshots only: the policy names no aof_dir" in human
    elsewhere = policy(tmp_path, server, aof_dir=str(tmp_path / "not-here"))
    assert "not on this host" in archive(elsewhere)["note"]
    hadr_cli(policy_file, "backup", "redis", check=True)
    info = hadr_cli(policy_file, "info", check=True).stdout
    assert "restorable: snapshot instants only" in info
    assert not (tmp_path / "repo" / "aof").exists()


def test_follow_archives_until_sigterm(redis_factory, tmp_path: Path) -> None:
    server = archivable(redis_factory)
    policy_file = policy(tmp_path, server)
    child = subprocess.Popen(
        [sys.executable, "-m", "hadr_backup", "--policy", str(policy_file), "--json", "archive", "redis"]
        + ["--follow", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    write(server, "followed", 100)
    time.sleep(1.5)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    result = assert_schema("archive-redis", out)
    assert result["passes"] >= 3
    _, contents = archived(policy_file)
    assert contents == aof_files(server)
    info = assert_schema("info", hadr_cli(policy_file, "--json", "info", check=True).stdout)
    aof = next(s["archive"] for s in info["sources"] if s["name"] == SOURCE)
    assert aof["kind"] == "redis-aof" and aof["archived_bytes"] == sum(map(len, contents.values()))
