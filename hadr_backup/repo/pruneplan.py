"""What a prune removes, worked out before anything is removed: per expired backup its own objects (and the
leftovers under its folder), per source the stream objects no kept backup needs — never anything a kept
backup needs, whoever else names it (objects shared between backups, WAL a backup is made consistent with).

Everything a kind knows comes through its engine (``needs``, ``stream_expired``); a kind without an engine
is left alone whole, with a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hadr_backup import engines
from hadr_backup.engines import StreamObject
from hadr_backup.errors import HadrError
from hadr_backup.policy.retention import Decision
from hadr_backup.repo import layout
from hadr_backup.repo.catalog import COMPLETE, RUNNING, BackupEntry


@dataclass
class PrunePlan:
    expire: list[BackupEntry] = field(default_factory=list)
    objects: dict[str, list[StreamObject]] = field(default_factory=dict)  # expired backup id -> its objects
    stream: dict[tuple[str, str], list[StreamObject]] = field(default_factory=dict)  # (kind, source) -> objects
    held: dict[str, list[str]] = field(default_factory=dict)  # expired backup id -> keys in its folder still needed
    warnings: list[str] = field(default_factory=list)

    @property
    def object_count(self) -> int:
        return sum(len(found) for found in self.objects.values()) + sum(len(found) for found in self.stream.values())

    @property
    def freed_bytes(self) -> int:
        every = [*self.objects.values(), *self.stream.values()]
        return sum(o.size for found in every for o in found)


def needed_keys(engine, entry: BackupEntry) -> set[str]:
    """Every key a kept ``entry`` names as needed: its objects, stream keys and recorded needs."""
    needs = engine.needs(entry)
    return {*needs.objects, *needs.stream_keys, *entry.needs}


def own_keys(engine, entry: BackupEntry) -> set[str]:
    """What an expired entry stored: what its engine says it needs (objects possibly outside its folder),
    and what the catalog recorded (a failed backup's meta may be too partial for its engine)."""
    keys = {o.key for o in entry.objects} | {layout.backup_description(entry.kind, entry.source, entry.id)}
    if entry.state != RUNNING:
        try:
            keys |= set(engine.needs(entry).objects)
        except (HadrError, KeyError, TypeError, ValueError):
            pass  # a failed backup's meta: what the catalog and its folder hold is all there is
    return keys


def plan_prune(repo, decisions: Sequence[Decision]) -> PrunePlan:
    plan = PrunePlan()
    groups: dict[tuple[str, str], list[Decision]] = {}
    for decision in decisions:
        groups.setdefault((decision.entry.kind, decision.entry.source), []).append(decision)
    protected: set[str] = set()
    kept_by_group: dict[tuple[str, str], list[BackupEntry]] = {}
    for group, members in groups.items():
        engine = engines.find(group[0])
        if engine is None:
            plan.warnings.append(f"{group[0]} source {group[1]}: no engine for its kind, nothing of it is removed")
            continue
        kept = [d.entry for d in members if d.keep]
        kept_by_group[group] = kept
        protected |= {key for entry in kept if entry.state == COMPLETE for key in needed_keys(engine, entry)}
        plan.expire += [d.entry for d in members if not d.keep]
    # 1. each expired backup: its objects and what lies under its folder, less what a kept one needs
    for entry in plan.expire:
        found = _entry_objects(repo, engines.engine(entry.kind), entry)
        plan.objects[entry.id] = [o for o in found if o.key not in protected]
        held = [o.key for o in found if o.key in protected and o.key.startswith(entry.object_prefix)]
        if held:  # its folder stays, so does its entry (expiring: nothing restores from it)
            plan.held[entry.id] = held
            plan.warnings.append(f"{entry.id} stays expiring: a kept backup needs {held[0]}")
    # 2. each source's stream: what its engine says no kept backup needs
    for group, kept in kept_by_group.items():
        expired = getattr(engines.engine(group[0]), "stream_expired", None)
        found = expired(repo, group[1], kept) if expired and kept else []
        plan.stream[group] = [o for o in found if o.key not in protected]
    return plan


def _entry_objects(repo, engine, entry: BackupEntry) -> list[StreamObject]:
    """Present objects only (a prune that was killed has removed some), the description first: once it is
    gone nothing reads the folder as a backup, whatever is left of it."""
    listed = {info.key: info.size for info in repo.store.list(entry.object_prefix)}
    found = dict(listed)
    for key in own_keys(engine, entry) - set(listed):
        info = repo.store.stat(key)
        if info is not None:
            found[key] = info.size
    description = layout.backup_description(entry.kind, entry.source, entry.id)
    order = sorted(found, key=lambda key: (key != description, key))
    return [StreamObject(key, found[key]) for key in order]
