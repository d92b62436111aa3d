"""Recovery target parsing: times (UTC unless an offset is given), LSNs, xids, names, one target only."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hadr_backup.errors import BadTarget
from hadr_backup.postgres.targets import RecoveryTarget, make_target, recovery_settings
from hadr_backup.timefmt import format_time, parse_target_time, rfc3339


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2025-01-02 03:04:05", datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2025-01-02T03:04:05Z", datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2025-01-02 03:04:05.5", datetime(2025, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)),
        ("2025-01-02 03:04:05.123456+02", datetime(2025, 1, 2, 1, 4, 5, 123456, tzinfo=UTC)),
        ("2025-01-02 03:04:05.123456-05:30", datetime(2025, 1, 2, 8, 34, 5, 123456, tzinfo=UTC)),
        ("2025-01-02T03:04:05+0100", datetime(2025, 1, 2, 2, 4, 5, tzinfo=UTC)),
        ("2025-01-02 03:04", datetime(2025, 1, 2, 3, 4, tzinfo=UTC)),
        ("2025-01-02 03:04:05 UTC", datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2025-01-02 23:30:00-01", datetime(2025, 1, 3, 0, 30, tzinfo=UTC)),
        ("2025-01-02 03:04:05.123456000Z", datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
    ],
)
def test_times_resolve_to_utc(text: str, expected: datetime) -> None:
    assert parse_target_time(text) == expected
    assert parse_target_time(text).tzinfo == UTC


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "2025-13-01 00:00:00",
        "2025-02-30 00:00:00",
        "2025-01-02",
        "2025-01-02 25:00:00",
        "2025-01-02 03:04:05+16",
        "2025-01-02 03:04:05.1234567",
        "",
        "2025-01-02 03:04:05 CET",
    ],
)
def test_bad_times_are_refused_with_exit_2(text: str) -> None:
    with pytest.raises(BadTarget) as caught:
        parse_target_time(text)
    assert caught.value.exit_code == 2


def test_format_time_is_postgres_readable() -> None:
    assert format_time(datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == "2025-01-02 03:04:05.000006+00"


def test_exactly_one_target() -> None:
    with pytest.raises(BadTarget, match="one recovery target"):
        make_target(time="2025-01-02 03:04:05", lsn="0/1")
    with pytest.raises(BadTarget, match="no recovery target"):
        make_target()
    assert make_target(backup_id="x").kind == "immediate"
    assert make_target(lsn="0/3000028").value == 0x3000028
    assert make_target(xid="1234").value == 1234
    assert make_target(name="before-migration").value == "before-migration"
    assert make_target(latest=True).kind == "latest"
    assert make_target(time="2025-01-02 03:04:05", exclusive=True).inclusive is False


@pytest.mark.parametrize(
    "kwargs",
    [{"lsn": "3000028"}, {"lsn": "0/xyz"}, {"xid": "-4"}, {"xid": "1"}, {"xid": str(1 << 32)}, {"name": "n" * 64}],
)
def test_bad_lsn_xid_name(kwargs: dict) -> None:
    with pytest.raises(BadTarget):
        make_target(**kwargs)


def test_recovery_settings_have_one_target() -> None:
    when = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    settings = recovery_settings(RecoveryTarget("time", when), 3, "pause")
    assert settings == {
        "recovery_target_time": "2025-01-02 03:04:05.123456+00",
        "recovery_target_timeline": "3",
        "recovery_target_action": "pause",
        "recovery_target_inclusive": "on",
    }
    latest = recovery_settings(RecoveryTarget("latest", 0x3000028), 1, "promote")
    assert latest["recovery_target_lsn"] == "0/3000028"
    immediate = recovery_settings(RecoveryTarget("immediate"), 1, "shutdown")
    assert immediate["recovery_target"] == "immediate" and "recovery_target_inclusive" not in immediate
    for target in (RecoveryTarget("xid", 77, False), RecoveryTarget("name", "p")):
        assert (
            sum(
                key.startswith("recovery_target")
                and key not in ("recovery_target_timeline", "recovery_target_action", "recovery_target_inclusive")
                for key in recovery_settings(target, 1, "pause")
            )
            == 1
        )
    with pytest.raises(BadTarget):
        recovery_settings(RecoveryTarget("xid", 77), 1, "explode")


def test_json_instants_are_rfc3339_utc_with_microseconds():
    moment = datetime(2026, 12, 1, 10, 15, 0, 123456, tzinfo=UTC)
    assert rfc3339(moment) == "2026-12-01T10:15:00.123456Z"
    assert rfc3339(moment.timestamp()) == "2026-12-01T10:15:00.123456Z"
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000000Z" and rfc3339(None) is None
    assert RecoveryTarget("time", moment).to_json()["value"] == "2026-12-01T10:15:00.123456Z"
    assert parse_target_time(rfc3339(moment)) == moment  # what --json prints, --target-time reads
