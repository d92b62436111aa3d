"""The command line's contract, through click's CliRunner (in-process, no servers): where the global options
go, exit codes and messages of bad usage, and the help of every command group.

``cli`` is the whole program (``hadr`` is ``cli.main``): errors become one ``hadr: error:`` line on stderr
and an exit code, exactly as in a subprocess.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from hadr_backup.cli.main import COMMANDS, HIDDEN_COMMANDS, cli
from tests.helpers import leaf_commands, local_policy_data, write_policy
from tests.schema_check import assert_schema


def hadr(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def policy(tmp_path: Path) -> str:
    """A local repository, created, with one PostgreSQL source that no server answers (port 1)."""
    source = {"name": "main", "dsn": "host=127.0.0.1 port=1 user=postgres connect_timeout=2"}
    path = write_policy(tmp_path / "policy.yaml", local_policy_data(tmp_path / "repo", sources={"postgres": [source]}))
    created = hadr("--policy", str(path), "init")
    assert created.exit_code == 0, created.output
    return str(path)


# -- --json before or after the subcommand, at any depth ---------------------------------------------------

PLACEMENTS = [
    (("--json", "list"), "list"),
    (("list", "--json"), "list"),
    (("list", "--json", "pg"), "list"),
    (("list", "pg", "--json"), "list"),
    (("--json", "info"), "info"),
    (("info", "--json"), "info"),
    (("--json", "verify", "repo"), "verify-repo"),
    (("verify", "--json", "repo"), "verify-repo"),
    (("verify", "repo", "--json"), "verify-repo"),
    (("verify", "repo", "--deep", "--json"), "verify-repo"),
    (("repair", "catalog", "--json"), "repair-catalog"),
    (("init", "--json"), "init"),
    (("-q", "init", "--json", "-v"), "init"),
]


@pytest.mark.parametrize(("args", "schema"), PLACEMENTS, ids=[" ".join(a) for a, _ in PLACEMENTS])
def test_json_before_or_after_the_subcommand(policy: str, args: tuple[str, ...], schema: str) -> None:
    done = hadr("--policy", policy, *args)
    assert done.exit_code == 0, done.output
    assert_schema(schema, done.stdout)


def test_without_json_the_output_is_for_people(policy: str) -> None:
    done = hadr("--policy", policy, "list")
    assert done.exit_code == 0 and "no backups yet" in done.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(done.stdout)


@pytest.mark.parametrize("where", ["before", "after"])
def test_sandbox_commands_take_the_same_json_option(tmp_path: Path, where: str) -> None:
    folder = str(tmp_path / "no-sandbox")  # nothing there: status says so, down has nothing to stop
    for command, schema in (("status", "sandbox-status"), ("down", "sandbox-down")):
        args = (
            ["--json", "sandbox", command, "--dir", folder]
            if where == "before"
            else ["sandbox", command, "--dir", folder, "--json"]
        )
        done = hadr(*args)
        assert done.exit_code == 0, done.output
        assert assert_schema(schema, done.stdout)["dir"] == folder
    assert not (tmp_path / "no-sandbox").exists()


def test_every_command_takes_json_and_verbosity_after_its_name() -> None:
    commands = leaf_commands()
    assert ("verify", "repo") in commands and ("sandbox", "up") in commands and ("demo",) in commands
    for words in commands:
        done = hadr(*words, "--help")
        assert done.exit_code == 0, (words, done.output)
        for option in ("--json", "-v, --verbose", "-q, --quiet"):
            assert option in done.stdout, (words, option)


def test_json_is_one_option_not_one_per_command() -> None:
    """The sandbox commands once had a --json of their own: now none defines it but the shared mechanism."""
    ctx = click.Context(cli)
    for words in leaf_commands():
        command = cli.get_command(ctx, words[0])
        for word in words[1:]:
            command = command.commands[word]
        assert [p.name for p in command.params if "--json" in getattr(p, "opts", ())] == ["_json"], words


def test_quiet_and_verbose_work_after_the_subcommand_too(policy: str, tmp_path: Path) -> None:
    """The restore says how it reads --target-time (stderr), -q hides it, -v adds the traceback of the error."""
    args = ("restore", "pg", "--to", str(tmp_path / "r"), "--target-time", "2025-01-02 03:04:05")
    resolved = "target time resolves to 2025-01-02 03:04:05.000000+00 (UTC)"
    plain, quiet, verbose = (hadr("--policy", policy, *args, *extra) for extra in ((), ("-q",), ("-v",)))
    assert plain.exit_code == quiet.exit_code == verbose.exit_code == 2  # no backup: the target is out of reach
    assert resolved in plain.stderr and "Traceback" not in plain.stderr
    assert resolved not in quiet.stderr and "hadr: error: no complete backup of main" in quiet.stderr
    assert "Traceback (most recent call last)" in verbose.stderr


# -- exit codes and messages of bad usage ----------------------------------------------------------------


def test_no_policy_exits_2_and_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./hadr.yaml here, and HADR_POLICY is cleared by conftest
    if Path("/etc/hadr/hadr.yaml").exists():
        pytest.fail("/etc/hadr/hadr.yaml exists on this machine: the fallback cannot be tested")
    done = hadr("--json", "list")
    assert done.exit_code == 2
    assert done.stdout == ""
    assert done.stderr.startswith("hadr: error: no policy: pass --policy FILE, set HADR_POLICY")
    assert "hint: " in done.stderr


def test_unknown_source_exits_2_and_names_the_known_ones(policy: str) -> None:
    done = hadr("--policy", policy, "backup", "pg", "--source", "nope", "--json")
    assert done.exit_code == 2
    assert done.stdout == ""
    assert "hadr: error: no sources.postgres entry named 'nope'" in done.stderr and "known: main" in done.stderr


@pytest.mark.parametrize("text", ["garbage", "2025-13-01 00:00:00", "2025-01-02 03:04:05+16:00"])
def test_bad_target_time_exits_2_before_anything_is_written(policy: str, tmp_path: Path, text: str) -> None:
    to = tmp_path / "restored"
    done = hadr("--policy", policy, "restore", "pg", "--to", str(to), "--target-time", text)
    assert done.exit_code == 2, done.output
    assert f"hadr: error: --target-time {text!r}" in done.stderr
    assert not to.exists()


def test_two_targets_exit_2(policy: str, tmp_path: Path) -> None:
    done = hadr("--policy", policy, "restore", "pg", "--to", str(tmp_path / "r"), "--latest", "--target-lsn", "0/1")
    assert done.exit_code == 2
    assert "give one recovery target, not 2" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("list", "mysql"), "'mysql' is not one of 'pg', 'redis', 's3'"),
        (("backup", "mysql"), "No such command 'mysql'"),
        (("restore", "pg"), "Missing option '--to'"),
        (("frobnicate",), "No such command 'frobnicate'"),
        (("list", "--jsn"), "No such option '--jsn'"),
    ],
)
def test_bad_usage_exits_2_with_clicks_message(policy: str, args: tuple[str, ...], message: str) -> None:
    done = hadr("--policy", policy, *args)
    assert done.exit_code == 2
    assert message in done.stderr and done.stdout == ""


def test_wal_fetch_of_a_name_that_is_no_wal_file_exits_200(policy: str, tmp_path: Path) -> None:
    """restore_command's contract: anything but a confirmed absence must stop recovery (exit > 125)."""
    done = hadr("--policy", policy, "wal-fetch", "not-a-wal-file", str(tmp_path / "dest"), "--json")
    assert done.exit_code == 200
    assert "'not-a-wal-file' is not a WAL file name" in done.stderr and done.stdout == ""


def test_an_unreachable_cluster_is_null_in_info_not_a_failure(policy: str) -> None:
    info = assert_schema("info", hadr("--policy", policy, "info", "--json").stdout)
    archive = info["sources"][0]["archive"]
    assert archive["cluster"] is None and archive["cluster_error"]
    assert archive["lag_segments"] is None and archive["newest_time"] is None


def test_list_shows_what_a_failed_backup_knew_in_the_same_formats(policy: str) -> None:
    from hadr_backup.policy.load import load_policy
    from hadr_backup.repo.repository import open_repo

    with open_repo(load_policy(policy), write=True) as repo:
        entry = repo.begin_backup("pg", "main", {"system_identifier": 7714291793327515997, "start_time": 1796123526.5})
        repo.fail_backup(entry, "pg_basebackup failed")
    listed = assert_schema("list", hadr("--policy", policy, "list", "--json").stdout)
    (row,) = listed["backups"]
    assert row["state"] == "failed" and row["error"] == "pg_basebackup failed"
    assert row["meta"] == {"system_identifier": "7714291793327515997", "start_time": "2026-12-01T11:12:06.500000Z"}


# -- help --------------------------------------------------------------------------------------------------


def test_top_level_help_lists_every_command_and_no_hidden_one() -> None:
    done = hadr("--help")
    assert done.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in done.stdout, name
    for name in HIDDEN_COMMANDS:
        assert name not in done.stdout
    assert "--json" in done.stdout and "--policy FILE" in done.stdout


@pytest.mark.parametrize(
    ("group", "subcommands"),
    [
        ("verify", ["repo"]),
        ("repair", ["catalog"]),
        ("key", ["create", "rotate"]),
        ("backup", ["pg"]),
        ("restore", ["pg"]),
        ("sandbox", ["up", "down", "status", "load"]),
    ],
)
def test_group_help_lists_its_subcommands(group: str, subcommands: list[str]) -> None:
    done = hadr(group, "--help")
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith(f"Usage: hadr {group} [OPTIONS] COMMAND")
    for name in subcommands:
        assert f"  {name} " in done.stdout, name


def test_version() -> None:
    from hadr_backup import __version__

    done = hadr("--version")
    assert done.exit_code == 0 and done.stdout.strip() == f"hadr, version {__version__}"
