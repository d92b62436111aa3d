"""The windows an AOF archive restores to: one per generation (aofgenerations.py) whose files are archived.

A generation restores to every second from its base's time (the RDB ``ctime`` of its preamble, or the first
``#TS:`` of an ``.aof`` base: the rewrite's fork, before which the base holds everything) to:

* the current generation: the last archived ``#TS:`` annotation (the last second may be partial when a pass
  ran mid-second);
* a closed one: the last ``#TS:`` of its last incr file, when the incr file after it (the next generation's
  first) begins with an annotation. When it begins with a command, that command is of the same second
  (Redis annotates only the first command of each second), so the rewrite's fork fell inside that second
  and the closed generation holds it only in part: it ends a second earlier. Without the next incr file
  archived it ends a second earlier too.

So adjacent generations touch or overlap (the new base's time is the fork's second), and a restore takes
the newest generation whose window covers the target. A closed generation is offered only when its base is
archived whole and every incr file to its end (a history file is archived whole); none with a file a prune
removed (``pruned`` in the state, marked before its pieces go).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hadr_backup.errors import HadrError
from hadr_backup.redis.aofarchive import archived_state
from hadr_backup.redis.aofgenerations import Generation, generations
from hadr_backup.redis.aofrestore import (
    BASE_NAME,
    AofChain,
    archived_file,
    head_bytes,
    head_time,
    last_timestamp,
)
from hadr_backup.timefmt import format_time, rfc3339
from hadr_backup.ui import plural


@dataclass(frozen=True)
class AofWindow:
    """A generation of the AOF archive restores to any second of [its base's time, its end]."""

    start: int
    end: int
    base: str
    incrs: int = 0  # how many incr files follow the base
    current: bool = True  # the last archived manifest's generation; False: closed by a rewrite

    def to_json(self) -> dict[str, Any]:
        return {"kind": "aof", "start": rfc3339(self.start), "end": rfc3339(self.end), "base": self.base}

    def describe(self) -> str:
        span = f"from {format_time(self.start)} to {format_time(self.end)}"
        what = "the current generation" if self.current else "a generation closed by a rewrite"
        return f"AOF archive: {span}, to the second ({what}: base {self.base} and {plural(self.incrs, 'incr file')})"


@dataclass
class AofChains:
    """The restorable generations of a source's AOF archive, oldest first."""

    chains: list[AofChain] = field(default_factory=list)
    unreadable: list[tuple[Generation, HadrError]] = field(default_factory=list)  # oldest first

    @property
    def windows(self) -> list[AofWindow]:
        return [AofWindow(c.start, c.end, c.base.name, len(c.incrs), c.current) for c in self.chains]

    @property
    def current(self) -> AofChain | None:
        """The last archived manifest's generation, when it is restorable (what --latest restores)."""
        return self.chains[-1] if self.chains and self.chains[-1].current else None

    @property
    def end(self) -> int | None:
        return max((c.end for c in self.chains), default=None)

    def covering(self, second: int) -> AofChain | None:
        """The newest generation whose window covers ``second``."""
        return next((c for c in reversed(self.chains) if c.covers(second)), None)

    def describe(self) -> str:
        return "; ".join(w.describe() for w in self.windows)


def load_chains(repo, source: str) -> AofChains:
    """Every restorable generation of ``source``'s AOF archive; one whose files cannot be read is listed in
    ``unreadable`` (a restore that would need it says why, `verify repo` reports it)."""
    found = AofChains()
    state = archived_state(repo, source)
    if not state:
        return found
    records = state.get("files", {})
    for generation in generations(state):
        try:
            chain = _chain(repo, source, records, generation)
        except HadrError as error:
            found.unreadable.append((generation, error))
            continue
        if chain is not None:
            found.chains.append(chain)
    return found


def _chain(repo, source: str, records: dict, generation: Generation) -> AofChain | None:
    """The generation as a chain; None when it is not restorable (a file missing, pruned, not archived to
    its end, or no time to start from)."""
    if not _archived(generation, records):
        return None
    base = archived_file(generation.base, records[generation.base])
    incrs = tuple(archived_file(name, records.get(name)) for name in generation.incrs)
    start = head_time(repo, source, base)
    if start is None:
        return None
    last = last_timestamp(repo, source, incrs)
    end = max(start, last or start)
    if not generation.current:
        end = _closed_end(repo, source, records, base, incrs, end)
    if end < start:
        return None
    return AofChain(source, base, incrs, start, end, generation.current)


def _archived(generation: Generation, records: dict) -> bool:
    """The base archived whole; no file pruned; a closed generation's incr files archived to their end."""
    base = records.get(generation.base)
    if not BASE_NAME.match(generation.base) or not base or not base.get("complete") or base.get("pruned"):
        return False
    incrs = [records.get(name) for name in generation.incrs]
    if any(record is not None and record.get("pruned") for record in incrs):
        return False
    return generation.current or all(record is not None and record.get("complete") for record in incrs)


def _closed_end(repo, source: str, records: dict, base, incrs: tuple, last: int) -> int:
    """A closed generation holds its last second whole only when the next incr file begins with a ``#TS:``
    annotation (a later second); otherwise it ends a second earlier."""
    if not incrs:
        return last - 1
    prefix = BASE_NAME.match(base.name)["prefix"]
    name = f"{prefix}.{incrs[-1].seq + 1}.incr.aof"
    record = records.get(name)
    if not record or record.get("pruned") or not record.get("pieces"):
        return last - 1
    return last if head_bytes(repo, source, archived_file(name, record), 4) == b"#TS:" else last - 1
