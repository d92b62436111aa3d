"""Every time format hadr reads or writes, in one place.

* ``rfc3339``: the one format of instants in ``--json`` output, RFC 3339 in UTC with microseconds
  (``2026-12-01T10:15:00.123456Z``); absent instants are null.
* ``format_time``: PostgreSQL's spelling (``2026-12-01 10:15:00.123456+00``), for human output and for
  ``recovery_target_time``.
* ``parse_target_time``: the one parser of ``--target-time`` for every engine: ISO 8601 and
  PostgreSQL's own spelling, ``YYYY-MM-DD[ T]HH:MM[:SS[.ffffff]][Z|±HH[:MM]|±HHMM]``; a time without an
  offset means UTC (never the local zone of whichever host runs the restore).
* ``compact`` for names, ``short`` for tables.
* ``parse_duration`` / ``duration_text``: spans in policies (``36h``, ``7d``); ``period_label``: the UTC
  hour, day, ISO week or month an instant falls in, as retention names its buckets (``2026-W48``).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone

from hadr_backup.errors import BadTarget

_TIME = re.compile(
    r"\s*(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<hour>\d{2}):(?P<minute>\d{2})"
    r"(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d{1,9}))?)?"
    r"\s*(?P<zone>Z|UTC|[+-]\d{2}(?::?\d{2})?)?\s*",
    re.IGNORECASE,
)


def _as_datetime(moment: datetime | float) -> datetime:
    if isinstance(moment, datetime):
        return moment.astimezone(UTC)
    return datetime.fromtimestamp(moment, UTC)


def rfc3339(moment: datetime | float | None) -> str | None:
    """``2026-12-01T10:15:00.123456Z``; None stays None (null in JSON)."""
    if moment is None:
        return None
    return _as_datetime(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_time(moment: datetime | float | None) -> str:
    """UTC, microseconds, the form PostgreSQL prints and ``recovery_target_time`` reads."""
    if moment is None:
        return "-"
    return _as_datetime(moment).strftime("%Y-%m-%d %H:%M:%S.%f+00")


TARGET_TIME_FORMATS = (
    "accepted: YYYY-MM-DD HH:MM[:SS[.ffffff]] or ISO 8601 YYYY-MM-DDTHH:MM[:SS[.ffffff]], "
    "then optionally an offset Z, UTC, ±HH, ±HH:MM or ±HHMM (none means UTC), e.g. "
    "'2025-01-02 03:04:05', 2025-01-02T03:04:05.250Z, '2025-01-02 05:04:05+02:00'"
)


def parse_target_time(text: str) -> datetime:
    """``"2025-01-02 03:04:05.123456+02"`` -> an aware UTC datetime; no offset means UTC."""
    match = _TIME.fullmatch(text or "")
    if not match:
        raise BadTarget(f"--target-time {text!r} is not a time", hint=TARGET_TIME_FORMATS)
    fraction = (match["fraction"] or "").ljust(6, "0")
    if len(fraction) > 6 and fraction[6:].strip("0"):
        raise BadTarget(f"--target-time {text!r} is more precise than microseconds", hint=TARGET_TIME_FORMATS)
    try:
        naive = datetime.strptime(
            f"{match['date']} {match['hour']}:{match['minute']}:{match['second'] or '00'}", "%Y-%m-%d %H:%M:%S"
        )
    except ValueError as error:
        raise BadTarget(
            f"--target-time {text!r} is not a valid date and time: {error}", hint=TARGET_TIME_FORMATS
        ) from error
    naive = naive.replace(microsecond=int(fraction[:6]))
    return naive.replace(tzinfo=_zone(match["zone"], text)).astimezone(UTC)


def _zone(zone: str | None, text: str) -> timezone:
    if zone is None or zone.upper() in ("Z", "UTC"):
        return UTC
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 15 or minutes > 59:
        raise BadTarget(f"--target-time {text!r} has an impossible UTC offset {zone}", hint=TARGET_TIME_FORMATS)
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def compact(ts: float | None = None) -> str:
    """UTC as ``YYYYmmddTHHMMSSZ``, for names (backup ids, directories moved aside); now by default."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if ts is None else ts))


def short(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"\s*(?P<count>\d+)\s*(?P<unit>[smhdw])\s*")
DURATION_FORMATS = "a whole number then s, m, h, d or w, e.g. 90m, 36h, 7d, 2w"


def parse_duration(text: str) -> float | None:
    """``"36h"`` -> 129600.0; None when ``text`` is not a duration (the caller says where it was)."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    return float(int(match["count"]) * DURATION_UNITS[match["unit"]]) if match else None


def duration_text(seconds: float) -> str:
    """129600 -> ``"36h"``: the largest unit that divides it, as a policy spells it."""
    for unit, size in sorted(DURATION_UNITS.items(), key=lambda item: -item[1]):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


PERIODS = ("hourly", "daily", "weekly", "monthly")


def period_label(period: str, instant: float) -> str:
    """The UTC bucket of ``instant``: hourly ``2026-11-27 13h``, daily ``2026-11-27``, weekly (ISO week)
    ``2026-W48``, monthly ``2026-11``."""
    moment = datetime.fromtimestamp(instant, UTC)
    if period == "hourly":
        return moment.strftime("%Y-%m-%d %Hh")
    if period == "daily":
        return moment.strftime("%Y-%m-%d")
    if period == "weekly":
        year, week, _day = moment.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "monthly":
        return moment.strftime("%Y-%m")
    raise ValueError(f"unknown retention period {period!r}")
