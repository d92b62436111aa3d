"""Recovery targets: what the user asked for, parsed and checked, as plain values.

``--target-time`` is parsed by ``timefmt.parse_target_time`` (the one parser every engine uses); the
resolved UTC instant is always shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from hadr_backup.errors import BadTarget
from hadr_backup.timefmt import format_time, parse_target_time, rfc3339

TIME, LSN, XID, NAME, LATEST, IMMEDIATE = "time", "lsn", "xid", "name", "latest", "immediate"
ACTIONS = ("pause", "promote", "shutdown")

_LSN = re.compile(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}")


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
        value = rfc3339(self.value) if isinstance(self.value, datetime) else self.value
        if self.kind in (LSN, LATEST) and isinstance(self.value, int):
            from hadr_backup.postgres.wal import format_lsn

            value = format_lsn(self.value)
        return {"kind": self.kind, "value": value, "inclusive": self.inclusive}


def make_target(
    *,
    time: str | None = None,
    lsn: str | None = None,
    xid: str | int | None = None,
    name: str | None = None,
    latest: bool = False,
    backup_id: str | None = None,
    exclusive: bool = False,
) -> RecoveryTarget:
    """Exactly one of the target options (``--backup`` alone means: stop as soon as it is consistent)."""
    given = [k for k, v in ((TIME, time), (LSN, lsn), (XID, xid), (NAME, name)) if v not in (None, "")]
    given += [LATEST] if latest else []
    if len(given) > 1:
        raise BadTarget(
            f"give one recovery target, not {len(given)} ({', '.join(given)})",
            hint="PostgreSQL accepts exactly one recovery_target_* setting",
        )
    if not given:
        if backup_id:
            return RecoveryTarget(IMMEDIATE)
        raise BadTarget(
            "no recovery target given",
            hint="use --target-time T, --target-lsn LSN, --target-xid XID, --target-name NAME, --latest "
            "(all archived WAL), or --backup ID alone (that backup, as soon as it is consistent)",
        )
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
        raise BadTarget(
            f"--target-xid {text!r} is not a transaction id",
            hint="a 32-bit transaction id as shown by txid_current() modulo 2^32, e.g. 1234",
        )
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
