"""`hadr verify repo` over the AOF archive of a real redis-server: a clean archive passes (and --deep runs
redis-check-rdb and redis-check-aof on the assembled chain); a deleted piece, a truncated piece and a
corrupted byte are each reported with their own finding (exit 3), and the repository is left as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from hadr_backup.policy.load import load_policy
from hadr_backup.repo import layout
from hadr_backup.repo.repository import open_repo
from hadr_backup.sandbox.servers import RedisServer
from tests.helpers import hadr_cli
from tests.integration.test_redis_aof_archive import SOURCE, archivable, archive, policy, write
from tests.schema_check import assert_schema


def archived_twice(redis_factory, tmp_path: Path) -> tuple[Path, RedisServer]:
    server = archivable(redis_factory)
    policy_file = policy(tmp_path, server)
    write(server, "a", 200)
    archive(policy_file)
    write(server, "b", 200)
    archive(policy_file)
    return policy_file, server


def verify(policy_file: Path, *args: str, expect: int) -> dict:
    done = hadr_cli(policy_file, "--json", "verify", "repo", *args)
    assert done.returncode == expect, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return assert_schema("verify-repo", done.stdout)


def incr_pieces(policy_file: Path) -> list[Path]:
    """The stored files of the incr file's pieces, in offset order."""
    policy_ = load_policy(str(policy_file))
    with open_repo(policy_) as repo:
        state, _ = repo.read_json_versioned(layout.aof_state(SOURCE))
    [(name, record)] = [(n, r) for n, r in state["files"].items() if ".incr." in n]
    assert len(record["pieces"]) >= 2
    root = Path(policy_.repository.path)
    return [root / layout.aof_piece(SOURCE, name, start, end) for start, end, _ in record["pieces"]]


def repository_digest(policy_file: Path) -> dict[str, str]:
    root = Path(load_policy(str(policy_file)).repository.path)
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "lock" not in p.name
    }


def test_a_clean_archive_passes_quick_and_deep(redis_factory, tmp_path: Path) -> None:
    policy_file, _server = archived_twice(redis_factory, tmp_path)
    quick = verify(policy_file, expect=0)
    assert quick["checked"]["aof_files"] >= 2 and quick["checked"]["aof_pieces"] >= 3
    deep = verify(policy_file, "--deep", expect=0)
    assert deep["checked"]["aof_chains_checked"] == 1 and deep["findings"] == []


@pytest.mark.parametrize(
    ("damage", "deep", "code"),
    [
        ("delete", False, "aof-piece-missing"),
        ("truncate", True, "aof-piece-corrupt"),
        ("flip", True, "aof-piece-corrupt"),
    ],
)
def test_a_damaged_piece_is_reported_and_nothing_is_modified(
    redis_factory, tmp_path: Path, damage: str, deep: bool, code: str
) -> None:
    policy_file, _server = archived_twice(redis_factory, tmp_path)
    piece = incr_pieces(policy_file)[-1]
    data = piece.read_bytes()
    if damage == "delete":
        piece.unlink()
    elif damage == "truncate":
        piece.write_bytes(data[: len(data) // 2])
    else:
        middle = len(data) // 2
        piece.write_bytes(data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :])
    before = repository_digest(policy_file)

    result = verify(policy_file, *(["--deep"] if deep else []), expect=3)

    subject = str(piece.relative_to(load_policy(str(policy_file)).repository.path))
    assert [(f["code"], f["subject"]) for f in result["findings"] if f["level"] == "error"] == [(code, subject)]
    assert repository_digest(policy_file) == before
    if deep:  # the quick pass cannot see inside a piece: it only knows the piece is there
        verify(policy_file, expect=0)


def test_a_gap_in_the_recorded_pieces_is_reported(redis_factory, tmp_path: Path) -> None:
    policy_file, _server = archived_twice(redis_factory, tmp_path)
    policy_ = load_policy(str(policy_file))
    with open_repo(policy_, write=True, lock=False, catalog=False) as repo:
        state, token = repo.read_json_versioned(layout.aof_state(SOURCE))
        [record] = [r for n, r in state["files"].items() if ".incr." in n]
        del record["pieces"][0]  # as if the first piece had never been recorded
        repo.put_json_if(layout.aof_state(SOURCE), state, token=token)
    result = verify(policy_file, expect=3)
    codes = {f["code"] for f in result["findings"] if f["level"] == "error"}
    assert "aof-gap" in codes
    assert any(f["code"] == "aof-piece-unrecorded" for f in result["findings"])
