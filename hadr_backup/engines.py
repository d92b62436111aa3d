"""Source engines: one protocol for every kind of source, and the registry of those that exist.

A policy names sources by section (``sources.postgres``, ``sources.redis``, ``sources.buckets``); the
catalog names backups by kind. An engine knows, for its kind, how to back a source up, restore it to a
target, report its restorable window ("consistent from .. to"), say what a kept backup needs (so that
retention never orphans WAL, AOF or manifests) and verify what it stored. The CLI, the scheduler and
drills call the same functions with one calling convention — an ``EngineContext`` (policy, ui,
injectable clock) and the command's options — and get a result value with ``to_json`` and ``render``.

Kinds without an engine yet are known (a policy may list their sources) and reported as such.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hadr_backup.errors import UsageError
from hadr_backup.policy.model import Policy

# kind -> (policy section, title); every kind a policy can name, engine or not
KINDS: dict[str, tuple[str, str]] = {
    "pg": ("postgres", "PostgreSQL"),
    "redis": ("redis", "Redis"),
    "s3": ("buckets", "S3 buckets"),
}
# kind -> module whose ENGINE implements it
_ENGINES = {
    "pg": "hadr_backup.postgres.engine",
    "redis": "hadr_backup.redis.engine",
    "s3": "hadr_backup.objectstore.engine",
}


@dataclass(frozen=True)
class EngineContext:
    """What every engine call receives besides its options."""

    policy: Policy
    ui: Any = None  # ui.UI, for progress lines on stderr; None when nobody is watching
    clock: Callable[[], float] = time.time

    def say(self, message: str) -> None:
        if self.ui is not None:
            self.ui.info(message)


@dataclass(frozen=True)
class Needs:
    """What a kept backup needs in the repository: its own objects, plus the shared stream it is rolled
    forward with (WAL, AOF) from ``stream_from`` on, under ``stream_prefix``."""

    objects: tuple[str, ...]
    stream_prefix: str | None = None
    stream_from: str | None = None
    stream_keys: tuple[str, ...] = field(default=())  # stream objects it cannot be restored without


class Engine(Protocol):
    kind: str
    section: str
    title: str

    def sources(self, policy: Policy) -> Sequence[Any]:
        """The sources of this kind the policy lists."""

    def backup(self, ctx: EngineContext, source_name: str | None) -> Any:
        """Take one backup of ``source_name`` (None: the only source of this kind) -> a result value."""

    def restore(self, ctx: EngineContext, options: Any) -> Any:
        """Restore to the target in ``options`` -> a result value; proves before it writes."""

    def windows(self, repo, source_name: str, now: float) -> list[Any]:
        """Where a restore target can fall: values with ``to_json`` and ``describe``."""

    def status(self, repo, source_name: str, now: float) -> Any | None:
        """Kind-specific state for ``hadr info`` (e.g. archive lag): a value with ``to_json``."""

    def describe(self, entry) -> list[tuple[str, str]]:
        """What ``hadr list`` shows of a backup of this kind besides id, state, times and sizes: (column,
        value) pairs, e.g. PostgreSQL's timeline, LSN and WAL ranges; none when the entry lacks them."""

    def needs(self, entry) -> Needs:
        """What the catalog entry ``entry`` needs to stay restorable."""

    def verify(self, repo, source_name: str, report, deep: bool) -> None:
        """Add findings about what this source stored to ``report``."""

    def check(self, ctx: EngineContext, source_name: str, timeout: float) -> Any:
        """Prove that the source's path into the repository works (``hadr check``) -> a Report, one
        finding per check; ``timeout``: seconds a change made now may take to reach the repository."""

    def meta_json(self, entry) -> dict[str, Any]:
        """The kind-specific ``meta`` of the catalog entry ``entry`` as ``--json`` shows it (``hadr list``)."""


def find(kind: str) -> Engine | None:
    """The engine of ``kind``; None for a known kind that has none yet."""
    if kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}", hint=f"known kinds: {', '.join(KINDS)}")
    module = _ENGINES.get(kind)
    return importlib.import_module(module).ENGINE if module else None


def engine(kind: str) -> Engine:
    found = find(kind)
    if found is None:
        raise UsageError(
            f"hadr cannot back up or restore {KINDS[kind][1]} sources yet",
            hint=f"the policy may list sources.{KINDS[kind][0]}; they are shown by `hadr info`",
        )
    return found


def configured(policy: Policy) -> list[tuple[str, Any]]:
    """Every (kind, source) the policy lists, in kind order."""
    return [(kind, source) for kind, (section, _title) in KINDS.items() for source in getattr(policy.sources, section)]
