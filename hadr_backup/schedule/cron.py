"""Cron expressions as the policy's ``schedules[].cron`` spells them, parsed without heavy imports.

Standard five fields ``minute hour day-of-month month day-of-week``; a sixth field in front, seconds, is
accepted for tests and sub-minute schedules (the daemon honours it; plain cron cannot). Fields take
``*``, numbers, ``a-b`` ranges, ``/step`` and comma lists; months ``jan``..``dec`` and weekdays
``sun``..``sat`` by name; weekday 0 and 7 are Sunday, as in cron.

Weekdays are expanded to names because APScheduler numbers them from Monday. An expression that
restricts both the day of the month and the day of the week is refused: cron runs it when either
matches, APScheduler only when both do, and a schedule must mean one thing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# field -> (lowest, highest, names whose index + offset is their number)
_FIELDS = {
    "second": (0, 59, (), 0),
    "minute": (0, 59, (), 0),
    "hour": (0, 23, (), 0),
    "day": (1, 31, (), 0),
    "month": (1, 12, MONTHS, 1),
    "day_of_week": (0, 7, WEEKDAYS, 0),
}
_PART = re.compile(r"(?P<range>\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(?P<step>\d+))?")


class CronError(ValueError):
    """A cron expression that cannot be parsed: the message says which field and why."""


@dataclass(frozen=True)
class CronSpec:
    """A parsed expression: each field as APScheduler's CronTrigger takes it."""

    text: str
    second: str
    minute: str
    hour: str
    day: str
    month: str
    day_of_week: str

    @property
    def has_seconds(self) -> bool:
        return len(self.text.split()) == 6

    @property
    def crontab_fields(self) -> str:
        """The five fields of a crontab line (the expression without its seconds)."""
        return " ".join(self.text.split()[-5:])

    def trigger_fields(self) -> dict[str, str]:
        names = ("second", "minute", "hour", "day", "month", "day_of_week")
        return {name: getattr(self, name) for name in names}


def parse_cron(text: str) -> CronSpec:
    """``"*/15 * * * *"`` or ``"*/2 * * * * *"`` (seconds first) -> CronSpec; CronError when invalid."""
    fields = text.lower().split()
    if len(fields) not in (5, 6):
        raise CronError(f"{len(fields)} fields; expected 5 (minute hour day month weekday) or 6 (seconds first)")
    if len(fields) == 5:
        fields = ["0", *fields]
    names = ("second", "minute", "hour", "day", "month", "day_of_week")
    values = {name: _numbers(name, field) for name, field in zip(names, fields, strict=True)}
    if fields[3] != "*" and fields[5] != "*":
        raise CronError(
            "both day-of-month and day-of-week are restricted: cron runs such a line when either matches, "
            "APScheduler only when both do; restrict one of them"
        )
    weekdays = sorted({n % 7 for n in values["day_of_week"]})
    dow = "*" if fields[5] == "*" else ",".join(WEEKDAYS[n] for n in weekdays)
    spelled = [_spelled(field, values[name]) for field, name in zip(fields[:5], names[:5], strict=True)]
    return CronSpec(" ".join(text.split()), *spelled, dow)


def _spelled(field: str, numbers: set[int]) -> str:
    """The field as APScheduler reads it: ``*`` as is, else the comma list of its numbers."""
    return "*" if field == "*" else ",".join(map(str, sorted(numbers)))


def _numbers(name: str, field: str) -> set[int]:
    low, high, words, offset = _FIELDS[name]
    found: set[int] = set()
    for part in field.split(","):
        match = _PART.fullmatch(part)
        if not match:
            raise CronError(f"{name} field {field!r}: {part!r} is not a number, range, * or step")
        step = int(match["step"] or 1)
        if step < 1:
            raise CronError(f"{name} field {field!r}: a step must be 1 or more")
        if match["range"] == "*":
            first, last = low, high if name != "day_of_week" else 6
        else:
            bounds = [_value(name, word, low, high, words, offset) for word in match["range"].split("-")]
            first, last = bounds[0], bounds[-1]
            if match["step"] and len(bounds) == 1:
                last = high
            if first > last:
                raise CronError(f"{name} field {field!r}: range {match['range']} runs backwards")
        found.update(range(first, last + 1, step))
    return found


def _value(name: str, word: str, low: int, high: int, words: tuple[str, ...], offset: int) -> int:
    if word in words:
        return words.index(word) + offset
    if not word.isdigit() or not low <= int(word) <= high:
        allowed = f"{low}-{high}" + (f" or {words[0]}..{words[-1]}" if words else "")
        raise CronError(f"{name} field: {word!r} is outside {allowed}")
    return int(word)
