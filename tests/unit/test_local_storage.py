"""The local driver tells "absent" from "could not look" (pure: a temp dir, os calls faulted by monkeypatch).

Tests run as root, whom permissions do not stop, so EACCES, EIO and ESTALE are injected into
``os.scandir`` / ``os.stat`` / ``open`` for one path; ENOTDIR, dangling links and a vanished root are real.
"""

from __future__ import annotations

import builtins
import errno
import os
import shutil
from pathlib import Path

import pytest

from hadr_backup.errors import ObjectMissing, StorageUnreadable
from hadr_backup.repo import local
from hadr_backup.repo.local import LocalStorage
from hadr_backup.repo.storage import read_all

FOLDER = "wal/main/0000000100000000"
SEGMENT = f"{FOLDER}/000000010000000000000003"


@pytest.fixture
def store(tmp_path) -> LocalStorage:
    store = LocalStorage(tmp_path / "repo", create=True)
    store.put("hadr.repo.json", [b"{}"])
    store.put(f"{SEGMENT}-{'a' * 64}", [b"segment 3"])
    store.put("backups/pg/main/b1/base.tar", [b"tar"])
    return store


def fault(monkeypatch, function_name: str, path: Path, error_number: int, module=os) -> None:
    """Make ``module.function_name`` (or the builtin it names) fail with ``error_number`` for ``path`` only."""
    real = getattr(module, function_name, None) or getattr(builtins, function_name)

    def faulty(target, *args, **kwargs):
        if os.fspath(target) == os.fspath(path):
            raise OSError(error_number, os.strerror(error_number), os.fspath(target))
        return real(target, *args, **kwargs)

    monkeypatch.setattr(module, function_name, faulty, raising=False)


def keys(store: LocalStorage, prefix: str) -> list[str]:
    return [info.key for info in store.list(prefix)]


def test_absent_folder_lists_empty_only_below_a_present_root(store):
    assert keys(store, f"{FOLDER}/000000010000000000000003") == [f"{SEGMENT}-{'a' * 64}"]
    assert keys(store, f"{FOLDER}/000000010000000000000004") == []
    assert keys(store, "wal/main/0000000200000000/000000020000000000000004") == []  # no such folder
    assert keys(store, "wal/other/0000000100000000/000000010000000000000001") == []
    assert store.stat("wal/other/archive.json") is None
    with pytest.raises(ObjectMissing):
        read_all(store, "wal/other/archive.json")


@pytest.mark.parametrize("error_number", [errno.EACCES, errno.EIO, errno.ESTALE])
def test_unreadable_wal_folder_raises_with_path_and_cause(store, monkeypatch, error_number):
    fault(monkeypatch, "scandir", store.root / FOLDER, error_number)
    with pytest.raises(StorageUnreadable) as failed:
        store.list(f"{FOLDER}/000000010000000000000004")
    message = str(failed.value)
    assert str(store.root / FOLDER) in message and os.strerror(error_number) in message
    assert errno.errorcode[error_number] in message and f"{FOLDER}/000000010000000000000004" in message


def test_unreadable_subfolder_met_while_listing_raises(store, monkeypatch):
    fault(monkeypatch, "scandir", store.root / FOLDER, errno.EIO)
    with pytest.raises(StorageUnreadable, match="EIO"):
        store.list("wal/")
    assert keys(store, "backups/") == ["backups/pg/main/b1/base.tar"]  # other folders are not looked at


def test_a_listing_reads_a_folder_when_it_gets_there_and_raises_there(store, monkeypatch):
    later = "wal/main/0000000100000001"
    store.put(f"{later}/000000010000000100000000-{'b' * 64}", [b"segment"])
    fault(monkeypatch, "scandir", store.root / later, errno.EIO)
    listing = store.list("wal/")  # opens: reads up to the first object, not the folder that fails
    assert next(listing).key == f"{SEGMENT}-{'a' * 64}"
    with pytest.raises(StorageUnreadable, match="EIO"):
        next(listing)  # never a shorter listing that ends quietly


def test_subfolder_vanishing_between_listing_and_reading_raises(store, monkeypatch):
    fault(monkeypatch, "scandir", store.root / FOLDER, errno.ENOENT)
    with pytest.raises(StorageUnreadable, match="ENOENT"):
        store.list("wal/main/")


def test_vanished_root_raises_for_list_stat_and_get(store):
    shutil.rmtree(store.root)
    for read in (
        lambda: store.list(f"{FOLDER}/000000010000000000000004"),
        lambda: store.list(),
        lambda: store.stat("hadr.repo.json"),
        lambda: read_all(store, "hadr.repo.json"),
    ):
        with pytest.raises(StorageUnreadable, match="mounted") as failed:
            read()
        assert str(store.root) in str(failed.value)


def test_root_replaced_by_a_file_raises(store):
    shutil.rmtree(store.root)
    store.root.write_text("not a repository")
    with pytest.raises(StorageUnreadable):
        store.list("wal/")


def test_a_file_where_a_folder_should_be_raises_enotdir(store):
    shutil.rmtree(store.root / "wal" / "main")
    (store.root / "wal" / "main").write_text("oops")
    with pytest.raises(StorageUnreadable, match="ENOTDIR"):
        store.list(f"{FOLDER}/000000010000000000000004")
    with pytest.raises(StorageUnreadable, match="ENOTDIR"):
        store.stat("wal/main/archive.json")
    with pytest.raises(StorageUnreadable, match="ENOTDIR"):
        read_all(store, "wal/main/archive.json")


def test_dangling_links_are_not_absence(store, tmp_path):
    moved = tmp_path / "elsewhere"
    (store.root / "wal").rename(moved)
    (store.root / "wal").symlink_to(tmp_path / "unmounted" / "wal")  # a link into a filesystem not mounted
    with pytest.raises(StorageUnreadable, match="link to nothing"):
        store.list(f"{FOLDER}/000000010000000000000004")
    with pytest.raises(StorageUnreadable, match="link to nothing"):
        store.stat("wal/main/archive.json")
    (store.root / "wal").unlink()
    moved.rename(store.root / "wal")
    (store.root / FOLDER / f"000000010000000000000005-{'b' * 64}").symlink_to(tmp_path / "gone")
    with pytest.raises(StorageUnreadable, match="link to nothing"):
        store.list(f"{FOLDER}/")


def test_linked_folders_are_listed_through(store, tmp_path):
    moved = tmp_path / "other-disk"
    (store.root / "wal").rename(moved)
    (store.root / "wal").symlink_to(moved)
    assert keys(store, "wal/") == [f"{SEGMENT}-{'a' * 64}"]


def test_stat_and_get_raise_on_errors_other_than_absence(store, monkeypatch):
    path = store.root / "hadr.repo.json"
    fault(monkeypatch, "stat", path, errno.EACCES)
    with pytest.raises(StorageUnreadable, match="EACCES"):
        store.stat("hadr.repo.json")
    monkeypatch.undo()
    fault(monkeypatch, "open", path, errno.EIO, module=local)
    with pytest.raises(StorageUnreadable, match="EIO"):
        read_all(store, "hadr.repo.json")


def test_read_error_midway_raises(store, monkeypatch):
    class FailingHandle:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, size):
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(local, "open", lambda path, mode: FailingHandle(), raising=False)
    with pytest.raises(StorageUnreadable, match="EIO"):
        read_all(store, "hadr.repo.json")
