"""A restored bucket checked against the state it was restored to.

The state at T (recomputed from the history) and the destination's current objects are merge-joined in
key order: every key of the state must be there with the same size and the same SHA-256, and no other
key may be. The destination's content is read back and hashed; the expected SHA-256 is the one the
mirror's manifest recorded, or the source version's content hashed. A key whose current version *is*
the version of T (an in-place restore leaves such keys alone) holds the same bytes by definition and
is not read. Reads run on a bounded pool; memory does not grow with the bucket.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hadr_backup.errors import IntegrityError
from hadr_backup.objectstore.streams import bounded_map, join_by_key
from hadr_backup.objectstore.versions import VersionRecord
from hadr_backup.timefmt import human_size

SHOWN = 10  # problems named in the result; all are counted


@dataclass
class Problem:
    key: str
    problem: str  # missing | extra | size | sha256 | unreadable
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "problem": self.problem, "detail": self.detail}


@dataclass
class Verification:
    objects: int = 0  # keys of the state at T found whole in the destination
    bytes: int = 0
    mismatches: int = 0
    problems: list[Problem] = field(default_factory=list)  # the first SHOWN

    @property
    def passed(self) -> bool:
        return self.mismatches == 0

    def add(self, problem: Problem) -> None:
        self.mismatches += 1
        if len(self.problems) < SHOWN:
            self.problems.append(problem)

    def to_json(self) -> dict[str, Any]:
        return {
            "objects": self.objects,
            "bytes": self.bytes,
            "mismatches": self.mismatches,
            "problems": [problem.to_json() for problem in self.problems],
            "passed": self.passed,
        }

    def summary(self) -> str:
        size = f"{self.bytes} bytes ({human_size(self.bytes)})"
        return f"verified: {self.objects} objects, {size}, {self.mismatches} mismatches"


def verify_restore(history, destination, state: Iterator[VersionRecord], workers: int, progress=None) -> Verification:
    """Check ``destination`` against ``state`` (the records of T, in key order); ``progress``: a
    progress.Progress told the number of keys checked."""
    verification = Verification()
    pairs = join_by_key(state, destination.current(), key_of=lambda record: record.key)
    checked = bounded_map(lambda pair: _check(history, destination, *pair), pairs, workers)
    for index, ((_key, expected, _actual), problem) in enumerate(checked, 1):
        if problem is not None:
            verification.add(problem)
        else:
            verification.objects += 1
            verification.bytes += expected.size
        if progress is not None:
            progress.update(index)
    return verification


def _check(history, destination, key: str, expected, actual) -> Problem | None:
    if actual is None:
        return Problem(key, "missing", f"absent from {destination.describe()}")
    if expected is None:
        return Problem(key, "extra", f"in {destination.describe()} but absent at the target time")
    if actual.size != expected.size:
        return Problem(key, "size", f"{actual.size} bytes, {expected.size} expected")
    if destination.in_place and actual.version_id == expected.version_id:
        return None  # the very version of T is current
    try:
        want = history.sha256(expected)
    except IntegrityError as error:
        return Problem(key, "unreadable", f"the {history.origin}'s content fails verification: {error.message}")
    try:
        have = destination.sha256(actual)
    except IntegrityError as error:  # what was read back disagrees with the destination's ETag or checksum
        return Problem(key, "sha256", error.message)
    if want != have:
        return Problem(key, "sha256", f"SHA-256 {have}, {want} expected")
    return None
