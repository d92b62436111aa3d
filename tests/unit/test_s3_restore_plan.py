"""The pure parts of hadr restore s3: the key-order join, the plan, the bounded pool, the window, the counts."""

from __future__ import annotations

import threading
import time

import pytest

from hadr_backup.errors import TargetUnreachable
from hadr_backup.objectstore.history import DAY, Window, source_window
from hadr_backup.objectstore.restore import DELETE, KEEP, WRITE, Action, plan
from hadr_backup.objectstore.restoreresult import Counts
from hadr_backup.objectstore.streams import bounded_map, join_by_key
from hadr_backup.objectstore.versions import VersionRecord


def rec(key: str, version: str = "v1", size: int = 3) -> VersionRecord:
    return VersionRecord(key=key, version_id=version, last_modified=100.0, size=size)


def test_join_by_key_pairs_each_key_once_in_order() -> None:
    left = [rec("a"), rec("c"), rec("d")]
    right = [rec("b"), rec("c"), rec("e")]
    joined = [(key, a is not None, b is not None) for key, a, b in join_by_key(left, right, lambda r: r.key)]
    assert joined == [("a", True, False), ("b", False, True), ("c", True, True), ("d", True, False), ("e", False, True)]
    assert list(join_by_key([], [], lambda r: r.key)) == []


def test_plan_in_place_keeps_the_version_of_t_writes_others_and_deletes_what_was_absent() -> None:
    state = [rec("a", "v1"), rec("b", "v1"), rec("c", "v1")]
    current = [rec("a", "v1"), rec("b", "v2"), rec("x", "v9")]
    actions = [(action.kind, action.key) for action in plan(state, current, in_place=True)]
    assert actions == [(KEEP, "a"), (WRITE, "b"), (WRITE, "c"), (DELETE, "x")]


def test_plan_into_a_bucket_writes_every_key_of_t() -> None:
    state = [rec("a", "v1"), rec("b", "v1")]
    current = [rec("a", ""), rec("z", "")]
    actions = [(action.kind, action.key) for action in plan(state, current, in_place=False)]
    assert actions == [(WRITE, "a"), (WRITE, "b"), (DELETE, "z")]


def test_bounded_map_keeps_order_and_never_runs_far_ahead() -> None:
    taken, lock = [], threading.Lock()

    def items():
        for number in range(100):
            with lock:
                taken.append(number)
            yield number

    results = []
    for number, doubled in bounded_map(lambda n: n * 2, items(), workers=4):
        results.append((number, doubled))
        assert len(taken) - len(results) <= 8
    assert results == [(n, n * 2) for n in range(100)]


def test_bounded_map_raises_the_first_failure_and_starts_nothing_after_it() -> None:
    started = []

    def work(number: int) -> int:
        started.append(number)
        if number == 5:
            raise ValueError("five")
        time.sleep(0.001)
        return number

    with pytest.raises(ValueError, match="five"):
        list(bounded_map(work, iter(range(1000)), workers=2))
    assert max(started) < 20


def test_the_window_refuses_a_target_before_or_after_it() -> None:
    window = Window(1000.0, 2000.0, "oldest-version")
    window.require(1000.0, "source")
    window.require(2000.0, "source")
    for at, side in ((999.0, "before the oldest"), (2000.5, "after the newest")):
        with pytest.raises(TargetUnreachable, match=side) as caught:
            window.require(at, "source")
        assert caught.value.exit_code == 2 and "1970-01-01 00:16:40" in caught.value.message


def test_counts_tell_copied_streamed_unchanged_and_unreadable_apart() -> None:
    counts = Counts()
    counts.add(Action(WRITE, "a", rec("a", size=10)), "copied")
    counts.add(Action(WRITE, "b", rec("b", size=5)), "streamed")
    counts.add(Action(KEEP, "c", rec("c", size=7)), None)
    counts.add(Action(WRITE, "d", rec("d", size=1)), "unreadable: SHA-256 differs")
    counts.add(Action(DELETE, "e"), None)
    assert (counts.objects, counts.bytes, counts.written, counts.written_bytes) == (4, 23, 2, 15)
    assert (counts.copied, counts.streamed, counts.unchanged, counts.deleted) == (1, 1, 1, 1)
    assert counts.unreadable == ["d: SHA-256 differs"] and counts.changed == 3


def test_the_source_window_ends_before_the_listing_second_and_starts_where_versions_are_kept() -> None:
    began = 1_000_000.75
    assert source_window(990_000.0, began, None) == Window(990_000.0, 999_999.999999, "oldest-version")
    assert source_window(990_000.0, began, 30) == Window(990_000.0, 999_999.999999, "oldest-version")
    kept = source_window(100.0, began, 2)  # noncurrent versions expire after 2 days: older states may be gone
    assert kept == Window(began - 2 * DAY, 999_999.999999, "noncurrent-expiry")
