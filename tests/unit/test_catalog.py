"""Catalog serialisation, checksum and fallback to the copy (pure: an in-memory store)."""

from __future__ import annotations

import pytest

from hadr_backup.errors import IntegrityError
from hadr_backup.repo.catalog import (
    CATALOG_KEY,
    COMPLETE,
    COPY_KEY,
    BackupEntry,
    Catalog,
    StoredObject,
    load_catalog,
    save_catalog,
)


def sample() -> Catalog:
    catalog = Catalog()
    entry = catalog.add(BackupEntry(id="b1", kind="pg", source="main", meta={"timeline": 1}))
    entry.objects = [StoredObject("backups/pg/main/b1/base.tar", 100, 40, "ab" * 32)]
    entry.state = COMPLETE
    catalog.add(BackupEntry(id="b2", kind="redis", source="cache"))
    return catalog


def test_roundtrip():
    files: dict[str, bytes] = {}
    save_catalog(sample(), files.__setitem__)
    assert files[CATALOG_KEY] == files[COPY_KEY]
    loaded, warnings = load_catalog(files.get)
    assert warnings == []
    assert [e.id for e in loaded.entries] == ["b1", "b2"]
    assert loaded.get("b1").objects[0].stored_size == 40
    assert loaded.get("b1").meta == {"timeline": 1}
    assert loaded.select(kind="pg", state=COMPLETE)[0].id == "b1"


def test_empty_repository_has_empty_catalog():
    catalog, warnings = load_catalog(lambda key: None)
    assert catalog.entries == [] and warnings == []


def test_damaged_main_falls_back_to_copy_with_warning():
    files: dict[str, bytes] = {}
    save_catalog(sample(), files.__setitem__)
    files[CATALOG_KEY] = files[CATALOG_KEY].replace(b'"b2"', b'"b3"')  # checksum no longer matches
    loaded, warnings = load_catalog(files.get)
    assert [e.id for e in loaded.entries] == ["b1", "b2"]
    assert "loaded its copy" in warnings[0] and "checksum" in warnings[0]


def test_missing_main_falls_back_to_copy():
    files: dict[str, bytes] = {}
    save_catalog(sample(), files.__setitem__)
    del files[CATALOG_KEY]
    loaded, warnings = load_catalog(files.get)
    assert len(loaded.entries) == 2 and warnings


def test_both_damaged_is_a_clear_error():
    files = {CATALOG_KEY: b"{not json", COPY_KEY: b"garbage"}
    with pytest.raises(IntegrityError, match="both unreadable"):
        load_catalog(files.get)
