"""What a `hadr backup s3` run copies, and how many copies run at once — both without holding a bucket.

``unseen`` merge-joins the streamed listing of a bucket with the streamed records of the earlier complete
runs (both in key order, each key's newest first), one key at a time, and yields the records no earlier
run listed. ``ordered_pool`` runs a function over a stream with a bounded pool and a bounded window of
work in flight, and yields the results in the stream's order (the manifest is written in key order).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import groupby
from operator import attrgetter
from typing import TypeVar

from hadr_backup.objectstore.versions import VersionRecord

T = TypeVar("T")
R = TypeVar("R")
_by_key = attrgetter("key")


def identity(record: VersionRecord) -> tuple:
    """What makes a listed record the same one an earlier run saw: the version id, and (for a bucket
    whose versioning was never enabled, where every version is "null") its ETag, size and time."""
    return record.version_id, record.deleted, record.etag, record.size, record.last_modified


def unseen(
    listing: Iterable[VersionRecord], seen: Iterable[VersionRecord], *, current_only: bool = False
) -> Iterator[VersionRecord]:
    """The records of ``listing`` whose identity no record of ``seen`` for the same key has, in the
    listing's order; ``current_only``: of each key only the latest record (a version or a delete marker)."""
    earlier = groupby(seen, key=_by_key)
    earlier_key, earlier_group = _next_group(earlier)
    for key, group in groupby(listing, key=_by_key):
        while earlier_key is not None and earlier_key < key:
            earlier_key, earlier_group = _next_group(earlier)
        known = {identity(record) for record in earlier_group} if earlier_key == key else set()
        records = list(group)
        if current_only:
            records = records[:1] if records[0].latest else []
        for record in records:
            if identity(record) not in known:
                yield record


def _next_group(groups) -> tuple[str | None, list[VersionRecord]]:
    found = next(groups, None)
    return (None, []) if found is None else (found[0], list(found[1]))


def ordered_pool(
    items: Iterable[T],
    work: Callable[[T], R],
    *,
    workers: int,
    window: int,
    inline: Callable[[T], bool] = lambda item: False,
) -> Iterator[R]:
    """``work(item)`` for every item on ``workers`` threads, at most ``window`` items taken from
    ``items`` and not yet yielded; results in the order of ``items``. ``inline(item)``: done on the
    calling thread (cheap items). The first failure is raised once its turn comes; the rest are
    cancelled."""
    pending: deque[Future] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hadr-copy")
    try:
        for item in items:
            if inline(item):
                done: Future = Future()
                done.set_result(work(item))
                pending.append(done)
            else:
                pending.append(pool.submit(work, item))
            while len(pending) >= window or (pending and pending[0].done()):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
