"""What the catalog records about a Redis snapshot: typed, read back with ``RedisBackupMeta.of(entry)``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from hadr_backup.timefmt import rfc3339


@dataclass(frozen=True)
class RedisBackupMeta:
    rdb_object: str
    redis_version: str
    rdb_version: int | None
    role: str  # master | slave, as INFO replication says
    keys: dict[str, int]  # keys per db ("db0": 3) in the snapshot, as INFO keyspace counted them
    keys_exact: bool  # the counts did not change while the snapshot was taken
    master_repl_offset: int
    form: str  # disk | diskless: how the server sent the RDB
    sync_at: float  # the server's clock when SYNC was sent
    snapshot_at: float  # the server's clock once the RDB began to arrive: the instant it represents
    rdb_size: int = 0
    format: str = "rdb-sync"
    extra: dict[str, Any] = field(default_factory=dict)  # fields this version does not know

    @classmethod
    def of(cls, entry) -> RedisBackupMeta:
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in entry.meta.items() if k in known}
        return cls(**values, extra={k: v for k, v in entry.meta.items() if k not in known})

    def to_meta(self) -> dict[str, Any]:
        data = asdict(self)
        return {**data.pop("extra"), **data}


def meta_json(meta: dict[str, Any]) -> dict[str, Any]:
    """A snapshot's ``meta`` as ``--json`` shows it: instants in RFC 3339 (whole or partial)."""
    shown = dict(meta)
    for key in ("sync_at", "snapshot_at"):
        if key in shown:
            shown[key] = rfc3339(shown[key])
    return shown
