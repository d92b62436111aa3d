"""Two small tools for streams of objects: a key-order merge-join, and a bounded pool that keeps order.

Neither holds more than a bounded number of items, so a restore or a verification of a bucket of any
size runs in memory that does not grow with it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

A = TypeVar("A")
B = TypeVar("B")
R = TypeVar("R")


def join_by_key(
    left: Iterable[A], right: Iterable[B], key_of: Callable[[A | B], str]
) -> Iterator[tuple[str, A | None, B | None]]:
    """Both streams (each in key order, one item per key) as (key, left item, right item), either None
    where that side lacks the key."""
    left_items, right_items = iter(left), iter(right)
    a, b = next(left_items, None), next(right_items, None)
    while a is not None or b is not None:
        if b is None or (a is not None and key_of(a) < key_of(b)):
            yield key_of(a), a, None
            a = next(left_items, None)
        elif a is None or key_of(b) < key_of(a):
            yield key_of(b), None, b
            b = next(right_items, None)
        else:
            yield key_of(a), a, b
            a, b = next(left_items, None), next(right_items, None)


def bounded_map(work: Callable[[A], R], items: Iterable[A], workers: int) -> Iterator[tuple[A, R]]:
    """(item, work(item)) for every item, in the items' order, with ``work`` running on ``workers``
    threads and at most twice that many items taken from ``items`` ahead of the consumer. The first
    failure is raised once the work already started has ended; nothing new starts after it."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending: deque[tuple[A, Future]] = deque()
        try:
            for item in items:
                pending.append((item, pool.submit(work, item)))
                if len(pending) >= 2 * workers:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        except BaseException:
            for _item, future in pending:
                future.cancel()
            raise
