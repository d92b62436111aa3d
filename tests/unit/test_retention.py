"""Retention as a pure function: each reason, UTC bucket edges, min_full, keep_within, parents, running and
failed entries; then properties over random catalogs and clocks (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from hadr_backup.policy.model import Retention
from hadr_backup.policy.retention import NOT_SELECTED, apply_retention
from hadr_backup.repo.catalog import COMPLETE, EXPIRING, FAILED, RUNNING, BackupEntry

NONE = Retention(hourly=0, daily=0, weekly=0, monthly=0, min_full=1)


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def backup(backup_id: str, when: str | float, *, state: str = COMPLETE, source: str = "main", **extra) -> BackupEntry:
    instant = at(when) if isinstance(when, str) else when
    return BackupEntry(
        id=backup_id,
        kind="pg",
        source=source,
        state=state,
        started_at=instant - 10,
        stopped_at=instant,
        consistent_at=instant,
        **extra,
    )


def decided(entries, retention, now) -> dict[str, tuple[bool, tuple[str, ...]]]:
    return {d.id: (d.keep, d.reasons) for d in apply_retention(entries, retention, now)}


def test_daily_keeps_the_newest_of_each_day_counted_from_the_newest_day_down() -> None:
    entries = [
        backup("d1-early", "2026-11-25 08:00"),
        backup("d1-late", "2026-11-25 20:00"),
        backup("d2", "2026-11-26 12:00"),
        backup("d3-early", "2026-11-27 01:00"),
        backup("d3-late", "2026-11-27 23:59:59"),
    ]
    result = decided(entries, Retention(hourly=0, daily=2, weekly=0, monthly=0), at("2026-12-20 00:00"))
    assert result["d3-late"] == (True, ("daily 2026-11-27 (1 of 2)",))
    assert result["d2"] == (True, ("daily 2026-11-26 (2 of 2)",))
    for gone in ("d3-early", "d1-late", "d1-early"):
        assert result[gone] == (False, (NOT_SELECTED,))


def test_buckets_are_utc_and_edges_belong_to_the_later_bucket() -> None:
    entries = [
        backup("before-midnight", "2026-11-30 23:59:59.999"),
        backup("at-midnight", "2026-12-01 00:00:00"),
        backup("hour-end", "2026-12-01 00:59:59"),
    ]
    now = at("2026-12-01 02:00")
    days = decided(entries, Retention(hourly=0, daily=5, weekly=0, monthly=5), now)
    assert days["hour-end"] == (True, ("daily 2026-12-01 (1 of 5)", "monthly 2026-12 (1 of 5)"))
    assert days["before-midnight"] == (True, ("daily 2026-11-30 (2 of 5)", "monthly 2026-11 (2 of 5)"))
    assert days["at-midnight"][0] is False  # same day and month as hour-end, older
    hours = decided(entries, Retention(hourly=3, daily=0, weekly=0, monthly=0), now)
    assert hours["hour-end"][1] == ("hourly 2026-12-01 00h (1 of 3)",)
    assert hours["before-midnight"][1] == ("hourly 2026-11-30 23h (2 of 3)",)


def test_weekly_buckets_are_iso_weeks_monday_to_sunday() -> None:
    entries = [
        backup("sunday", "2026-11-29 23:00"),  # ISO week 48
        backup("monday", "2026-11-30 01:00"),  # ISO week 49
        backup("year-edge", "2026-01-01 12:00"),  # ISO week 1 of 2026 (a Thursday)
        backup("old-year", "2025-12-28 12:00"),  # ISO week 52 of 2025 (a Sunday)
    ]
    result = decided(entries, Retention(hourly=0, daily=0, weekly=4, monthly=0), at("2026-12-02 00:00"))
    assert result["monday"][1] == ("weekly 2026-W49 (1 of 4)",)
    assert result["sunday"][1] == ("weekly 2026-W48 (2 of 4)",)
    assert result["year-edge"][1] == ("weekly 2026-W01 (3 of 4)",)
    assert result["old-year"][1] == ("weekly 2025-W52 (4 of 4)",)


def test_monthly_counts_only_months_that_hold_a_backup() -> None:
    entries = [backup("jan", "2026-01-15 00:00"), backup("sep", "2026-09-30 23:00"), backup("nov", "2026-11-02 00:00")]
    result = decided(entries, Retention(hourly=0, daily=0, weekly=0, monthly=2), at("2026-12-01 00:00"))
    assert result["nov"][1] == ("monthly 2026-11 (1 of 2)",)
    assert result["sep"][1] == ("monthly 2026-09 (2 of 2)",)
    assert result["jan"] == (False, (NOT_SELECTED,))


def test_keep_within_keeps_everything_that_recent_and_nothing_older() -> None:
    now = at("2026-12-01 12:00")
    entries = [backup(f"b{h}", now - h * 3600) for h in (0, 1, 35, 36, 37)]
    result = decided(entries, Retention(hourly=0, daily=0, weekly=0, monthly=0, keep_within=36 * 3600), now)
    assert [i for i, (keep, _) in result.items() if keep] == ["b0", "b1", "b35", "b36"]
    assert result["b36"][1] == ("keep_within 36h",)
    assert result["b37"] == (False, (NOT_SELECTED,))


def test_min_full_keeps_the_newest_complete_backups_when_nothing_else_does() -> None:
    entries = [backup(f"b{i}", f"2026-11-0{i} 00:00") for i in range(1, 6)]
    result = decided(entries, Retention(hourly=0, daily=0, weekly=0, monthly=0, min_full=2), at("2026-12-01 00:00"))
    assert result["b5"] == (True, ("min_full 2",))
    assert result["b4"] == (True, ("min_full 2",))
    assert not any(result[f"b{i}"][0] for i in (1, 2, 3))
    # already kept by a bucket: min_full adds nothing beyond
    result = decided(entries, Retention(hourly=0, daily=3, weekly=0, monthly=0, min_full=2), at("2026-12-01 00:00"))
    assert [i for i, (keep, _) in result.items() if keep] == ["b5", "b4", "b3"]
    assert all("min_full" not in " ".join(r) for _keep, r in result.values())


def test_min_full_counts_complete_backups_only() -> None:
    entries = [
        backup("old", "2026-11-01 00:00"),
        backup("failed", "2026-11-02 00:00", state=FAILED),
        backup("running", "2026-11-03 00:00", state=RUNNING),
    ]
    result = decided(entries, NONE, at("2026-12-01 00:00"))
    assert result["old"] == (True, ("min_full 1",))
    assert result["failed"] == (False, ("failed",))
    assert result["running"] == (True, ("running",))


def test_a_kept_backup_keeps_its_parents_recursively() -> None:
    entries = [
        backup("full", "2026-11-01 00:00"),
        backup("inc1", "2026-11-02 00:00", parent="full"),
        backup("inc2", "2026-11-03 00:00", parent="inc1"),
        backup("other", "2026-10-01 00:00"),
    ]
    result = decided(entries, Retention(hourly=0, daily=1, weekly=0, monthly=0), at("2026-12-01 00:00"))
    assert result["inc2"] == (True, ("daily 2026-11-03 (1 of 1)",))
    assert result["inc1"] == (True, ("parent of inc2",))
    assert result["full"] == (True, ("parent of inc1",))
    assert result["other"][0] is False


def test_running_is_never_touched_failed_and_expiring_go() -> None:
    entries = [
        backup("running-old", "2020-01-01 00:00", state=RUNNING),
        backup("failed", "2026-11-30 00:00", state=FAILED, cleaned=True),
        backup("expiring", "2026-11-30 01:00", state=EXPIRING),
        backup("kept", "2026-11-30 02:00"),
    ]
    result = decided(entries, Retention(), at("2026-12-01 00:00"))
    assert result["running-old"] == (True, ("running",))
    assert result["failed"] == (False, ("failed, cleaned",))
    assert result["expiring"] == (False, ("expiring: a prune began removing it",))
    assert result["kept"][0] is True


def test_sources_are_decided_apart() -> None:
    entries = [backup("a-new", "2026-11-30 00:00", source="a"), backup("b-old", "2026-01-01 00:00", source="b")]
    result = decided(entries, Retention(hourly=0, daily=1, weekly=0, monthly=0), at("2026-12-01 00:00"))
    assert result["a-new"][0] and result["b-old"][0]  # each the newest day of its own source


# -- properties ------------------------------------------------------------------------------------

START = at("2026-01-01 00:00")
YEAR = 366 * 86400


@st.composite
def catalogs(draw) -> tuple[list[BackupEntry], Retention, float]:
    count = draw(st.integers(0, 40))
    instants = sorted(draw(st.lists(st.floats(START, START + YEAR), min_size=count, max_size=count)))
    entries: list[BackupEntry] = []
    for index, instant in enumerate(instants):
        state = draw(st.sampled_from([COMPLETE] * 6 + [FAILED, RUNNING, EXPIRING]))
        source = draw(st.sampled_from(["main", "other"]))
        older = [e.id for e in entries if e.source == source]  # a chain stays within its source
        parent = draw(st.one_of(st.none(), st.sampled_from(older))) if older else None
        entries.append(backup(f"b{index:03d}", instant, state=state, source=source, parent=parent))
    retention = Retention(
        hourly=draw(st.integers(0, 30)),
        daily=draw(st.integers(0, 10)),
        weekly=draw(st.integers(0, 6)),
        monthly=draw(st.integers(0, 13)),
        min_full=draw(st.integers(1, 5)),
        keep_within=draw(st.one_of(st.none(), st.sampled_from([3600.0, 86400.0, 7 * 86400.0]))),
    )
    now = draw(st.floats(START, START + YEAR + 90 * 86400))
    return entries, retention, now


@settings(max_examples=300, deadline=None)
@given(catalogs())
def test_every_entry_is_decided_once_with_a_reason(case) -> None:
    entries, retention, now = case
    decisions = apply_retention(entries, retention, now)
    assert sorted(d.id for d in decisions) == sorted(e.id for e in entries)
    assert all(d.reasons for d in decisions)
    for d in decisions:
        if d.keep:
            assert NOT_SELECTED not in d.reasons
        if d.entry.state == RUNNING:
            assert d.keep  # never touched
        if d.entry.state in (FAILED, EXPIRING):
            assert not d.keep


@settings(max_examples=300, deadline=None)
@given(catalogs())
def test_min_full_and_parents_hold(case) -> None:
    entries, retention, now = case
    kept = {d.id for d in apply_retention(entries, retention, now) if d.keep}
    by_id = {e.id: e for e in entries}
    for source in {e.source for e in entries}:
        complete = [e for e in entries if e.source == source and e.state == COMPLETE]
        assert sum(e.id in kept for e in complete) >= min(retention.min_full, len(complete))
    for backup_id in kept:
        parent = by_id[backup_id].parent
        if by_id[backup_id].state == COMPLETE and parent and by_id[parent].state == COMPLETE:
            assert parent in kept


@settings(max_examples=300, deadline=None)
@given(catalogs())
def test_applying_it_to_the_kept_set_expires_nothing_more(case) -> None:
    entries, retention, now = case
    kept = [d.entry for d in apply_retention(entries, retention, now) if d.keep]
    again = apply_retention(kept, retention, now)
    assert all(d.keep for d in again), [d for d in again if not d.keep]
