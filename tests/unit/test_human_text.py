"""Human text that says what it means: restorable windows, archive lag, `info` without backups, verify
reports, plurals, recovery target errors, S3 credentials, and what to do with a restored server."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from hadr_backup import procs
from hadr_backup.errors import BadTarget, RepositoryError
from hadr_backup.inventory import SourceInfo
from hadr_backup.postgres.archiveview import Window
from hadr_backup.postgres.restorehints import next_steps
from hadr_backup.postgres.targets import make_target
from hadr_backup.postgres.walpending import oldest_unarchived_commit
from hadr_backup.postgres.walstatus import ArchiveStatus
from hadr_backup.repo.s3 import S3Storage
from hadr_backup.timefmt import TARGET_TIME_FORMATS, parse_target_time
from hadr_backup.ui import Human
from hadr_backup.verify.findings import ERROR, OK, Report


def rendered(value) -> str:
    buffer = io.StringIO()
    value.render(Human(buffer))
    return buffer.getvalue()


def test_a_window_without_a_commit_at_its_end_says_what_that_means() -> None:
    window = Window(1, 1767225600.0, None, 0x2000100, 0x5000000, ("B1",))
    text = window.describe()
    assert "no commit found" not in text and "(no" not in text
    assert text == (
        "timeline 1: from 2026-01-01 00:00:00.000000+00 (LSN 0/2000100 .. 0/5000000); the newest time "
        "it reaches is not known: no transaction ended in the last archived WAL (up to 4 segments "
        "read), and a --target-time needs a commit after it; --latest and --target-lsn reach 0/5000000"
    )
    ended = Window(1, 1767225600.0, 1767225700.5, 0x2000100, 0x5000000, ("B1",)).describe()
    assert ended == (
        "timeline 1: 2026-01-01 00:00:00.000000+00 .. 2026-01-01 00:01:40.500000+00 (the last "
        "archived commit; LSN 0/2000100 .. 0/5000000)"
    )


def status(**lag) -> ArchiveStatus:
    return ArchiveStatus(
        "main", None, 3, [1], "000000010000000000000003", 1767225600.0, 0, 0, [], cluster={"failed_count": 0}, **lag
    )


def test_archive_lag_in_words() -> None:
    assert (
        status(lag_segments=0, lag_bytes=0, lag_seconds=0.0).lag_text()
        == "lag: none, every WAL byte the cluster wrote is archived"
    )
    waiting = status(
        lag_segments=2,
        lag_bytes=40 << 20,
        lag_seconds=45.4,
        lag_basis="the age of the oldest commit not archived, at T (LSN 0/5000100), read from /pg/pg_wal",
    ).lag_text()
    assert waiting == (
        "lag: 2 full segments (40.0 MiB in all) not archived; 45 s: the age of the oldest commit not "
        "archived, at T (LSN 0/5000100), read from /pg/pg_wal"
    )
    unknown = status(
        lag_segments=0, lag_bytes=2048, lag_seconds=None, lag_basis="unknown: this host has no /pg/pg_wal (...)"
    ).lag_text()
    assert unknown == (
        "lag: 2.0 KiB of WAL not archived (the current segment: archived when it fills or "
        "archive_timeout passes); age of the oldest commit among it unknown: this host has no "
        "/pg/pg_wal (...)"
    )
    assert "0 s" not in unknown
    summary = status(lag_segments=0, lag_bytes=0, lag_seconds=0.0).summary()
    assert summary.splitlines()[0] == (
        "archive: 3 segments (timeline 1), newest 000000010000000000000003 stored 2026-01-01 00:00:00 UTC"
    )
    empty = ArchiveStatus("main", None, 0, [], None, None, 0, 0, [])
    assert empty.summary() == "archive: no WAL archived yet"


def test_info_of_a_source_without_backups_says_so() -> None:
    text = rendered(SourceInfo("pg", "main", 0, 0, None))
    assert text == "pg main: no complete backup yet\n" and "newest - UTC" not in text
    assert rendered(SourceInfo("pg", "main", 0, 2, None)) == "pg main: no complete backup yet (2 failed)\n"
    one = rendered(SourceInfo("pg", "main", 1, 0, 1767225600.0))
    assert one.splitlines() == [
        "pg main: 1 complete backup, newest finished 2026-01-01 00:00:00 UTC",
        "  restorable: nowhere, no backup has all the WAL it needs archived (`hadr verify repo` says what is missing)",
    ]


def test_a_verify_report_says_what_it_checked_in_words() -> None:
    report = Report("verify repo")
    report.count("backups")
    report.count("objects", 2)
    report.count("wal_segments", 1)
    report.add(OK, "wal-chain", "main", "WAL continuous from the backup to the newest archived segment")
    assert rendered(report).splitlines() == [
        "OK      wal-chain: main: WAL continuous from the backup to the newest archived segment",
        "verify repo: PASSED — checked 1 backup, 2 objects, 1 WAL segment",
    ]
    report.add(ERROR, "wal-gap", "000000010000000000000004", "missing")
    assert rendered(report).splitlines()[-1].startswith("verify repo: FAILED (1 problem) — checked")


@pytest.mark.parametrize(
    "text", ["yesterday", "2025-02-30 00:00:00", "2025-01-02 03:04:05+16", "2025-01-02 03:04:05.1234567"]
)
def test_every_target_time_error_names_the_accepted_formats(text: str) -> None:
    with pytest.raises(BadTarget) as caught:
        parse_target_time(text)
    assert caught.value.hint == TARGET_TIME_FORMATS
    for form in ("YYYY-MM-DD HH:MM[:SS[.ffffff]]", "ISO 8601", "Z, UTC, ±HH, ±HH:MM or ±HHMM", "none means UTC"):
        assert form in str(caught.value)


def test_the_missing_target_hint_lists_every_target_and_backup_id() -> None:
    with pytest.raises(BadTarget) as caught:
        make_target()
    for option in (
        "--target-time T",
        "--target-lsn LSN",
        "--target-xid XID",
        "--target-name NAME",
        "--latest",
        "--backup ID",
    ):
        assert option in caught.value.hint


def test_s3_without_credentials_names_the_policy_keys_and_variables(monkeypatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    store = S3Storage("bucket", "repo", endpoint="http://127.0.0.1:9")
    with pytest.raises(RepositoryError) as caught:
        store.stat("hadr.repo.json")
    assert caught.value.message == "no S3 credentials to reach s3://bucket/repo (http://127.0.0.1:9)"
    for name in ("repository.access_key", "repository.secret_key", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert name in caught.value.hint
    assert "Unable to locate credentials" not in str(caught.value)


@pytest.mark.parametrize("root", [True, False])
def test_next_steps_for_a_restored_server(monkeypatch, root: bool) -> None:
    monkeypatch.setattr(procs, "running_as_root", lambda: root)
    as_user = "runuser -u postgres -- " if root else ""
    steps = dict(next_steps("/r", "/pg/bin", "paused", "pause", "host=127.0.0.1 port=5 user=postgres", 5))
    assert steps["connect"] == "psql 'host=127.0.0.1 port=5 user=postgres'"
    assert steps["resume"].startswith("psql 'host=127.0.0.1 port=5 user=postgres' -c 'select pg_wal_replay_resume()'")
    assert steps["promote"].startswith(f"{as_user}/pg/bin/pg_ctl -D /r promote")
    assert steps["stop"] == f"{as_user}/pg/bin/pg_ctl -D /r stop"
    promoted = dict(next_steps("/r", "/pg/bin", "promoted", "promote", "host=h", 5))
    assert set(promoted) == {"connect", "stop"}
    configured = dict(next_steps("/r", "/pg/bin", "configured", "shutdown", None, None))
    assert configured["start"].startswith(
        f"{as_user}/pg/bin/pg_ctl -D /r -l /r/hadr-recovery.log start  (it "
        f"replays WAL to the target, then shuts down; it listens on the port"
    )
    shut = dict(next_steps("/r", "/pg/bin", "shut down", "shutdown", None, 5))
    assert shut["start"].startswith("set recovery_target_action = 'promote' in /r/postgresql.auto.conf, then ")


def test_unarchived_wal_that_cannot_be_read_is_unknown(tmp_path: Path) -> None:
    nothing = oldest_unarchived_commit("/bin", tmp_path / "pg_wal", 1, 0x5000000, 0x5000000, 16 << 20, None, 0.0)
    assert (nothing.seconds, nothing.basis) == (0.0, "nothing waits to be archived")
    elsewhere = oldest_unarchived_commit("/bin", tmp_path / "pg_wal", 1, 0x5000000, 0x5000100, 16 << 20, None, 0.0)
    assert elsewhere.seconds is None
    assert elsewhere.basis.startswith(f"unknown: this host has no {tmp_path / 'pg_wal'}")
    (tmp_path / "pg_wal").mkdir()
    (tmp_path / "pg_wal" / "000000010000000000000005").write_bytes(b"\0" * 64)
    garbage = oldest_unarchived_commit("/bin", tmp_path / "pg_wal", 1, 0x5000000, 0x5000100, 16 << 20, None, 0.0)
    assert garbage.seconds is None and "cannot be read as WAL" in garbage.basis


def test_unarchived_wal_of_another_cluster_is_not_read(tmp_path: Path) -> None:
    from hadr_backup.postgres import wal

    header = wal._LONG_HEADER.pack(0xD110, wal.XLP_LONG_HEADER, 1, 0x5000000, 0, 7000000000000000001, 16 << 20, 8192)
    (tmp_path / "000000010000000000000005").write_bytes(header + b"\0" * 64)
    other = oldest_unarchived_commit("/bin", tmp_path, 1, 0x5000000, 0x5000100, 16 << 20, 7000000000000000002, 0.0)
    assert other.seconds is None
    assert (
        other.basis == f"unknown: {tmp_path} holds the WAL of another cluster (system identifier 7000000000000000001)"
    )
