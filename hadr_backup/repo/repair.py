"""``hadr repair catalog``: rebuild the catalog from the backups' own descriptions.

Every backup writes ``backup.json`` (its whole catalog entry) beside its objects before the catalog
calls it complete, so a lost or damaged catalog can be rebuilt from the repository itself:

    read what the catalog still says (nothing, when it is gone or unreadable)
    → find every backup folder → read its description → check its objects are all there
    → add the whole ones the catalog lacks (compare-and-swap, as every catalog change)
    → remove leftovers of interrupted writes older than the grace period

Folders without a description, and described backups with objects missing, are reported and left
untouched (exit 3): they are evidence, not garbage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from hadr_backup.errors import EXIT_OK, EXIT_VERIFY, HadrError
from hadr_backup.policy.model import Policy
from hadr_backup.repo import layout
from hadr_backup.repo.backups import TEMP_GRACE
from hadr_backup.repo.catalog import COMPLETE, RUNNING, BackupEntry, Catalog
from hadr_backup.repo.repository import Repository, open_repo
from hadr_backup.repo.storage import ObjectInfo
from hadr_backup.ui import plural


@dataclass
class RepairResult:
    location: str
    kept: int = 0  # entries the catalog already had
    added: list[str] = field(default_factory=list)
    incomplete: dict[str, list[str]] = field(default_factory=dict)  # described, objects missing
    undescribed: list[str] = field(default_factory=list)  # folders neither described nor in the catalog
    leftovers_removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_VERIFY if self.incomplete or self.undescribed else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.location,
            "kept": self.kept,
            "added": self.added,
            "incomplete": self.incomplete,
            "undescribed": self.undescribed,
            "leftovers_removed": self.leftovers_removed,
            "notes": self.notes,
            "passed": self.exit_code == EXIT_OK,
        }

    def render(self, out) -> None:
        for note in self.notes:
            out.line(f"note: {note}")
        out.line(
            f"catalog of {self.location}: {self.kept} entr{'y' if self.kept == 1 else 'ies'} kept, "
            f"{plural(len(self.added), 'backup')} added back from their descriptions"
        )
        for backup_id in self.added:
            out.line(f"  added   {backup_id}")
        for backup_id, missing in self.incomplete.items():
            out.line(f"  PROBLEM {backup_id}: described, but {plural(len(missing), 'object')} missing: {missing[0]}")
        for prefix in self.undescribed:
            out.line(
                f"  PROBLEM {prefix}: objects without a description (an older or interrupted backup); left untouched"
            )
        if self.leftovers_removed:
            out.line(f"removed {plural(len(self.leftovers_removed), 'leftover')} of interrupted writes")


def run_repair_catalog(policy: Policy, now: float | None = None) -> RepairResult:
    now = time.time() if now is None else now
    with open_repo(policy, write=True, catalog=False) as repo:
        result = RepairResult(policy.repository.display)
        # 1. every backup folder, and the whole backups among them
        found = _described_backups(repo, _backup_folders(repo), result)

        # 2. add what the catalog lacks, keeping everything it has
        undescribed = list(result.undescribed)

        def add(catalog: Catalog) -> list[str]:
            result.kept = len(catalog.entries)
            result.notes = (
                []
                if catalog.loaded_from
                else ["there was no readable catalog: rebuilt it from the backups' descriptions"]
            )
            known = {entry.object_prefix for entry in catalog.entries}
            result.undescribed = [prefix for prefix in undescribed if prefix not in known]
            missing = [entry for entry in found if catalog.get(entry.id) is None]
            for entry in missing:
                catalog.add(entry)
            return [entry.id for entry in missing]

        result.added = repo.update_catalog(add, rebuild=True)
        # 3. leftovers of writes whose writer died
        result.leftovers_removed = _remove_leftovers(repo, now)
        return result


def _backup_folders(repo: Repository) -> dict[str, dict[str, ObjectInfo]]:
    folders: dict[str, dict[str, ObjectInfo]] = {}
    for info in repo.store.list(layout.BACKUPS):
        parsed = layout.parse_backup_key(info.key)
        if parsed:
            folders.setdefault(layout.backup_prefix(*parsed[:3]), {})[info.key] = info
    return folders


def _described_backups(
    repo: Repository, folders: dict[str, dict[str, ObjectInfo]], result: RepairResult
) -> list[BackupEntry]:
    whole = []
    for prefix, objects in sorted(folders.items()):
        description = prefix + layout.DESCRIPTION
        if description not in objects:
            result.undescribed.append(prefix)
            continue
        try:
            entry = BackupEntry.from_json(repo.read_json(description))
        except (HadrError, ValueError, TypeError, KeyError) as error:
            result.incomplete[prefix] = [f"{description} unreadable: {getattr(error, 'message', error)}"]
            continue
        missing = [o.key for o in entry.objects if o.key not in objects or objects[o.key].size != o.stored_size]
        if missing or entry.state != COMPLETE:
            result.incomplete[entry.id] = missing or [f"described as {entry.state}"]
            continue
        whole.append(entry)
    return whole


def _remove_leftovers(repo: Repository, now: float) -> list[str]:
    running = [e.object_prefix for e in repo.catalog.entries if e.state == RUNNING]
    removed = []
    for info in list(repo.store.list_temporary("")):
        if now - info.mtime > TEMP_GRACE and not any(info.key.startswith(p) for p in running):
            repo.store.delete_temporary(info)
            removed.append(f"{info.key} ({info.temp_id})")
    return removed
