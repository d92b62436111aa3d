"""Retention as a pure function: which backups to keep, which to expire, and why (as restic's ApplyPolicy).

Per source (kind + name), over complete backups, in UTC:

* grandfather-father-son: for each period (hourly, daily, weekly, monthly) with a count n, the newest
  backup of each of the n newest buckets that hold a backup ("daily 2026-11-27 (2 of 7)");
* ``keep_within``: every backup whose instant is no older than that span before ``now``;
* ``min_full``: never fewer complete backups kept than that (the newest ones not kept otherwise);
* a kept backup keeps its parent, recursively ("parent of <id>"): a chained backup restores only with it.

Running backups are never touched; failed ones are expired (whatever they stored is removable); an
entry already ``expiring`` (a prune began removing it) stays expiring. Every decision carries at least one
reason; nothing is kept without one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hadr_backup.policy.model import Retention
from hadr_backup.repo.catalog import COMPLETE, EXPIRING, FAILED, RUNNING, BackupEntry
from hadr_backup.timefmt import PERIODS, duration_text, period_label

NOT_SELECTED = "not selected by the retention policy"


@dataclass(frozen=True)
class Decision:
    entry: BackupEntry
    keep: bool
    reasons: tuple[str, ...]

    @property
    def id(self) -> str:
        return self.entry.id

    def to_json(self) -> dict[str, Any]:
        return {"id": self.entry.id, "action": "keep" if self.keep else "expire", "reasons": list(self.reasons)}


def backup_instant(entry: BackupEntry) -> float:
    """The instant a backup stands for in the buckets: the earliest it restores to, else when it stopped."""
    if entry.consistent_at is not None:
        return entry.consistent_at
    return entry.stopped_at if entry.stopped_at is not None else entry.started_at


def apply_retention(entries: Iterable[BackupEntry], retention: Retention, now: float) -> list[Decision]:
    """One decision per entry, grouped by source, each source's newest first."""
    by_source: dict[tuple[str, str], list[BackupEntry]] = {}
    for entry in entries:
        by_source.setdefault((entry.kind, entry.source), []).append(entry)
    decisions: list[Decision] = []
    for key in sorted(by_source):
        decisions += _one_source(by_source[key], retention, now)
    return decisions


def _one_source(entries: list[BackupEntry], retention: Retention, now: float) -> list[Decision]:
    ordered = sorted(entries, key=lambda e: (backup_instant(e), e.started_at, e.id), reverse=True)
    complete = [e for e in ordered if e.state == COMPLETE]
    reasons: dict[str, list[str]] = {e.id: [] for e in ordered}
    # 1. grandfather-father-son buckets, then everything within keep_within
    for period in PERIODS:
        for entry, reason in _buckets(complete, period, getattr(retention, period)):
            reasons[entry.id].append(reason)
    if retention.keep_within is not None:
        for entry in complete:
            if now - backup_instant(entry) <= retention.keep_within:
                reasons[entry.id].append(f"keep_within {duration_text(retention.keep_within)}")
    # 2. parents of what is kept, then the newest others up to min_full, then their parents
    _keep_parents(complete, reasons)
    kept = sum(1 for e in complete if reasons[e.id])
    for entry in complete:
        if kept >= retention.min_full:
            break
        if not reasons[entry.id]:
            reasons[entry.id].append(f"min_full {retention.min_full}")
            kept += 1
    _keep_parents(complete, reasons)
    return [_decide(entry, reasons[entry.id]) for entry in ordered]


def _buckets(complete: Sequence[BackupEntry], period: str, count: int) -> list[tuple[BackupEntry, str]]:
    """The newest backup of each of the ``count`` newest ``period`` buckets holding one (newest first)."""
    chosen: list[tuple[BackupEntry, str]] = []
    last_label = None
    for entry in complete:
        if len(chosen) >= count:
            break
        label = period_label(period, backup_instant(entry))
        if label != last_label:
            last_label = label
            chosen.append((entry, f"{period} {label} ({len(chosen) + 1} of {count})"))
    return chosen


def _keep_parents(complete: Sequence[BackupEntry], reasons: dict[str, list[str]]) -> None:
    """A kept backup keeps its parent (and that one its own): the chain it restores from."""
    by_id = {e.id: e for e in complete}
    pending = [e for e in complete if reasons[e.id]]
    while pending:
        child = pending.pop()
        parent = by_id.get(child.parent) if child.parent else None
        if parent is None:
            continue
        reason = f"parent of {child.id}"
        if reason not in reasons[parent.id]:
            was_kept = bool(reasons[parent.id])
            reasons[parent.id].append(reason)
            if not was_kept:
                pending.append(parent)


def _decide(entry: BackupEntry, reasons: list[str]) -> Decision:
    if entry.state == RUNNING:
        return Decision(entry, True, ("running",))
    if entry.state == EXPIRING:
        return Decision(entry, False, ("expiring: a prune began removing it",))
    if entry.state == FAILED:
        return Decision(entry, False, ("failed, cleaned" if entry.cleaned else "failed",))
    if reasons:
        return Decision(entry, True, tuple(reasons))
    return Decision(entry, False, (NOT_SELECTED,))
