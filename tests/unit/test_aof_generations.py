"""The generations an AOF archive state records (aofgenerations.py): pure functions over the state."""

from __future__ import annotations

from hadr_backup.redis.aoffiles import parse_manifest
from hadr_backup.redis.aofgenerations import generations, note_generation


def manifest(*lines: str):
    return parse_manifest("".join(f"file {line}\n" for line in lines))


def state_after(*manifests) -> dict:
    """The state the archive leaves after seeing ``manifests`` one run each (time = run number)."""
    state: dict = {"files": {}, "manifest": ""}
    for run, seen in enumerate(manifests, 1):
        for aof_file in seen.files:
            state["files"].setdefault(aof_file.name, {"seq": aof_file.seq})
        state["manifest"] = seen.text
        note_generation(state, seen, float(run))
    return state


GEN1 = manifest("a.aof.1.base.rdb seq 1 type b", "a.aof.1.incr.aof seq 1 type i")
DURING = manifest("a.aof.1.base.rdb seq 1 type b", "a.aof.1.incr.aof seq 1 type i", "a.aof.2.incr.aof seq 2 type i")
GEN2 = manifest(
    "a.aof.2.base.rdb seq 2 type b",
    "a.aof.1.base.rdb seq 1 type h",
    "a.aof.1.incr.aof seq 1 type h",
    "a.aof.2.incr.aof seq 2 type i",
)
GEN3 = manifest(
    "a.aof.3.base.rdb seq 3 type b",
    "a.aof.2.base.rdb seq 2 type h",
    "a.aof.2.incr.aof seq 2 type h",
    "a.aof.3.incr.aof seq 3 type i",
)


def test_each_base_seen_is_a_generation_oldest_first_the_last_manifests_current() -> None:
    found = generations(state_after(GEN1, GEN2, GEN3))
    assert [(g.base, g.incrs, g.current) for g in found] == [
        ("a.aof.1.base.rdb", ("a.aof.1.incr.aof",), False),
        ("a.aof.2.base.rdb", ("a.aof.2.incr.aof",), False),
        ("a.aof.3.base.rdb", ("a.aof.3.incr.aof",), True),
    ]
    assert [(g.first_seen, g.last_seen) for g in found] == [(1.0, 1.0), (2.0, 2.0), (3.0, 3.0)]


def test_an_incr_file_seen_during_a_rewrite_belongs_to_the_new_generation() -> None:
    """A run between the new incr file's opening and the rewrite's end sees it next to the old base."""
    state = state_after(GEN1, DURING, GEN2)
    assert [(g.base, g.incrs) for g in generations(state)] == [
        ("a.aof.1.base.rdb", ("a.aof.1.incr.aof",)),
        ("a.aof.2.base.rdb", ("a.aof.2.incr.aof",)),
    ]
    assert state["generations"]["a.aof.1.base.rdb"] == {
        "incrs": ["a.aof.1.incr.aof"],
        "first_seen": 1.0,
        "last_seen": 2.0,
    }


def test_a_state_without_generations_knows_the_current_one_only() -> None:
    state = {"files": {}, "manifest": GEN2.text}
    assert [(g.base, g.incrs, g.current, g.first_seen) for g in generations(state)] == [
        ("a.aof.2.base.rdb", ("a.aof.2.incr.aof",), True, None)
    ]
    assert generations({"files": {}, "manifest": ""}) == []


def test_a_generation_never_seen_current_is_not_known() -> None:
    """Two rewrites between runs: generation 2's files are history in the manifest, its incr list unknown."""
    both = manifest(
        "a.aof.3.base.rdb seq 3 type b",
        "a.aof.2.base.rdb seq 2 type h",
        "a.aof.1.base.rdb seq 1 type h",
        "a.aof.1.incr.aof seq 1 type h",
        "a.aof.2.incr.aof seq 2 type h",
        "a.aof.3.incr.aof seq 3 type i",
    )
    assert [g.base for g in generations(state_after(GEN1, both))] == ["a.aof.1.base.rdb", "a.aof.3.base.rdb"]
