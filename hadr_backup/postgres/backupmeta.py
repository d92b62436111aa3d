"""What the catalog records about a PostgreSQL base backup: typed, and read back from any catalog format.

The catalog stores it as the entry's ``meta`` (plain JSON); ``PgBackupMeta.of(entry)`` is the one way
the engine reads it, so a renamed or added field has one place to be handled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from hadr_backup.postgres import wal


@dataclass(frozen=True)
class PgBackupMeta:
    tar_objects: tuple[str, ...]
    manifest_object: str
    timeline: int
    start_lsn: str
    stop_lsn: str
    start_wal: str
    stop_wal: str
    start_time: float
    stop_time: float  # the server's clock when the backup ended: its earliest consistent instant
    system_identifier: str
    pg_version_num: int
    pg_version: str = ""
    wal_segment_size: int = wal.DEFAULT_SEGMENT_SIZE
    data_checksums: bool = False
    checksum_failures: tuple[str, ...] = ()
    databases: tuple[str, ...] = ()
    files: int = 0
    label: str = ""
    format: str = "pg_basebackup-tar"
    extra: dict[str, Any] = field(default_factory=dict)  # fields this version does not know

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> PgBackupMeta:
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in meta.items() if k in known}
        values["system_identifier"] = str(values.get("system_identifier", ""))
        return cls(**values, extra={k: v for k, v in meta.items() if k not in known})

    @classmethod
    def of(cls, entry) -> PgBackupMeta:
        return cls.from_meta(entry.meta)

    def to_meta(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        return {**extra, **{k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}}

    @property
    def start(self) -> int:
        return wal.parse_lsn(self.start_lsn)

    @property
    def stop(self) -> int:
        return wal.parse_lsn(self.stop_lsn)
