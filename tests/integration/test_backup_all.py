"""hadr backup all: every source of every kind, one after another; a source that fails does not stop the others."""

from __future__ import annotations

from pathlib import Path

from hadr_backup.procs import free_port
from tests.helpers import hadr_cli, write_policy
from tests.schema_check import assert_schema


def test_every_source_is_backed_up_and_a_failing_one_does_not_stop_the_others(redis_factory, tmp_path: Path) -> None:
    first, second = redis_factory(), redis_factory()
    first.client().set("a", "1")
    second.client().mset({"b": "2", "c": "3"})
    gone = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    sources = [{"name": "one", "url": first.url}, {"name": "gone", "url": gone}, {"name": "two", "url": second.url}]
    policy_file = write_policy(
        tmp_path / "policy.yaml", {"repository": {"path": str(tmp_path / "repo")}, "sources": {"redis": sources}}
    )
    hadr_cli(policy_file, "init", check=True)
    done = hadr_cli(policy_file, "--json", "backup", "all")
    result = assert_schema("backup-all", done.stdout)
    assert done.returncode == 1, done.stderr
    assert [step["what"] for step in result["steps"]] == ["backup redis one", "backup redis two"]
    assert [step["result"]["keys"] for step in result["steps"]] == [{"db0": 1}, {"db0": 2}]
    (error,) = result["errors"]
    assert error["what"] == "backup redis gone" and "127.0.0.1" in error["message"] and error["exit_code"] == 1
    listing = assert_schema("list", hadr_cli(policy_file, "--json", "list", check=True).stdout)["backups"]
    assert sorted(b["source"] for b in listing if b["state"] == "complete") == ["one", "two"]
    human = hadr_cli(policy_file, "backup", "all")
    assert "== backup redis gone: FAILED" in human.stdout + human.stderr and human.returncode == 1


def test_a_policy_without_sources_is_exit_2(tmp_path: Path) -> None:
    policy_file = write_policy(tmp_path / "policy.yaml", {"repository": {"path": str(tmp_path / "repo")}})
    hadr_cli(policy_file, "init", check=True)
    done = hadr_cli(policy_file, "backup", "all")
    assert done.returncode == 2 and "the policy lists no sources" in done.stderr
