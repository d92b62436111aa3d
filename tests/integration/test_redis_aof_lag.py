"""`hadr info` shows how far the AOF archive of a Redis source is behind its live AOF directory: the bytes not
archived and the age of the oldest write among them (its #TS annotation), 0 when nothing waits; unknown,
with the reason, when the AOF directory is not on this host."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from tests.helpers import hadr_cli
from tests.integration.test_redis_aof_archive import SOURCE, aof_dir, archivable, archive, policy, write
from tests.schema_check import assert_schema


def aof_status(policy_file: Path) -> dict:
    info = assert_schema("info", hadr_cli(policy_file, "--json", "info", check=True).stdout)
    return next(s["archive"] for s in info["sources"] if s["name"] == SOURCE)


def test_info_shows_the_archive_lag_in_bytes_and_seconds(redis_factory, tmp_path: Path) -> None:
    server = archivable(redis_factory)
    policy_file = policy(tmp_path, server)
    write(server, "a", 100)
    archive(policy_file)
    caught_up = aof_status(policy_file)
    assert (caught_up["lag_bytes"], caught_up["lag_seconds"]) == (0, 0)
    assert caught_up["last_piece_at"] is not None and str(aof_dir(server)) in caught_up["lag_basis"]

    incr = next(aof_dir(server).glob("*.incr.aof"))
    size_before = incr.stat().st_size
    written_at = time.time()
    write(server, "b", 100)
    time.sleep(2.5)
    behind = aof_status(policy_file)
    assert behind["lag_bytes"] == incr.stat().st_size - size_before > 0
    assert 1 <= behind["lag_seconds"] <= time.time() - written_at + 1
    assert behind["last_piece_at"] == caught_up["last_piece_at"]
    human = hadr_cli(policy_file, "info", check=True).stdout
    assert f"AOF archive lag: {behind['lag_bytes']} bytes, oldest unarchived write" in human

    archive(policy_file)
    assert (aof_status(policy_file)["lag_bytes"], aof_status(policy_file)["lag_seconds"]) == (0, 0)

    # the same repository from a host without the AOF directory: unknown, and why
    elsewhere = yaml.safe_load(policy_file.read_text())
    del elsewhere["sources"]["redis"][0]["aof_dir"]
    other = tmp_path / "elsewhere.yaml"
    other.write_text(yaml.safe_dump(elsewhere))
    unknown = aof_status(other)
    assert (unknown["lag_bytes"], unknown["lag_seconds"]) == (None, None)
    assert unknown["lag_basis"] == "unknown: no aof_dir in the policy"
