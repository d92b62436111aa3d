"""Typed policy models. Parsing and validation live in ``load.py``; these are plain values."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


def parse_conninfo(dsn: str) -> dict[str, str]:
    """Split a libpq key=value string (values may be single-quoted)."""
    result: dict[str, str] = {}
    i, n = 0, len(dsn)
    while i < n:
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n:
            break
        eq = dsn.index("=", i)
        key = dsn[i:eq].strip()
        i = eq + 1
        while i < n and dsn[i].isspace():
            i += 1
        if i < n and dsn[i] == "'":
            i += 1
            value = []
            while i < n and dsn[i] != "'":
                if dsn[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(dsn[i])
                i += 1
            i += 1
            result[key] = "".join(value)
        else:
            start = i
            while i < n and not dsn[i].isspace():
                i += 1
            result[key] = dsn[start:i]
    return result


@dataclass(frozen=True)
class RetryConfig:
    """How long an upload whose source can be read again (a WAL file) is retried after transient
    storage failures: throttling, 5xx answers, refused connections, timeouts."""

    attempts: int = 5  # tries in all, the first included
    max_seconds: float = 30.0  # no new try starts once this long has passed since the first


@dataclass(frozen=True)
class RepositoryConfig:
    path: str | None = None  # absolute local path
    url: str | None = None  # s3://bucket/prefix
    endpoint: str | None = None
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = None
    lock_dir: str | None = None  # accepted for old policies; the lock now lives in the repository
    lock_wait: float = 0.0  # seconds a writer waits for the repository lock before giving up
    lock_ttl: float = 60.0  # seconds an S3 lease lives without renewal (renewed every ttl/3)
    retry: RetryConfig = field(default_factory=RetryConfig)

    @property
    def is_s3(self) -> bool:
        return self.url is not None

    @property
    def bucket(self) -> str:
        return (self.url or "")[len("s3://") :].split("/", 1)[0]

    @property
    def prefix(self) -> str:
        rest = (self.url or "")[len("s3://") :].split("/", 1)
        return rest[1].strip("/") if len(rest) > 1 else ""

    @property
    def display(self) -> str:
        return self.url or self.path or "?"


@dataclass(frozen=True)
class EncryptionConfig:
    key_file: str | None = None
    key_env: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.key_file or self.key_env)


@dataclass(frozen=True)
class CompressionConfig:
    level: int = 3
    threads: int = 2


@dataclass(frozen=True)
class PostgresSource:
    name: str
    dsn: str
    data_dir: str | None = None
    databases: tuple[str, ...] = ()
    bin_dir: str = "/usr/lib/postgresql/15/bin"
    async_archive: bool = False
    spool_dir: str | None = None
    archive_workers: int = 2
    backup_timeout: float = 120.0  # seconds to wait for the backup's WAL to be archived
    rpo: float = 300.0  # seconds of commits the source may lose: archive_timeout must not exceed it

    @property
    def conninfo(self) -> dict[str, str]:
        return parse_conninfo(self.dsn)

    @property
    def host(self) -> str:
        return self.conninfo.get("host", "127.0.0.1")

    @property
    def port(self) -> int:
        return int(self.conninfo.get("port", "5432"))

    def dsn_for(self, dbname: str) -> str:
        parts = {**self.conninfo, "dbname": dbname}
        return " ".join(f"{k}={v}" for k, v in parts.items())


@dataclass(frozen=True)
class RedisSource:
    name: str
    url: str
    role: str = "cache"  # cache | queue
    aof_dir: str | None = None

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[-1].split("@")[-1].split("/")[0].rsplit(":", 1)[0] or "127.0.0.1"

    @property
    def port(self) -> int:
        hostport = self.url.split("://", 1)[-1].split("@")[-1].split("/")[0]
        return int(hostport.rsplit(":", 1)[1]) if ":" in hostport else 6379


@dataclass(frozen=True)
class ObjectLock:
    """Default retention that ``hadr protect s3`` sets where a bucket was created with object lock."""

    mode: str  # GOVERNANCE | COMPLIANCE
    days: int


@dataclass(frozen=True)
class BucketMirror:
    """Where ``hadr backup s3`` copies versions when not into the repository: a versioned bucket,
    usually on another endpoint (one mirror version per source version)."""

    bucket: str
    endpoint: str | None = None
    prefix: str = ""
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = None


@dataclass(frozen=True)
class BucketSource:
    name: str
    endpoint: str | None
    buckets: tuple[str, ...]
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = None
    versions: str = "all"  # all | current: what `hadr backup s3` copies
    noncurrent_days: int = 30  # the noncurrent-version expiry `hadr protect s3` sets
    object_lock: ObjectLock | None = None
    mirror: BucketMirror | None = None  # None: into the hadr repository
    workers: int = 16  # concurrent copies

    @property
    def port(self) -> int:
        hostport = (self.endpoint or "").split("://", 1)[-1].split("/")[0]
        if ":" in hostport:
            return int(hostport.rsplit(":", 1)[1])
        return 443 if (self.endpoint or "").startswith("https") else 80


@dataclass(frozen=True)
class Sources:
    postgres: tuple[PostgresSource, ...] = ()
    redis: tuple[RedisSource, ...] = ()
    buckets: tuple[BucketSource, ...] = ()

    def postgres_named(self, name: str | None) -> PostgresSource:
        return _pick(self.postgres, name, "postgres")

    def redis_named(self, name: str | None) -> RedisSource:
        return _pick(self.redis, name, "redis")

    def buckets_named(self, name: str | None) -> BucketSource:
        return _pick(self.buckets, name, "buckets")


def _pick(items, name, section):
    from hadr_backup.errors import UsageError

    if not items:
        raise UsageError(
            f"the policy has no sources.{section} entry", hint=f"add one under sources.{section} in the policy file"
        )
    if name is None:
        if len(items) > 1:
            names = ", ".join(i.name for i in items)
            raise UsageError(f"several sources.{section} entries ({names})", hint="pick one with --source NAME")
        return items[0]
    for item in items:
        if item.name == name:
            return item
    names = ", ".join(i.name for i in items)
    raise UsageError(f"no sources.{section} entry named {name!r}", hint=f"known: {names}")


@dataclass(frozen=True)
class Retention:
    hourly: int = 24
    daily: int = 7
    weekly: int = 4
    monthly: int = 12
    min_full: int = 1  # never expire below this many complete backups per source


@dataclass(frozen=True)
class Schedule:
    name: str
    job: str  # e.g. "backup pg", "backup redis", "prune", "drill"
    cron: str


@dataclass(frozen=True)
class Check:
    name: str
    database: str
    sql: str  # returns rows that are problems; zero rows = pass
    source: str | None = None


@dataclass(frozen=True)
class Policy:
    path: str
    repository: RepositoryConfig
    encryption: EncryptionConfig = field(default_factory=EncryptionConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    sources: Sources = field(default_factory=Sources)
    retention: Retention = field(default_factory=Retention)
    schedules: tuple[Schedule, ...] = ()
    checks: tuple[Check, ...] = ()
    sandbox_dir: Path | None = None
