"""Recovery targets: what the user asked for, parsed and checked, as plain values.

``--target-time`` accepts ISO 8601 and PostgreSQL's own spelling,
``YYYY-MM-DD[ T]HH:MM[:SS[.ffffff]][Z|±HH[:MM]|±HHMM]``; a time without an offset means UTC (never
the local zone of whichever host runs the restore), and the resolved UTC instant is always shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from hadr_backup.errors import UsageError

TIME, LSN, XID, NAME, LATEST, IMMEDIATE = "time", "lsn", "xid", "name", "latest", "immediate"
ACTIONS = ("pause", "promote", "shutdown")

_TIME = re.compile(
    r"\s*(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<hour>\d{2}):(?P<minute>\d{2})"
    r"(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d{1,9}))?)?"
    r"\s*(?P<zone>Z|UTC|[+-]\d{2}(?::?\d{2})?)?\s*", re.IGNORECASE)
_LSN = re.compile(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}")


class BadTarget(UsageError):
    """The recovery target is not valid."""


def parse_target_time(text: str) -> datetime:
    """``"2025-01-02 03:04:05.123456+02"`` -> an aware UTC datetime; no offset means UTC."""
    match = _TIME.fullmatch(text or "")
    if not match:
        raise BadTarget(f"--target-time {text!r} is not a time",
                        hint="write YYYY-MM-DD HH:MM:SS[.ffffff][Z|+HH:MM], e.g. 2025-01-02 03:04:05Z")
    fraction = (match["fraction"] or "").ljust(6, "0")
    if len(fraction) > 6 and fraction[6:].strip("0"):
        raise BadTarget(f"--target-time {text!r} is more precise than PostgreSQL's microseconds")
    try:
        naive = datetime.strptime(f"{match['date']} {match['hour']}:{match['minute']}:{match['second'] or '00'}",
                                  "%Y-%m-%d %H:%M:%S")
    except ValueError as error:
        raise BadTarget(f"--target-time {text!r} is not a valid date and time: {error}") from None
    naive = naive.replace(microsecond=int(fraction[:6]))
    return naive.replace(tzinfo=_zone(match["zone"], text)).astimezone(UTC)


def _zone(zone: str | None, text: str) -> timezone:
    if zone is None or zone.upper() in ("Z", "UTC"):
        return UTC
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 15 or minutes > 59:
        raise BadTarget(f"--target-time {text!r} has an impossible UTC offset {zone}")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def format_time(moment: datetime | float | None) -> str:
    """UTC, microseconds, the form PostgreSQL prints and ``recovery_target_time`` reads."""
    if moment is None:
        return "-"
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


@dataclass(frozen=True)
class RecoveryTarget:
    """One recovery target. ``value``: a UTC datetime (time), an int (lsn, xid), a str (name), None."""

    kind: str
    value: datetime | int | str | None = None
    inclusive: bool = True

    def describe(self) -> str:
        from hadr_backup.postgres.wal import format_lsn

        if self.kind == TIME:
            return f"time {format_time(self.value)}"  # type: ignore[arg-type]
        if self.kind == LSN:
            return f"LSN {format_lsn(self.value)}"  # type: ignore[arg-type]
        if self.kind == XID:
            return f"transaction {self.value}"
        if self.kind == NAME:
            return f"restore point {self.value!r}"
        return "the end of archived WAL" if self.kind == LATEST else "the end of the backup (consistency)"

    def to_json(self) -> dict:
        value = self.value.isoformat() if isinstance(self.value, datetime) else self.value
        if self.kind == LSN and isinstance(self.value, int):
            from hadr_backup.postgres.wal import format_lsn

            value = format_lsn(self.value)
        return {"kind": self.kind, "value": value, "inclusive": self.inclusive}


def make_target(*, time: str | None = None, lsn: str | None = None, xid: str | int | None = None,
                name: str | None = None, latest: bool = False, backup_id: str | None = None,
                exclusive: bool = False) -> RecoveryTarget:
    """Exactly one of the target options (``--backup`` alone means: stop as soon as it is consistent)."""
    given = [k for k, v in ((TIME, time), (LSN, lsn), (XID, xid), (NAME, name)) if v not in (None, "")]
    given += [LATEST] if latest else []
    if len(given) > 1:
        raise BadTarget(f"give one recovery target, not {len(given)} ({', '.join(given)})",
                        hint="PostgreSQL accepts exactly one recovery_target_* setting")
    if not given:
        if backup_id:
            return RecoveryTarget(IMMEDIATE)
        raise BadTarget("no recovery target given",
                        hint="use --target-time, --target-lsn, --target-xid, --target-name or --latest")
    kind = given[0]
    if kind == TIME:
        return RecoveryTarget(TIME, parse_target_time(time or ""), not exclusive)
    if kind == LSN:
        return RecoveryTarget(LSN, parse_target_lsn(lsn or ""), not exclusive)
    if kind == XID:
        return RecoveryTarget(XID, parse_target_xid(xid), not exclusive)
    if kind == NAME:
        if len(name or "") >= 64:
            raise BadTarget(f"restore point name {name!r} is longer than PostgreSQL's 63 bytes")
        return RecoveryTarget(NAME, name)
    return RecoveryTarget(LATEST)


def parse_target_lsn(text: str) -> int:
    from hadr_backup.postgres.wal import parse_lsn

    if not _LSN.fullmatch((text or "").strip()):
        raise BadTarget(f"--target-lsn {text!r} is not an LSN", hint="write it as PostgreSQL does, e.g. 0/3000028")
    return parse_lsn(text)


def parse_target_xid(text: str | int | None) -> int:
    value = str(text).strip()
    if not value.isdigit() or not 3 <= int(value) < 1 << 32:
        raise BadTarget(f"--target-xid {text!r} is not a transaction id",
                        hint="a 32-bit transaction id as shown by txid_current() modulo 2^32, e.g. 1234")
    return int(value)


def recovery_settings(target: RecoveryTarget, timeline: int, action: str) -> dict[str, str]:
    """The recovery_target_* settings for ``target``: exactly one target, its inclusiveness, the
    timeline to follow (numeric: the one whose WAL was proven present) and the action at the end."""
    from hadr_backup.postgres.wal import format_lsn

    if action not in ACTIONS:
        raise BadTarget(f"--target-action {action!r}: expected one of {', '.join(ACTIONS)}")
    settings = {"recovery_target_timeline": str(timeline), "recovery_target_action": action}
    if target.kind == TIME:
        settings["recovery_target_time"] = format_time(target.value)  # type: ignore[arg-type]
    elif target.kind in (LSN, LATEST):
        settings["recovery_target_lsn"] = format_lsn(target.value)  # type: ignore[arg-type]
    elif target.kind == XID:
        settings["recovery_target_xid"] = str(target.value)
    elif target.kind == NAME:
        settings["recovery_target_name"] = str(target.value)
    else:
        settings["recovery_target"] = "immediate"
    if target.kind in (TIME, LSN, XID, LATEST):
        settings["recovery_target_inclusive"] = "on" if target.inclusive else "off"
    return settings
