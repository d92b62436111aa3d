"""Where things live in a repository: the one owner of its object keys.

::

    hadr.repo.json                         identity: format, id, creation time, key ids (never keys)
    keys/<data-key-id>.json                data keys wrapped by the master key
    catalog.json, catalog.json.copy        the catalog and its checksummed twin
    locks/repository.json                  the lease of the writer holding the repository (S3)
    .lock                                  the flock of the writer holding the repository (local)
    backups/<kind>/<source>/<backup-id>/   a backup's objects, and backup.json: the backup described
                                           by itself (what `hadr repair catalog` rebuilds from)
    wal/<source>/archive.json              the cluster the archive of <source> is bound to
    wal/<source>/<timeline+log id>/<name>-<sha256>   WAL segments, .partial and .backup files
    wal/<source>/history/<name>-<sha256>   timeline history files (postgres/wal.py picks the folder)
"""

from __future__ import annotations

META = "hadr.repo.json"
CATALOG = "catalog.json"
CATALOG_COPY = "catalog.json.copy"
LEASE = "locks/repository.json"
LOCAL_LOCK_FILE = ".lock"
KEYS = "keys/"
BACKUPS = "backups/"
WAL = "wal/"
DESCRIPTION = "backup.json"


def data_key_record(data_key_id: str) -> str:
    return f"{KEYS}{data_key_id}.json"


def backup_prefix(kind: str, source: str, backup_id: str) -> str:
    return f"{BACKUPS}{kind}/{source}/{backup_id}/"


def backup_description(kind: str, source: str, backup_id: str) -> str:
    return backup_prefix(kind, source, backup_id) + DESCRIPTION


def parse_backup_key(key: str) -> tuple[str, str, str, str] | None:
    """``backups/<kind>/<source>/<id>/<rest>`` -> (kind, source, id, rest); None for other keys."""
    parts = key.split("/", 4)
    if len(parts) != 5 or parts[0] + "/" != BACKUPS or not all(parts[1:]):
        return None
    return parts[1], parts[2], parts[3], parts[4]


# -- archived WAL ---------------------------------------------------------------------------------

WAL_HISTORY_FOLDER = "history"


def wal_prefix(source: str) -> str:
    return f"{WAL}{source}/"


def wal_identity(source: str) -> str:
    return f"{WAL}{source}/archive.json"


def wal_folder(source: str, folder: str) -> str:
    return f"{WAL}{source}/{folder}"


def wal_object(source: str, folder: str, file_name: str) -> str:
    return f"{WAL}{source}/{folder}/{file_name}"


def split_wal_key(key: str) -> tuple[str, str, str] | None:
    """``wal/<source>/<folder>/<file>`` -> (source, folder, file); None for other keys."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] + "/" != WAL or not all(parts):
        return None
    return parts[1], parts[2], parts[3]
