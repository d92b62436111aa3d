"""WAL names, LSNs, timelines, segment headers and the repository layout of archived WAL."""

from __future__ import annotations

import struct

import pytest

from hadr_backup.postgres import wal
from hadr_backup.postgres.wal import (
    HistoryEntry,
    TimelineHistoryError,
    TimelineSpan,
    WalNameError,
    archive_info_key,
    descends_from,
    format_lsn,
    group_archived,
    is_backup_history,
    is_history,
    is_partial,
    is_segment,
    list_archived,
    next_segment,
    parse_history,
    parse_lsn,
    parse_wal_key,
    read_segment_header,
    segment_name,
    segment_number,
    segment_start_lsn,
    segments_for_range,
    timeline_ancestry,
    timeline_at,
    timeline_of,
    wal_dir_key,
    wal_name_prefix,
    wal_object_key,
)
from hadr_backup.repo.storage import ObjectInfo

MiB = 1 << 20
SHA_A = "a" * 64
SHA_B = "b" * 64


# -- LSNs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("0/0", 0),
        ("0/3000028", 0x3000028),
        ("16/B374D848", (0x16 << 32) | 0xB374D848),
        ("FFFFFFFF/FFFFFFFF", (1 << 64) - 1),
        ("a/b", (10 << 32) | 11),
    ],
)
def test_lsn_round_trip(text, value):
    assert parse_lsn(text) == value
    assert format_lsn(value) == text.upper()


@pytest.mark.parametrize("bad", ["", "0", "0/", "/1", "0/1/2", "G/1", "123456789/0", "0x1/2"])
def test_parse_lsn_refuses_garbage(bad):
    with pytest.raises(ValueError):
        parse_lsn(bad)


def test_format_lsn_refuses_out_of_range():
    with pytest.raises(ValueError):
        format_lsn(1 << 64)
    with pytest.raises(ValueError):
        format_lsn(-1)


# -- names -----------------------------------------------------------------------------------------


def test_segment_name_of_lsn_matches_postgres():
    # pg_walfile_name('0/3000028') on timeline 1 with 16 MiB segments
    assert segment_name(1, parse_lsn("0/3000028")) == "000000010000000000000003"
    assert segment_name(2, parse_lsn("1/FF000000")) == "0000000200000001000000FF"
    assert segment_name(3, parse_lsn("1/0")) == "000000030000000100000000"
    # 64 MiB segments: 64 per log id
    assert segment_name(1, parse_lsn("0/FC000000"), 64 * MiB) == "00000001000000000000003F"
    assert segment_name(1, parse_lsn("1/4000000"), 64 * MiB) == "000000010000000100000001"


def test_segment_number_and_start_lsn():
    assert segment_number("000000010000000000000003") == 3
    assert segment_number("0000000100000001000000FF") == 0x1FF
    assert segment_number("00000001000000010000003F", 64 * MiB) == 64 + 63
    assert segment_start_lsn("000000010000000000000003") == 0x3000000
    assert segment_start_lsn("000000010000000000000003.partial") == 0x3000000
    assert segment_start_lsn("000000010000000000000003.00000028.backup") == 0x3000000


def test_segment_number_refuses_a_name_impossible_for_the_size():
    with pytest.raises(WalNameError):
        segment_number("000000010000000000000040", 64 * MiB)  # only 0..3F exist per log id


def test_next_segment_crosses_log_ids():
    assert next_segment("0000000100000000000000FE") == "0000000100000000000000FF"
    assert next_segment("0000000100000000000000FF") == "000000010000000100000000"
    assert next_segment("00000002000000000000003F", 64 * MiB) == "000000020000000100000000"
    assert next_segment("000000010000000000000005.partial") == "000000010000000000000006"


def test_name_kinds():
    assert is_segment("000000010000000000000001")
    assert not is_segment("000000010000000000000001.partial")
    assert not is_segment("00000001000000000000000g")
    assert not is_segment("0000000100000000000000011")
    assert is_partial("000000010000000000000001.partial")
    assert not is_partial("000000010000000000000001")
    assert is_history("00000002.history")
    assert not is_history("0000002.history")
    assert is_backup_history("000000010000000000000002.00000028.backup")
    assert not is_backup_history("000000010000000000000002.backup")


def test_timeline_of_every_kind():
    assert timeline_of("0000000A0000000000000001") == 10
    assert timeline_of("0000000B.history") == 11
    assert timeline_of("000000030000000000000001.partial") == 3
    assert timeline_of("000000040000000000000002.00000028.backup") == 4
    with pytest.raises(WalNameError):
        timeline_of("RECOVERYHISTORY")


@pytest.mark.parametrize("size", [0, 3 * MiB, 512 * 1024, 2048 * MiB])
def test_bad_segment_sizes(size):
    with pytest.raises(ValueError):
        segment_name(1, 0, size)


# -- timelines -------------------------------------------------------------------------------------

HISTORY_3 = """1\t0/3000158\tno recovery target specified

# a comment, then a blank line

2\t0/5000000\tbefore 2024-05-01 12:00:00+00
"""


def test_parse_history():
    assert parse_history(HISTORY_3) == [
        HistoryEntry(1, 0x3000158, "no recovery target specified"),
        HistoryEntry(2, 0x5000000, "before 2024-05-01 12:00:00+00"),
    ]
    assert parse_history("") == []


@pytest.mark.parametrize("bad", ["x\t0/1\treason", "1\tnot-an-lsn", "2\t0/5\n1\t0/6", "1\t0/6\n2\t0/5"])
def test_parse_history_refuses_damage(bad):
    with pytest.raises(WalNameError):
        parse_history(bad)


def test_timeline_ancestry():
    spans = timeline_ancestry(3, {3: HISTORY_3})
    assert spans == [
        TimelineSpan(1, 0, 0x3000158),
        TimelineSpan(2, 0x3000158, 0x5000000),
        TimelineSpan(3, 0x5000000, None),
    ]
    assert timeline_ancestry(1, {}) == [TimelineSpan(1, 0, None)]
    assert timeline_ancestry(2, {2: [HistoryEntry(1, 0x100, "")]}) == [
        TimelineSpan(1, 0, 0x100),
        TimelineSpan(2, 0x100, None),
    ]


def test_timeline_ancestry_without_history_is_an_error():
    with pytest.raises(TimelineHistoryError, match="00000004.history"):
        timeline_ancestry(4, {3: HISTORY_3})
    with pytest.raises(TimelineHistoryError):
        timeline_ancestry(2, {2: "5\t0/100\tnonsense parent"})
    with pytest.raises(ValueError):
        timeline_ancestry(0, {})


def test_descends_from_and_timeline_at():
    spans = timeline_ancestry(3, {3: HISTORY_3})
    assert descends_from(spans, 1, 0x1000000)
    assert descends_from(spans, 1, 0x3000158)  # the switch point still belongs to the parent
    assert not descends_from(spans, 1, 0x3000159)  # timeline 1 went on past the fork: not ours
    assert descends_from(spans, 2, 0x4000000)
    assert not descends_from(spans, 2, 0x6000000)
    assert descends_from(spans, 3, 0x9000000)
    assert not descends_from(spans, 4, 0x9000000)
    assert timeline_at(spans, 0x100) == 1
    assert timeline_at(spans, 0x4000000) == 2
    assert timeline_at(spans, 0x5000000) == 3


def test_segments_for_range_switches_timeline_at_the_fork_segment():
    spans = timeline_ancestry(3, {3: HISTORY_3})
    assert segments_for_range(0x1000028, 0x6000000, spans) == [
        "000000010000000000000001",
        "000000010000000000000002",
        "000000020000000000000003",  # holds the switch to timeline 2: read from the child
        "000000020000000000000004",
        "000000030000000000000005",
        "000000030000000000000006",
    ]
    assert segments_for_range(0x1000000, 0x1000000, spans) == ["000000010000000000000001"]
    with pytest.raises(ValueError):
        segments_for_range(2, 1, spans)


# -- segment headers -------------------------------------------------------------------------------


def make_header(
    sysid=7_300_000_000_000_000_001,
    tli=1,
    pageaddr=0x1000000,
    seg_size=16 * MiB,
    magic=0xD110,
    info=0x0002,
    blcksz=8192,
) -> bytes:
    return struct.pack("<HHIQI4xQII", magic, info, tli, pageaddr, 0, sysid, seg_size, blcksz) + b"\0" * 24


def test_read_segment_header():
    header = read_segment_header(make_header())
    assert header.system_identifier == 7_300_000_000_000_000_001
    assert header.timeline == 1
    assert header.segment_size == 16 * MiB
    assert header.page_magic == 0xD110
    assert header.page_address == 0x1000000
    assert header.pg_version == 15
    assert read_segment_header(make_header(magic=0xD116)).pg_version == 17
    assert read_segment_header(make_header(magic=0xD1FF)).pg_version is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x10\xd1" * 10,
        make_header(info=0),
        make_header(magic=0x1234),
        make_header(seg_size=3 * MiB),
        b"00000001\t0/3000158\tno recovery target specified\n" * 2,
    ],
)
def test_read_segment_header_refuses_non_segments(data):
    with pytest.raises(WalNameError):
        read_segment_header(data)


# -- repository layout -----------------------------------------------------------------------------


def test_keys():
    assert archive_info_key("main") == "wal/main/archive.json"
    assert (
        wal_object_key("main", "000000010000000A000000FF", SHA_A)
        == f"wal/main/000000010000000A/000000010000000A000000FF-{SHA_A}"
    )
    assert wal_object_key("main", "00000002.history", SHA_A) == f"wal/main/history/00000002.history-{SHA_A}"
    assert (
        wal_object_key("main", "000000010000000A000000FF.partial", SHA_A)
        == f"wal/main/000000010000000A/000000010000000A000000FF.partial-{SHA_A}"
    )
    assert wal_dir_key("m", "000000020000000300000004.00000028.backup") == "wal/m/0000000200000003"
    assert wal_name_prefix("m", "00000002.history") == "wal/m/history/00000002.history"
    with pytest.raises(ValueError):
        wal_object_key("main", "000000010000000A000000FF", "A" * 64)
    with pytest.raises(WalNameError):
        wal_object_key("main", "pg_wal", SHA_A)


def test_parse_wal_key_round_trips_and_refuses_others():
    for name in [
        "000000010000000A000000FF",
        "00000002.history",
        "000000010000000A000000FF.partial",
        "000000010000000000000002.00000028.backup",
    ]:
        assert parse_wal_key(wal_object_key("src", name, SHA_B)) == ("src", name, SHA_B)
    assert parse_wal_key("wal/src/archive.json") is None
    assert parse_wal_key(f"wal/src/0000000100000000/000000020000000000000001-{SHA_A}") is None  # wrong dir
    assert parse_wal_key(f"wal/src/history/000000010000000000000001-{SHA_A}") is None
    assert parse_wal_key(f"wal/src/0000000100000000/000000010000000000000001-{SHA_A[:-1]}") is None
    assert parse_wal_key(f"backups/src/0000000100000000/000000010000000000000001-{SHA_A}") is None


def infos(*names_and_shas):
    return [ObjectInfo(wal_object_key("main", n, s), 100, 1.0) for n, s in names_and_shas]


def test_group_archived_sorts_everything():
    listing = infos(
        ("000000020000000000000005", SHA_A),
        ("000000010000000000000003", SHA_A),
        ("00000002.history", SHA_A),
        ("000000010000000000000005.partial", SHA_A),
        ("000000010000000000000001", SHA_A),
        ("000000010000000000000002.00000028.backup", SHA_A),
        ("000000010000000000000002", SHA_A),
        ("000000010000000000000002", SHA_B),
    )
    listing.append(ObjectInfo("wal/main/archive.json", 10, 1.0))
    listing.append(ObjectInfo(wal_object_key("other", "000000010000000000000009", SHA_A), 1, 1.0))
    archived = group_archived("main", listing)
    assert [f.name for f in archived.segments[1]] == [
        "000000010000000000000001",
        "000000010000000000000002",
        "000000010000000000000003",
    ]
    assert [f.name for f in archived.segments[2]] == ["000000020000000000000005"]
    assert [f.name for f in archived.histories] == ["00000002.history"]
    assert [f.name for f in archived.partials] == ["000000010000000000000005.partial"]
    assert [f.name for f in archived.backup_histories] == ["000000010000000000000002.00000028.backup"]
    assert list(archived.conflicts) == ["000000010000000000000002"]
    assert archived.timelines == [1, 2]
    assert archived.newest_segment().name == "000000020000000000000005"
    assert archived.find("000000010000000000000005") is None  # only its .partial is there
    assert archived.find("000000010000000000000005.partial").sha256 == SHA_A
    assert archived.find("00000002.history").name == "00000002.history"


def test_list_archived_reads_a_store_or_a_repository(tmp_path):
    from hadr_backup.repo.local import LocalStorage

    store = LocalStorage(tmp_path)
    store.put(wal_object_key("main", "000000010000000000000001", SHA_A), [b"x"])
    store.put(archive_info_key("main"), [b"{}"])

    class Repo:
        pass

    repo = Repo()
    repo.store = store
    for target in (store, repo):
        archived = list_archived(target, "main")
        assert [f.name for f in archived.all_segments()] == ["000000010000000000000001"]
    assert list_archived(store, "absent").all_segments() == []
    assert wal.list_archived(store, "main").newest_segment().size == 1
