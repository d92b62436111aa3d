"""What ``hadr restore s3`` did, as a value: counts of what it wrote and deleted, and the verification."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from hadr_backup.objectstore.destination import COPIED, STREAMED
from hadr_backup.objectstore.verifyrestore import Verification
from hadr_backup.timefmt import format_time, human_size, rfc3339

UNREADABLE = "unreadable: "
ORIGINS = {"source": "the bucket's own versions", "mirror": "the mirror's manifests (hadr backup s3)"}


@dataclass
class Counts:
    """The state at T, and what the restore wrote, deleted and left alone (or would, in a dry run)."""

    objects: int = 0  # keys present at T
    bytes: int = 0
    written: int = 0
    written_bytes: int = 0
    copied: int = 0  # of the written: server-side copies of the source version
    streamed: int = 0  # of the written: content read and sent
    deleted: int = 0
    unchanged: int = 0  # in place: keys whose current version is already the version of T
    unreadable: list[str] = field(default_factory=list)  # "key: why" for content that failed verification

    @property
    def changed(self) -> int:
        return self.written + self.deleted

    def add(self, action, outcome: str | None) -> None:
        if action.kind == "delete":
            self.deleted += 1
            return
        self.objects += 1
        self.bytes += action.record.size
        if action.kind == "keep":
            self.unchanged += 1
        elif outcome and outcome.startswith(UNREADABLE):
            self.unreadable.append(f"{action.key}: {outcome[len(UNREADABLE) :]}")
        else:
            self.written += 1
            self.written_bytes += action.record.size
            self.copied += outcome == COPIED
            self.streamed += outcome == STREAMED

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class S3RestoreResult:
    source: str
    bucket: str
    target_time: float
    origin: str  # source | mirror
    mode: str  # bucket | in-place
    to_bucket: str
    to_prefix: str
    dry_run: bool
    window: Any  # history.Window
    warnings: list[str]
    counts: Counts = field(default_factory=Counts)
    created_bucket: bool = False
    verification: Verification | None = None
    undo_time: float | None = None  # in place: the --target-time that undoes this restore
    seconds: float = 0.0

    @classmethod
    def begin(cls, source, options, at, origin, destination, window, warnings) -> S3RestoreResult:
        return cls(
            source=source,
            bucket=options.bucket,
            target_time=at,
            origin=origin,
            mode="in-place" if options.in_place else "bucket",
            to_bucket=destination.bucket,
            to_prefix=destination.prefix,
            dry_run=options.dry_run,
            window=window,
            warnings=warnings,
        )

    @property
    def exit_code(self) -> int:
        failed = self.counts.unreadable or (self.verification is not None and not self.verification.passed)
        return 3 if failed else 0

    def undo_command(self) -> str | None:
        if self.undo_time is None:
            return None
        words = ["hadr", "restore", "s3", "--source", self.source, "--bucket", self.bucket, "--in-place"]
        return shlex.join([*words, "--target-time", rfc3339(self.undo_time)])

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "bucket": self.bucket,
            "target_time": rfc3339(self.target_time),
            "origin": self.origin,
            "mode": self.mode,
            "to_bucket": self.to_bucket,
            "to_prefix": self.to_prefix,
            "dry_run": self.dry_run,
            "created_bucket": self.created_bucket,
            "window": self.window.to_json(),
            "counts": self.counts.to_json(),
            "verification": self.verification.to_json() if self.verification else None,
            "undo_time": rfc3339(self.undo_time),
            "undo_command": self.undo_command(),
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
            "passed": self.exit_code == 0,
        }

    def render(self, out) -> None:
        counts = self.counts
        for warning in self.warnings:
            out.line(f"warning: {warning}")
        where = f"s3://{self.to_bucket}/{self.to_prefix}" + (" (in place)" if self.mode == "in-place" else "")
        verb = "would restore" if self.dry_run else "restored"
        out.line(f"{verb} s3://{self.bucket} (source {self.source}) as of {format_time(self.target_time)}")
        out.kv(
            [
                ("from", f"{ORIGINS[self.origin]}; restorable {self.window.describe()}"),
                ("into", where + (" (new bucket)" if self.created_bucket else "")),
                ("at the target", f"{counts.objects} objects, {human_size(counts.bytes)}"),
                (
                    "would write" if self.dry_run else "written",
                    f"{counts.written} objects, {counts.written_bytes} bytes ({human_size(counts.written_bytes)})"
                    + ("" if self.dry_run else f"; {counts.copied} copied server-side, {counts.streamed} streamed"),
                ),
                ("would delete" if self.dry_run else "deleted", f"{counts.deleted} keys absent at the target"),
                ("unchanged", f"{counts.unchanged} keys already at the version of the target"),
            ]
        )
        for unreadable in counts.unreadable[:10]:
            out.line(f"unreadable: {unreadable}")
        if self.verification is not None:
            out.line(self.verification.summary())
            for problem in self.verification.problems:
                out.line(f"  {problem.problem}: {problem.key}: {problem.detail}")
        if self.undo_command():
            out.line(f"undo with: {self.undo_command()}")
        if self.dry_run:
            out.line("dry run: nothing was written")
