"""The AOF manifest and where the growing incr file may be cut (after the last whole command, outside
MULTI … EXEC, ``#TS:`` lines kept)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hadr_backup.redis.aoffiles import AofUnreadable, complete_end, parse_manifest


def resp(*args: str) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args)


def test_manifest_lines() -> None:
    text = "file appendonly.aof.2.base.rdb seq 2 type b\nfile appendonly.aof.1.incr.aof seq 1 type h\n"
    text += "file appendonly.aof.2.incr.aof seq 2 type i\nfile appendonly.aof.3.incr.aof seq 3 type i\n"
    manifest = parse_manifest(text)
    assert [(f.name, f.seq, f.type) for f in manifest.files][:2] == [
        ("appendonly.aof.2.base.rdb", 2, "b"),
        ("appendonly.aof.1.incr.aof", 1, "h"),
    ]
    assert manifest.last_incr == "appendonly.aof.3.incr.aof"
    for bad in ("file x seq 1 type q\n", "file x seq 1\n", "file ../x seq 1 type b\n"):
        with pytest.raises(AofUnreadable):
            parse_manifest(bad)


def test_cut_after_the_last_whole_command(tmp_path: Path) -> None:
    whole = b"#TS:1796126212\r\n" + resp("SELECT", "0") + resp("SET", "a", "1")
    path = tmp_path / "appendonly.aof.1.incr.aof"
    for torn in (b"*3\r\n$3\r\nSET\r\n$1\r\nb", b"*3\r", b"#TS:17961", resp("SET", "b", "22")[:-1]):
        path.write_bytes(whole + torn)
        assert complete_end(path, 0, len(whole + torn)) == len(whole)
    path.write_bytes(whole)
    assert complete_end(path, 0, len(whole)) == len(whole)
    assert complete_end(path, len(whole), len(whole)) == len(whole)


def test_never_inside_multi(tmp_path: Path) -> None:
    before = resp("SET", "a", "1")
    transaction = resp("MULTI") + resp("SET", "b", "2") + resp("INCR", "c")
    path = tmp_path / "appendonly.aof.1.incr.aof"
    path.write_bytes(before + transaction)
    assert complete_end(path, 0, len(before + transaction)) == len(before)
    path.write_bytes(before + transaction + resp("EXEC"))
    assert complete_end(path, 0, path.stat().st_size) == path.stat().st_size


def test_not_resp_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "appendonly.aof.1.incr.aof"
    path.write_bytes(b"REDIS0010garbage\r\n")
    with pytest.raises(AofUnreadable):
        complete_end(path, 0, path.stat().st_size)


def test_the_age_of_waiting_writes_without_a_new_annotation_is_that_of_the_last_archived_one(tmp_path: Path) -> None:
    from hadr_backup.redis.aoflag import _first_unarchived_second

    archived = b"#TS:1700000000\r\n" + resp("SET", "a", "1") + b"#TS:1700000005\r\n" + resp("SET", "b", "2")
    waiting = resp("SET", "c", "3")  # written in the same second as b: Redis adds no annotation
    (tmp_path / "x.incr.aof").write_bytes(archived + waiting)
    first = len(b"#TS:1700000000\r\n" + resp("SET", "a", "1"))
    files = {"x.incr.aof": {"archived": len(archived), "pieces": [[0, first, "-"], [first, len(archived), "-"]]}}
    assert _first_unarchived_second(tmp_path, "x.incr.aof", files) == 1700000005
    (tmp_path / "x.incr.aof").write_bytes(archived + b"#TS:1700000009\r\n" + waiting)
    assert _first_unarchived_second(tmp_path, "x.incr.aof", files) == 1700000009
