"""Per-operation WAL look-ups list only the folders they need, whatever the size of the archive (a local
store with a recording wrapper: which prefixes were listed is the fact under test)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hadr_backup.policy.model import PostgresSource
from hadr_backup.postgres import wal
from hadr_backup.postgres.basebackup import BackupFailed, Streamed, wait_for_wal
from hadr_backup.repo.local import LocalStorage

SHA = "a" * 64
SEGMENT_SIZE = wal.DEFAULT_SEGMENT_SIZE


class Recording:
    """A store that records the prefixes it is asked to list."""

    def __init__(self, inner: LocalStorage):
        self.inner = inner
        self.listed: list[str] = []

    def list(self, prefix: str = ""):
        self.listed.append(prefix)
        return self.inner.list(prefix)


@pytest.fixture
def repo(tmp_path):
    """An archive of source main: segments of timeline 1 in the folders of log ids 0 to 3, a history file."""
    store = LocalStorage(tmp_path / "repo", create=True)
    for number in [*range(0xFC, 0x104), *range(0x1FC, 0x204), *range(0x3FC, 0x400)]:
        store.put(wal.wal_object_key("main", wal.segment_name_from_number(1, number), SHA), [b"x"])
    store.put(wal.wal_object_key("main", "00000002.history", SHA), [b"1\t0/3000000\tno reason"])
    return SimpleNamespace(store=Recording(store))


def streamed(start_number: int, stop_number: int) -> Streamed:
    """A backup that started in segment ``start_number`` and stopped in ``stop_number`` on timeline 1."""
    return Streamed(
        objects=[],
        label="",
        manifest={},
        timeline=1,
        start_lsn=start_number * SEGMENT_SIZE + 40,
        stop_lsn=stop_number * SEGMENT_SIZE + 100,
        start_time=0.0,
        stop_time=0.0,
        segment_size=SEGMENT_SIZE,
        files=0,
        raw_size=0,
        checksum_failures=[],
    )


def test_list_archived_for_lists_the_folders_of_the_names_only(repo):
    names = ["000000010000000100000002", "0000000100000003000000FF", "00000002.history"]
    archived = wal.list_archived_for(repo, "main", names)
    assert repo.store.listed == ["wal/main/0000000100000001/", "wal/main/0000000100000003/", "wal/main/history/"]
    assert all(archived.find(name).sha256 == SHA for name in names)
    assert archived.find("000000010000000200000000") is None  # in a folder that was not listed
    assert archived.segment_count() == 12  # the whole of the two folders


def test_the_end_of_backup_wal_wait_lists_only_the_folders_it_needs(repo):
    wait_for_wal(repo, PostgresSource("main", "host=127.0.0.1 port=1"), streamed(0x1FE, 0x201))
    assert repo.store.listed == ["wal/main/0000000100000001/", "wal/main/0000000100000002/"]


def test_the_wait_polls_only_for_what_is_missing_and_names_it(repo):
    missing = wal.segment_name_from_number(1, 0x1FF)
    repo.store.inner.delete(wal.wal_object_key("main", missing, SHA))
    source = PostgresSource("main", "host=127.0.0.1 port=1", backup_timeout=0.3)
    with pytest.raises(BackupFailed, match=f"WAL segment {missing} was not archived .* \\(1 of 4 needed"):
        wait_for_wal(repo, source, streamed(0x1FE, 0x201), poll=0.1)
    listed = repo.store.listed
    assert listed[:2] == ["wal/main/0000000100000001/", "wal/main/0000000100000002/"]
    assert listed[2:] and set(listed[2:]) == {"wal/main/0000000100000001/"}  # then the missing one's folder only
