"""The generations of an AOF archive: one per base file, with the incr files Redis appended after it.

A rewrite (``BGREWRITEAOF``, or the automatic one) opens a new incr file, then forks the child that writes
the new base: the new base holds everything the older files hold, and the new incr file what came after
the fork. The older base and incr files become history, and that generation is closed. Each of them
restores to the second on its own: its base and its incr files in sequence order.

``hadr archive redis`` records in its state (``generations``, written by the same compare-and-swap save
as the manifest) per base file the incr files the last manifest naming it as its base listed, and when
that generation was first and last seen. A file a newer manifest lists as an incr file belongs to the
newer generation (a run between the new incr file's opening and the end of the rewrite saw it next to
the old base): it leaves the older one. The current generation is always the last manifest's.

A state written before generations were recorded knows the current generation only; one the archive
never saw current (two rewrites between runs) is archived but not known, so not restorable to the second.
"""

from __future__ import annotations

from dataclasses import dataclass

from hadr_backup.redis import aoffiles
from hadr_backup.redis.aoffiles import BASE, INCR, Manifest


@dataclass(frozen=True)
class Generation:
    """A base file and the incr files Redis appended after it, in sequence order."""

    base: str
    incrs: tuple[str, ...]
    current: bool  # the last archived manifest's generation (its last incr file still grows)
    first_seen: float | None = None  # when an archive run first saw it current; None: not recorded
    last_seen: float | None = None


def note_generation(state: dict, manifest: Manifest, now: float) -> None:
    """Record the generation ``manifest`` names in ``state`` (before the state is saved with it)."""
    base, incrs = _of(manifest)
    if base is None:
        return
    known = state.setdefault("generations", {})
    for name, other in known.items():
        if name != base:  # an incr file of the newer generation is not the older one's
            other["incrs"] = [i for i in other["incrs"] if i not in incrs]
    mine = known.setdefault(base, {"incrs": [], "first_seen": now})
    mine["incrs"], mine["last_seen"] = list(incrs), now


def generations(state: dict) -> list[Generation]:
    """Every generation the archive state knows, oldest first; the last one is the current one (the last
    manifest's: as it says, also for a state written before generations were recorded)."""
    base, incrs = _of(aoffiles.parse_manifest(state.get("manifest") or ""))
    known = state.get("generations") or {}
    found = [
        Generation(name, tuple(record["incrs"]), False, record.get("first_seen"), record.get("last_seen"))
        for name, record in known.items()
        if name != base
    ]
    found.sort(key=lambda g: _seq(state, g.base))
    if base is not None:
        record = known.get(base, {})
        found.append(Generation(base, incrs, True, record.get("first_seen"), record.get("last_seen")))
    return found


def _of(manifest: Manifest) -> tuple[str | None, tuple[str, ...]]:
    """The base a manifest names and its incr files in sequence order."""
    bases = [f.name for f in manifest.files if f.type == BASE]
    incrs = tuple(f.name for f in sorted(manifest.files, key=lambda f: f.seq) if f.type == INCR)
    return (bases[0] if bases else None), incrs


def _seq(state: dict, name: str) -> int:
    return int(state.get("files", {}).get(name, {}).get("seq", 0))
