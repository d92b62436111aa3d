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
    aof/<source>/archive.json              the AOF archive's state: per file the archived offset and pieces
    aof/<source>/<aof file>/<start>-<end>  one archived piece of a Redis AOF file: bytes [start, end)
    backups/s3/<source>/<run-id>/manifest/<bucket>.jsonl   what one `hadr backup s3` run saw first
    content/<sha256[:2]>/<sha256>          a bucket object version's bytes, by their plaintext SHA-256,
                                           shared by every run and source (stored once)
    probe-<random>                         `hadr check`'s write probe: written, read back, removed
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
AOF = "aof/"
CONTENT = "content/"
DESCRIPTION = "backup.json"
PROBE = "probe-"


def probe(token: str) -> str:
    """The key of one write probe (at the top, beside the catalog: writing there is what writers need)."""
    return f"{PROBE}{token}"


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


# -- archived Redis AOF ---------------------------------------------------------------------------

AOF_OFFSET_DIGITS = 16  # zero-padded: the keys of one file's pieces sort in offset order


def aof_prefix(source: str) -> str:
    return f"{AOF}{source}/"


def aof_state(source: str) -> str:
    return f"{AOF}{source}/archive.json"


def aof_file_prefix(source: str, file_name: str) -> str:
    return f"{AOF}{source}/{file_name}/"


def aof_piece(source: str, file_name: str, start: int, end: int) -> str:
    width = AOF_OFFSET_DIGITS
    return f"{aof_file_prefix(source, file_name)}{start:0{width}d}-{end:0{width}d}"


def aof_piece_prefix(source: str, file_name: str, start: int) -> str:
    """Every piece of ``file_name`` that begins at ``start``."""
    return f"{aof_file_prefix(source, file_name)}{start:0{AOF_OFFSET_DIGITS}d}-"


def split_aof_piece(key: str) -> tuple[int, int] | None:
    """``aof/<source>/<file>/<start>-<end>`` -> (start, end); None for other keys."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] + "/" != AOF:
        return None
    start, _, end = parts[3].partition("-")
    return (int(start), int(end)) if start.isdigit() and end.isdigit() else None


# -- S3 bucket sources: manifests per run and bucket, content by SHA-256 ------------------------------

S3_KIND = "s3"
MANIFEST_FOLDER = "manifest"


def s3_manifest(source: str, run_id: str, bucket: str) -> str:
    """The manifest of ``bucket`` written by run ``run_id`` of bucket source ``source``."""
    return f"{backup_prefix(S3_KIND, source, run_id)}{MANIFEST_FOLDER}/{bucket}.jsonl"


def content_object(sha256: str) -> str:
    """Where the bytes whose plaintext SHA-256 is ``sha256`` are stored (once, for every run and source)."""
    return f"{CONTENT}{sha256[:2]}/{sha256}"


def split_content_key(key: str) -> str | None:
    """``content/<xx>/<sha256>`` -> the SHA-256; None for other keys."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] + "/" != CONTENT or len(parts[2]) != 64 or parts[2][:2] != parts[1]:
        return None
    return parts[2]
