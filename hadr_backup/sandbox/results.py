"""What ``hadr sandbox up|down|status|load`` return: one object for the human rendering and the JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hadr_backup.sandbox.seed import Problem
from hadr_backup.ui import plural


@dataclass
class Component:
    name: str  # postgres-<source>, redis-<source>, s3-<source>
    kind: str
    port: int
    running: bool
    pid: int | None
    counts: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``counts`` holds numbers only; ``counts_error`` says why a running component could not be counted."""
        counts = {k: v for k, v in self.counts.items() if k != "error"}
        return {**asdict(self), "counts": counts, "counts_error": self.counts.get("error")}


def _render_components(out: Any, components: list[Component]) -> None:
    rows = [(c.name, "running" if c.running else "stopped", c.pid or "-", c.port) for c in components]
    out.table("", ["component", "state", "pid", "port"], rows)
    for component in components:
        if component.counts:
            out.line(f"{component.name}: " + ", ".join(f"{k} {v}" for k, v in component.counts.items()))


def _render_problems(out: Any, problems: list[Problem] | None) -> None:
    if problems is None:
        out.line("invariants: not checked (the sandbox is not fully running)")
    elif not problems:
        out.line("invariants: ok (ledger, data items, queues)")
    else:
        out.line(f"invariants: {plural(len(problems), 'problem')}")
        for problem in problems[:50]:
            out.line(f"  {problem}")


@dataclass
class SandboxUp:
    dir: Path
    policy: str
    seeded: bool
    restored_objects: int
    components: list[Component]
    warnings: list[str] = field(default_factory=list)
    export: str = ""  # the shell line that points the other commands at the policy

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "dir": str(self.dir), "components": [c.to_json() for c in self.components]}

    def render(self, out: Any) -> None:
        what = "seeded a fresh stack" if self.seeded else "existing data kept"
        out.line(f"sandbox up in {self.dir} ({what}; policy {self.policy})")
        _render_components(out, self.components)
        for warning in self.warnings:
            out.line(f"warning: {warning}")
        out.line("point the other hadr commands at the sandbox with:")
        out.line(self.export)  # the last line, so that `hadr sandbox up | tail -n 1` is that line


@dataclass
class SandboxDown:
    dir: Path
    stopped: list[str]
    purged: bool
    saved_objects: int

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "dir": str(self.dir)}

    def render(self, out: Any) -> None:
        stopped = f"stopped {', '.join(self.stopped)}" if self.stopped else "nothing was running"
        saved = f" ({self.saved_objects} S3 objects saved)" if self.saved_objects else ""
        kept = "folder removed" if self.purged else f"data kept{saved}"
        out.line(f"sandbox down in {self.dir}: {stopped}; {kept}")


@dataclass
class SandboxStatus:
    dir: Path
    policy: str
    seeded: bool
    components: list[Component]
    problems: list[Problem] | None  # None: not checked

    def to_json(self) -> dict[str, Any]:
        problems = None if self.problems is None else [p.to_json() for p in self.problems]
        return {
            "dir": str(self.dir),
            "policy": self.policy,
            "seeded": self.seeded,
            "running": all(c.running for c in self.components),
            "components": [c.to_json() for c in self.components],
            "problems": problems,
        }

    def render(self, out: Any) -> None:
        out.line(f"sandbox {self.dir} (policy {self.policy}{'' if self.seeded else ', not seeded'})")
        _render_components(out, self.components)
        _render_problems(out, self.problems)


@dataclass
class SandboxLoad:
    dir: Path
    seconds: float
    rate: float
    elapsed: float
    interrupted: bool
    counts: dict[str, int]
    problems: list[Problem]

    @property
    def exit_code(self) -> int:
        return 3 if self.problems else 0

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "dir": str(self.dir),
            "problems": [p.to_json() for p in self.problems],
            "passed": self.exit_code == 0,
        }

    def render(self, out: Any) -> None:
        how = "interrupted" if self.interrupted else "done"
        out.line(f"load {how} after {self.elapsed:.1f} s (asked {self.seconds:g} s at {self.rate:g} op/s)")
        out.kv(sorted(self.counts.items()))
        _render_problems(out, self.problems)
