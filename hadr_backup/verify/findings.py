"""Verification results are values: the report and the cutover gate decide what is fatal."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hadr_backup.errors import EXIT_OK, EXIT_VERIFY, HadrError, IntegrityError
from hadr_backup.ui import plural

OK, WARNING, ERROR = "ok", "warning", "error"
SKIPPED = "skipped"  # not checked, because something it depends on failed or is missing


@dataclass(frozen=True)
class Finding:
    level: str  # ok | warning | error
    code: str  # stable machine name, e.g. object-missing, checksum-mismatch, wal-gap
    subject: str  # what it is about (backup id, object key, segment name)
    message: str
    hint: str = ""  # what to do about it

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.hint:
            del data["hint"]
        return data

    def describe(self) -> str:
        return f"{self.subject}: {self.message}" + (f" — {self.hint}" if self.hint else "")


@dataclass
class Report:
    title: str
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    def add(self, level: str, code: str, subject: str, message: str, hint: str = "") -> None:
        self.findings.append(Finding(level, code, subject, message, hint))

    def count(self, what: str, n: int = 1) -> None:
        self.checked[what] = self.checked.get(what, 0) + n

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level == ERROR]

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.passed else EXIT_VERIFY

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "passed": self.passed,
            "checked": self.checked,
            "findings": [f.to_json() for f in self.findings if f.level != OK],
        }

    def render(self, out) -> None:
        for finding in self.findings:
            out.line(f"{finding.level.upper():7} {finding.code}: {finding.describe()}")
        verdict = "PASSED" if self.passed else f"FAILED ({plural(len(self.problems), 'problem')})"
        out.line(f"{self.title}: {verdict} — checked {self.checked_text()}")

    def checked_text(self) -> str:
        """``2 backups, 4 objects, 1 WAL object backups need`` from the counts (snake_case plural keys)."""
        labels = []
        for what, n in self.checked.items():
            words = what.replace("_", " ").replace("wal ", "WAL ")
            labels.append(f"{n} {words[:-1] if n == 1 and words.endswith('s') else words}")
        return ", ".join(labels) or "nothing"


def read_through(repo, key: str, sha256: str | None, subject: str, report: Report) -> None:
    """Read ``key`` back through the pipeline (every chunk authenticated, and its SHA-256 when given);
    what fails becomes a finding."""
    try:
        for _ in repo.read_object(key, sha256=sha256):
            pass
    except IntegrityError as error:
        report.add(ERROR, "corrupt-object", subject, f"{key}: {error.message}")
    except HadrError as error:
        report.add(ERROR, "unreadable-object", subject, f"{key}: {error.message}")
