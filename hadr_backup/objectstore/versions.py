"""Versions of a bucket: one record per object version or delete marker, and the state of a bucket at T.

ListObjectVersions answers, per page, in key order and within one key newest first, with versions and
delete markers interleaved in that order in the XML. boto3 parses them into two lists, which loses the
interleaving; a ``before-parse`` hook records the document order of the two kinds of elements, and
:func:`list_versions` puts them back in it. Some servers (moto) write all versions of a page before its
delete markers: where document order and the timestamps disagree for one key, the timestamps win
(newest first) and, within one second (S3 stamps ``LastModified`` to the whole second), document order
breaks the tie — the listing's own newest-first order; the record the server marks ``IsLatest`` always
comes first.

``state_at`` reads such a stream (or the merged manifests of a mirror, which come in the same order) and
yields what each key held at T: the newest record at or before T, absent when that is a delete marker.
Nothing holds more than one key's records in memory.
"""

from __future__ import annotations

import heapq
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from itertools import groupby
from typing import Any

PAGE_SIZE = 1000
_ORDER = "HadrEntryOrder"


@dataclass(frozen=True)
class VersionRecord:
    """One version of one key, or a delete marker (``deleted``), as the source listed it."""

    key: str
    version_id: str
    last_modified: float  # epoch seconds, as listed (whole seconds on most servers)
    deleted: bool = False
    size: int = 0
    etag: str | None = None  # as listed, without quotes
    latest: bool = False
    sha256: str | None = None  # the content's SHA-256, once a mirror has read it

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, False) or k in ("key", "version_id")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VersionRecord:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _record_order(response_dict: dict, customized_response_dict: dict, **_: Any) -> None:
    """``before-parse`` hook: the order of Version and DeleteMarker elements in the page's XML."""
    if response_dict.get("status_code") != 200 or not response_dict.get("body"):
        return
    order = []
    for element in ElementTree.fromstring(response_dict["body"]):
        tag = element.tag.rsplit("}", 1)[-1]
        if tag in ("Version", "DeleteMarker"):
            order.append(tag == "DeleteMarker")
    customized_response_dict[_ORDER] = order


def install_order_hook(client) -> None:
    """Make ``client``'s ListObjectVersions answers carry the document order (idempotent)."""
    client.meta.events.register("before-parse.s3.ListObjectVersions", _record_order, unique_id="hadr-version-order")


def _epoch(value: datetime | str) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.timestamp()


def _record(item: dict, deleted: bool) -> VersionRecord:
    return VersionRecord(
        key=item["Key"],
        version_id=item.get("VersionId") or "null",
        last_modified=_epoch(item["LastModified"]),
        deleted=deleted,
        size=0 if deleted else int(item.get("Size", 0)),
        etag=None if deleted else (item.get("ETag") or "").strip('"') or None,
        latest=bool(item.get("IsLatest")),
    )


def page_records(page: dict) -> list[VersionRecord]:
    """One ListObjectVersions page as records in key order, each key's in the page's document order
    (a server that writes a page's versions before its markers still lists keys in order in each)."""
    versions = iter(page.get("Versions", ()))
    markers = iter(page.get("DeleteMarkers", ()))
    order = page.get(_ORDER)
    if order is None:  # no hook: versions, then markers; newest_first sorts them out per key
        order = [False] * len(page.get("Versions", ())) + [True] * len(page.get("DeleteMarkers", ()))
    records = [_record(next(markers) if deleted else next(versions), deleted) for deleted in order]
    return sorted(records, key=lambda record: record.key)  # stable: code point order is UTF-8 byte order


def newest_first(records: list[VersionRecord]) -> list[VersionRecord]:
    """One key's records newest first: the latest one, then by time, ties in the given order."""
    ranked = sorted(enumerate(records), key=lambda pair: (not pair[1].latest, -pair[1].last_modified, pair[0]))
    return [record for _index, record in ranked]


def list_versions(client, bucket: str, prefix: str = "", page_size: int = PAGE_SIZE) -> Iterator[VersionRecord]:
    """Every version and delete marker under ``prefix``, in key order, each key's newest first, page by
    page (a key whose versions straddle a page boundary is held until its last one has come)."""
    install_order_hook(client)
    request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
    pending: list[VersionRecord] = []
    while True:
        page = client.list_object_versions(**request)
        for record in page_records(page):
            if pending and record.key != pending[0].key:
                yield from newest_first(pending)
                pending = []
            pending.append(record)
        if not page.get("IsTruncated"):
            break
        request["KeyMarker"] = page["NextKeyMarker"]
        if page.get("NextVersionIdMarker"):
            request["VersionIdMarker"] = page["NextVersionIdMarker"]
        else:
            request.pop("VersionIdMarker", None)
    yield from newest_first(pending)


def merge_runs(runs: list[Iterable[VersionRecord]]) -> Iterator[VersionRecord]:
    """The records of several mirror runs (each in key order, each key's newest first; oldest run first)
    as one stream in the same order. A run copies only what earlier runs had not seen, so for one key
    a later run's records are newer than an earlier run's; ``latest`` flags are each run's own."""
    merged = heapq.merge(*(_tagged(run, -index) for index, run in enumerate(runs)), key=lambda item: item[:2])
    for _key, _rank, record in merged:
        yield record


def _tagged(run: Iterable[VersionRecord], rank: int) -> Iterator[tuple[str, int, VersionRecord]]:
    for record in run:
        yield record.key, rank, record


def state_at(records: Iterable[VersionRecord], at: float) -> Iterator[VersionRecord]:
    """The version each key held at ``at`` (epoch seconds), in key order; keys absent at ``at`` (never
    written yet, or whose newest record at or before ``at`` is a delete marker) are left out.
    ``records`` come in key order, each key's newest first."""
    for _key, group in groupby(records, key=lambda record: record.key):
        for record in group:
            if record.last_modified <= at:
                if not record.deleted:
                    yield record
                break
