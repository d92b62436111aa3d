"""Point-in-time restore across AOF rewrites on real redis-server processes: a key written every ~150 ms
for ~9 s, BGREWRITEAOF twice in the middle, `hadr archive redis` between; `hadr info` shows one window per
generation (touching or overlapping); restores to seconds T in the first, middle and last generation each
equal the oracle at second granularity and use that generation's base; `verify repo` (quick and --deep)
passes on the three generations and reports a missing piece of the first one, whose restore then fails
naming it. A generation a prune removed is no longer offered, and a T in it exits 2 with the windows; a
state written before generations were recorded offers its current generation only."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from hadr_backup.policy.load import load_policy
from hadr_backup.repo import layout
from hadr_backup.repo.repository import open_repo
from tests.helpers import hadr_cli
from tests.integration.test_prune_servers import KEEP_TWO, verify_passes, with_retention
from tests.integration.test_redis_aof_archive import SOURCE, archivable, archive, policy, rewrite
from tests.integration.test_redis_pitr import Writer, keys_in, restore, run_writer_archiving, utc
from tests.schema_check import assert_schema


def aof_windows(policy_file: Path) -> list[dict]:
    info = assert_schema("info", hadr_cli(policy_file, "--json", "info", check=True).stdout)
    return [w for s in info["sources"] for w in s["restorable_window"] if w["kind"] == "aof"]


def second_of(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def three_generations(server, policy_file: Path) -> Writer:
    """The writer runs ~9 s; archive runs every ~1.5 s, a rewrite (then an archive run) at ~3 s and ~6 s."""
    writer = Writer(server.client(), seconds=9)
    writer.start()
    began = time.monotonic()
    for at, rewrites in ((1.5, False), (3.0, True), (4.5, False), (6.0, True), (7.5, False)):
        time.sleep(max(0.0, began + at - time.monotonic()))
        if rewrites:
            rewrite(server)
        archive(policy_file)
    writer.join()
    archive(policy_file)  # everything written is archived
    return writer


def state_of(policy_file: Path) -> dict:
    with open_repo(load_policy(str(policy_file))) as repo:
        state, _token = repo.read_json_versioned(layout.aof_state(SOURCE))
    return state


def assert_equals_oracle(writer: Writer, keys: set[str], second: int) -> None:
    assert writer.must_hold(second) <= keys, f"T={second}: missing {writer.must_hold(second) - keys}"
    assert not keys & writer.must_lack(second), f"T={second}: later writes {keys & writer.must_lack(second)}"
    straddling = set(writer.written) - writer.must_hold(second) - writer.must_lack(second)
    assert len(straddling) <= 1  # only a write across the boundary T|T+1 may go either way


def test_every_generation_restores_to_the_second_and_verifies(redis_factory, tmp_path: Path) -> None:
    server = archivable(redis_factory)
    policy_file = policy(tmp_path, server)
    writer = three_generations(server, policy_file)
    state = state_of(policy_file)
    assert len(state["generations"]) == 3 and all(g["incrs"] for g in state["generations"].values())

    # 1. one window per generation, oldest first, each touching or overlapping the next
    windows = aof_windows(policy_file)
    assert [w["base"] for w in windows] == [f"appendonly.aof.{n}.base.rdb" for n in (1, 2, 3)], windows
    bounds = [(second_of(w["start"]), second_of(w["end"])) for w in windows]
    for (_start, end), (next_start, _end) in zip(bounds, bounds[1:], strict=False):
        assert next_start <= end + 1, bounds
    human = hadr_cli(policy_file, "info", check=True).stdout
    assert human.count("a generation closed by a rewrite") == 2 and human.count("the current generation") == 1

    # 2. seconds T only the older generation covers restore from it, equal to the oracle; so do later ones
    clean = sorted({before for before, after in writer.written.values() if before == after})
    only_in = []  # per generation, the seconds of writes it alone covers
    for index, (start, end) in enumerate(bounds):
        later_start = bounds[index + 1][0] if index + 1 < len(bounds) else end + 1
        only_in.append([s for s in clean if start <= s <= end and s < later_start])
        assert only_in[-1], f"generation {index + 1} {start}..{end}: no clean write second in it ({clean})"
        for second in sorted({only_in[-1][0], only_in[-1][-1]}):
            to = tmp_path / f"at-{second}"
            restored = restore(policy_file, to, "--target-time", utc(second))
            assert restored["from"] == "aof" and restored["files"][0] == windows[index]["base"], restored
            assert restored["reached"].startswith(utc(second).replace(" ", "T"))
            keys = keys_in(to, "appendonly.aof")
            assert_equals_oracle(writer, keys, second)
            assert restored["keys"] == {"db0": len(keys)}
    restore(policy_file, tmp_path / "latest", "--latest")
    assert keys_in(tmp_path / "latest", "appendonly.aof") == set(writer.written)

    # 3. verify: quick and deep pass, each generation assembled and checked by redis-check-aof
    verify_passes(policy_file)
    deep = assert_schema("verify-repo", hadr_cli(policy_file, "--json", "verify", "repo", "--deep", check=True).stdout)
    assert deep["checked"]["aof_chains_checked"] == 3 and deep["checked"]["aof_generations_closed"] == 2
    assert deep["findings"] == []

    # 4. a missing piece of the first generation: reported (exit 3); a restore into it fails naming it
    first_incr = state["generations"]["appendonly.aof.1.base.rdb"]["incrs"][0]
    start, end, _sha = state["files"][first_incr]["pieces"][0]
    key = layout.aof_piece(SOURCE, first_incr, start, end)
    (tmp_path / "repo" / key).unlink()
    done = hadr_cli(policy_file, "--json", "verify", "repo")
    assert done.returncode == 3, done.stdout
    findings = assert_schema("verify-repo", done.stdout)["findings"]
    assert [(f["code"], f["subject"]) for f in findings if f["level"] == "error"] == [("aof-piece-missing", key)]
    to = tmp_path / "after-damage"
    done = restore(policy_file, to, "--target-time", utc(only_in[0][-1]), expect=1)
    assert key.rsplit("/", 1)[-1] in done.stderr and "damaged or missing" in done.stderr, done.stderr
    assert not to.exists()

    # 5. its last piece missing too: the generation cannot be read, so it is no window; the others still are,
    # and a restore into it fails naming the piece instead of falling back
    start, end, _sha = state["files"][first_incr]["pieces"][-1]
    last_key = layout.aof_piece(SOURCE, first_incr, start, end)
    (tmp_path / "repo" / last_key).unlink()
    assert [w["base"] for w in aof_windows(policy_file)] == [w["base"] for w in windows[1:]]
    done = restore(policy_file, to, "--target-time", utc(only_in[0][-1]), expect=1)
    assert "appendonly.aof.1.base.rdb cannot be read" in done.stderr, done.stderr
    assert last_key.rsplit("/", 1)[-1] in done.stderr and not to.exists()
    deep = hadr_cli(policy_file, "--json", "verify", "repo", "--deep")
    findings = assert_schema("verify-repo", deep.stdout)["findings"]
    assert deep.returncode == 3 and {f["code"] for f in findings if f["level"] == "error"} == {"aof-piece-missing"}


def test_a_pruned_generation_is_not_offered_and_a_target_in_it_exits_2(redis_factory, tmp_path: Path) -> None:
    server = archivable(redis_factory)
    policy_file = policy(tmp_path, server)
    with_retention(policy_file, {**KEEP_TWO, "min_full": 1})
    # 1. generation 1 written and archived; a quiet second; a rewrite; generation 2 written, a snapshot in it
    first = run_writer_archiving(server, policy_file, seconds=2.5, archive_every=1.0)
    time.sleep(1.1)
    rewrite(server)
    run_writer_archiving(server, policy_file, seconds=1.5, archive_every=1.0)
    hadr_cli(policy_file, "backup", "redis", check=True)
    time.sleep(1.1)  # base 3 begins a second after the snapshot: the snapshot needs generation 2
    rewrite(server)
    archive(policy_file)
    old_window, *_ = aof_windows(policy_file)
    assert old_window["base"] == "appendonly.aof.1.base.rdb"
    # the next incr file begins with a later #TS: the closed generation holds its last second whole
    last_write = max(first.written.values())
    assert last_write[0] <= second_of(old_window["end"]) <= last_write[1], old_window
    target = utc(max(before for before, after in first.written.values() if before == after))
    assert restore(policy_file, tmp_path / "before-prune", "--target-time", target)["files"][0] == old_window["base"]

    # 2. the prune keeps the snapshot and what rolls it forward: generation 1 goes, and is not offered
    hadr_cli(policy_file, "prune", check=True)
    assert state_of(policy_file)["files"]["appendonly.aof.1.base.rdb"].get("pruned")
    bases = [w["base"] for w in aof_windows(policy_file)]
    assert bases == ["appendonly.aof.2.base.rdb", "appendonly.aof.3.base.rdb"], bases
    verify_passes(policy_file)

    # 3. a target in it: no window, no snapshot at or before it: exit 2 naming the windows, nothing written
    untouched = tmp_path / "untouched"
    untouched.mkdir()
    done = restore(policy_file, untouched, "--target-time", target, expect=2)
    assert "before the oldest snapshot" in done.stderr and "appendonly.aof.2.base.rdb" in done.stderr, done.stderr
    assert "appendonly.aof.1.base.rdb" not in done.stderr
    assert list(untouched.iterdir()) == []

    # 4. a state written before generations were recorded knows only its current one; archiving records it
    with open_repo(load_policy(str(policy_file)), write=True, lock=False, catalog=False) as repo:
        state, token = repo.read_json_versioned(layout.aof_state(SOURCE))
        del state["generations"]
        repo.put_json_if(layout.aof_state(SOURCE), state, token=token)
    assert [w["base"] for w in aof_windows(policy_file)] == ["appendonly.aof.3.base.rdb"]
    verify_passes(policy_file)
    archive(policy_file)
    assert list(state_of(policy_file)["generations"]) == ["appendonly.aof.3.base.rdb"]
