"""One console facade with a JSON twin.

Results are values with two faces: ``to_json()`` (the stable machine API, printed on stdout with
``--json``) and ``render(out)`` (human output). Diagnostics go to stderr. Nothing else prints.
rich is imported only when a human table is drawn on a terminal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from hadr_backup.timefmt import rfc3339


class Result(Protocol):
    def to_json(self) -> dict[str, Any]: ...

    def render(self, out: Human) -> None: ...


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return rfc3339(value)
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


@dataclass
class Human:
    """Line-oriented human output; tables drawn with rich on a TTY, plain columns otherwise."""

    stream: Any = field(default_factory=lambda: sys.stdout)

    def line(self, text: str = "") -> None:
        self.stream.write(text + "\n")

    def kv(self, pairs: Sequence[tuple[str, Any]]) -> None:
        width = max((len(k) for k, _ in pairs), default=0)
        for key, value in pairs:
            self.line(f"{key.ljust(width)}  {value}")

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if self.stream.isatty():
            from rich.console import Console
            from rich.table import Table

            table = Table(title=title)
            for column in columns:
                table.add_column(column)
            for row in rows:
                table.add_row(*(str(c) for c in row))
            Console(file=self.stream).print(table)
            return
        cells = [list(map(str, columns))] + [[str(c) for c in row] for row in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
        if title:
            self.line(title)
        for row in cells:
            self.line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@dataclass
class UI:
    json_mode: bool = False
    verbosity: int = 0

    def render(self, result: Result) -> None:
        if self.json_mode:
            sys.stdout.write(json.dumps(result.to_json(), default=_default, indent=2) + "\n")
        else:
            result.render(Human())

    def info(self, message: str) -> None:
        """A progress or diagnostic line on stderr (hidden with -q)."""
        if self.verbosity >= 0:
            sys.stderr.write(message + "\n")

    def error(self, message: str) -> None:
        sys.stderr.write(f"hadr: error: {message}\n")
