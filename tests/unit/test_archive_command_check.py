"""Reading an archive_command back: what hadr writes (sync and async) passes, every other command fails
with what is wrong; archive_timeout against the RPO."""

from __future__ import annotations

import sys

import pytest
import yaml

from hadr_backup.policy.load import load_policy
from hadr_backup.postgres.archive import archive_command_for, hadr_command
from hadr_backup.postgres.archivecmd import parse_push_command
from hadr_backup.postgres.check import Setting, command_finding, timeout_finding


def write_policy(path, *sources, async_archive=False):
    entries = [
        {"name": name, "dsn": "host=h port=1", "async_archive": async_archive, "spool_dir": str(path.parent)}
        for name in sources
    ]
    path.write_text(
        yaml.safe_dump({"repository": {"path": str(path.parent / "repo")}, "sources": {"postgres": entries}})
    )
    return load_policy(str(path))


def finding(policy, command, source="main", library=""):
    settings = {"archive_command": Setting(command, False), "archive_library": Setting(library, False)}
    return command_finding(policy, policy.sources.postgres_named(source), settings)


@pytest.mark.parametrize("async_archive", [False, True])
def test_what_hadr_writes_passes(tmp_path, async_archive):
    policy = write_policy(tmp_path / "p.yaml", "main", async_archive=async_archive)
    command = archive_command_for(policy.path, "main")
    parsed = parse_push_command(command)
    assert (parsed.policy, parsed.source, parsed.passes_path) == (str(tmp_path / "p.yaml"), "main", True)
    assert parsed.program == f"{sys.executable} -m hadr_backup"
    assert parsed.behind_acknowledger is async_archive
    found = finding(policy, command)
    assert (found.level, found.message) == (
        "ok",
        "hadr wal-push with this policy and source, exactly as hadr writes it" + (" (async)" if async_archive else ""),
    )


def test_the_hand_written_form_of_the_readme_passes(tmp_path):
    policy = write_policy(tmp_path / "p.yaml", "main")
    found = finding(policy, f"hadr --policy {tmp_path}/p.yaml wal-push --source main %p")
    assert found.level == "ok" and found.message.startswith("hadr wal-push with this policy and source: hadr ")
    assert (
        finding(policy, f"HADR_POLICY={tmp_path}/p.yaml /usr/local/bin/hadr wal-push --source=main '%p'").level == "ok"
    )


@pytest.mark.parametrize(
    "command, level, message",
    [
        ("true", "error", "'true' is not hadr wal-push: segments do not reach this repository"),
        ("/bin/false", "error", "'/bin/false' is not hadr wal-push"),
        ("cp %p /archive/%f", "error", "is not hadr wal-push"),
        ("hadr --policy {dir}/p.yaml backup pg", "error", "is not hadr wal-push"),
        ("", "error", "empty: PostgreSQL archives nothing"),
        ("(disabled)", "error", "(disabled): archive_mode is off"),
        (
            "hadr --policy {dir}/other.yaml wal-push --source main %p",
            "error",
            "runs hadr wal-push with another policy file, {dir}/other.yaml, not {dir}/p.yaml",
        ),
        ("hadr --policy p.yaml wal-push --source main %p", "error", "the policy path 'p.yaml' is relative"),
        ("hadr wal-push --source main %p", "error", "names no --policy"),
        ("hadr --policy {dir}/p.yaml wal-push --source other %p", "error", "archives as source 'other', not 'main'"),
        ("hadr --policy {dir}/p.yaml wal-push --source main /tmp/x", "error", "does not pass the segment as %p"),
        ("hadr --policy {dir}/p.yaml wal-push %p", "warning", "names no --source"),
    ],
)
def test_every_other_command_says_what_is_wrong(tmp_path, command, level, message):
    policy = write_policy(tmp_path / "p.yaml", "main")
    found = finding(policy, command.format(dir=tmp_path))
    assert found.level == level and message.format(dir=tmp_path) in found.message, found
    assert (
        found.hint == f"ALTER SYSTEM SET archive_command = '{archive_command_for(policy.path, 'main')}'; "
        f"SELECT pg_reload_conf();"
    )


def test_a_missing_source_is_an_error_when_the_policy_has_several(tmp_path):
    policy = write_policy(tmp_path / "p.yaml", "main", "second")
    found = finding(policy, f"hadr --policy {tmp_path}/p.yaml wal-push %p")
    assert found.level == "error" and "several PostgreSQL sources" in found.message
    other = finding(policy, f"{hadr_command(policy.path, 'main', 'wal-push')} %p", source="second")
    assert other.level == "error" and "archives as source 'main', not 'second'" in other.message


def test_an_archive_library_wins_over_the_command(tmp_path):
    policy = write_policy(tmp_path / "p.yaml", "main")
    found = finding(policy, archive_command_for(policy.path, "main"), library="basic_archive")
    assert found.level == "error" and "archive_library = 'basic_archive' is set" in found.message
    assert found.hint == "ALTER SYSTEM SET archive_library = ''; SELECT pg_reload_conf();"


@pytest.mark.parametrize(
    "seconds, rpo, level, message",
    [
        (60, 300, "ok", "60 s, within the RPO of 300 s"),
        (300, 300, "ok", "300 s, within the RPO of 300 s"),
        (0, 300, "error", "0 (off)"),
        (301, 300, "error", "301 s, above the RPO of 300 s"),
        (120, 30, "error", "120 s, above the RPO of 30 s"),
    ],
)
def test_archive_timeout_against_the_rpo(seconds, rpo, level, message):
    found = timeout_finding("main", seconds, rpo)
    assert found.level == level and message in found.message
    if level == "error":
        assert found.hint == f"ALTER SYSTEM SET archive_timeout = '{min(60, rpo)}s'; SELECT pg_reload_conf();"
