"""Catalog serialisation, checksum and fallback to the copy (pure: an in-memory store)."""

from __future__ import annotations

import pytest

from hadr_backup.errors import IntegrityError
from hadr_backup.repo.catalog import (
    CATALOG_KEY,
    COMPLETE,
    COPY_KEY,
    RUNNING,
    BackupEntry,
    Catalog,
    StoredObject,
    interrupted,
    load_catalog,
)


def save_catalog(catalog: Catalog, write) -> None:
    write(CATALOG_KEY, catalog.to_bytes())
    write(COPY_KEY, catalog.to_bytes())


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


def test_no_catalog_loads_as_missing_not_as_a_catalog():
    catalog, warnings = load_catalog(lambda key: None)
    assert catalog.entries == [] and warnings == []
    assert catalog.loaded_from is None  # the repository decides: new, or a lost catalog


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


def test_format_1_catalog_is_read_with_unknown_host():
    import hashlib
    import json

    body = {
        "format": 1,
        "entries": [
            {
                "id": "b1",
                "kind": "pg",
                "source": "main",
                "state": "running",
                "started_at": 100.0,
                "stopped_at": None,
                "raw_size": 0,
                "stored_size": 0,
                "objects": [],
                "meta": {},
                "error": None,
                "pid": 4242,
            }
        ],
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    raw = json.dumps({"checksum": hashlib.sha256(canonical.encode()).hexdigest(), "catalog": body}).encode()
    catalog = Catalog.from_bytes(raw, "catalog.json")
    entry = catalog.get("b1")
    assert (entry.host, entry.heartbeat_at, entry.prefix) == (None, None, None)
    assert entry.object_prefix == "backups/pg/main/b1/"
    assert b'"format":2' in catalog.to_bytes().replace(b" ", b"")


def running(entry_id: str, host: str | None, pid: int, heartbeat: float | None, started: float = 0.0):
    return BackupEntry(
        id=entry_id,
        kind="pg",
        source="main",
        state=RUNNING,
        started_at=started,
        pid=pid,
        host=host,
        heartbeat_at=heartbeat,
    )


def test_interrupted_is_judged_from_the_entrys_own_heartbeat():
    entries = [
        running("alive-here", "h1", 10, heartbeat=990.0),
        running("dead-here", "h1", 11, heartbeat=999.0),  # pid gone on this host: at once
        running("fresh-elsewhere", "h2", 11, heartbeat=900.0),  # cannot see its pid: trust the beat
        running("stale-elsewhere", "h2", 12, heartbeat=700.0),
        running("format-1-old", None, 13, heartbeat=None, started=500.0),
        running("format-1-new", None, 14, heartbeat=None, started=950.0),
        BackupEntry(id="done", kind="pg", source="main", state=COMPLETE, host="h1", pid=11),
    ]
    found = interrupted(entries, now=1000.0, host="h1", stale_after=180.0, alive=lambda pid: pid == 10)
    assert [e.id for e in found] == ["dead-here", "stale-elsewhere", "format-1-old"]
