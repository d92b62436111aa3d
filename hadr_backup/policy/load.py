"""Load a YAML policy file into validated models.

A bad file is rejected with the file, the field path and what was expected, e.g.
``policy.yaml: sources.postgres[0].dsn: expected a string, got 42``. Unknown keys are errors (typos
in a backup policy must not pass silently). ``${VAR}`` and ``${VAR:-default}`` in strings are
expanded from the environment; relative paths are resolved against the current directory.

The policy is explicit: ``--policy`` or ``HADR_POLICY``, else ``./hadr.yaml``, else ``/etc/hadr/hadr.yaml``,
else exit 2. The sandbox's own policy is a file too, written by ``hadr sandbox up`` (``sandbox/layout.py``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hadr_backup.errors import PolicyError
from hadr_backup.policy.bucketload import bucket_source
from hadr_backup.policy.model import (
    BucketSource,
    Check,
    CompressionConfig,
    EncryptionConfig,
    Policy,
    PostgresSource,
    RedisSource,
    RepositoryConfig,
    Retention,
    RetryConfig,
    Schedule,
    Sources,
)

LOCAL_POLICY = "hadr.yaml"  # looked for in the current directory
SYSTEM_POLICY = Path("/etc/hadr/hadr.yaml")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class NoPolicy(PolicyError):
    """No policy was given and none was found."""


def find_policy(path: str | None) -> str:
    """The policy file to use: ``path`` (``--policy`` or ``HADR_POLICY``), else ``./hadr.yaml``, else
    ``/etc/hadr/hadr.yaml`` (absolute when found); NoPolicy (exit 2) when there is none."""
    if path:
        return path
    for candidate in (Path.cwd() / LOCAL_POLICY, SYSTEM_POLICY):
        if candidate.is_file():
            return str(candidate.absolute())
    raise NoPolicy(
        f"no policy: pass --policy FILE, set HADR_POLICY, or create ./{LOCAL_POLICY} or {SYSTEM_POLICY}",
        hint="start from policies/example.yaml; for the sandbox, run `hadr sandbox up` and export the line it prints",
    )


def load_policy(path: str | None) -> Policy:
    """Load ``path``, or the file ``find_policy`` finds when it is None."""
    path = find_policy(path)
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise PolicyError(
            f"cannot read policy file {path}: {error.strerror}",
            hint="pass an existing file with --policy or HADR_POLICY",
        ) from error
    return policy_from_text(text, path)


def policy_from_text(text: str, name: str) -> Policy:
    """Parse YAML ``text``; ``name`` (the file) names it in errors and becomes ``Policy.path``."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PolicyError(f"{name}: not valid YAML: {error}") from error
    return parse_policy(data, name)


def parse_policy(data: Any, name: str) -> Policy:
    reader = _Reader(name)
    return reader.policy(data)


class _Reader:
    def __init__(self, name: str):
        self.name = name

    # -- primitives ----------------------------------------------------------------------------

    def fail(self, where: str, expected: str, got: Any) -> PolicyError:
        shown = "nothing" if got is None else f"{type(got).__name__} {got!r}"
        return PolicyError(f"{self.name}: {where}: expected {expected}, got {shown}")

    def mapping(self, value: Any, where: str, allowed: set[str]) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, "a mapping", value)
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise PolicyError(
                f"{self.name}: {where}: unknown key {unknown[0]!r}", hint=f"allowed keys: {', '.join(sorted(allowed))}"
            )
        return value

    def string(self, data: dict, key: str, where: str, *, required=False, default=None) -> str | None:
        value = data.get(key, default)
        if value is None:
            if required:
                raise PolicyError(f"{self.name}: {where}.{key}: required, expected a string")
            return None
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}", "a string", value)
        return expand(value, f"{self.name}: {where}.{key}") or None

    def path(self, data: dict, key: str, where: str, **kw) -> str | None:
        value = self.string(data, key, where, **kw)
        return str(Path(value).expanduser().absolute()) if value else None

    def integer(self, data: dict, key: str, where: str, default: int, lo: int, hi: int) -> int:
        value = data.get(key, default)
        if isinstance(value, str):
            value = expand(value, f"{self.name}: {where}.{key}")
            value = int(value) if value.strip().lstrip("-").isdigit() else value
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(f"{where}.{key}", f"an integer from {lo} to {hi}", value)
        return value

    def number(self, data: dict, key: str, where: str, default: float, hi: float | None = None) -> float:
        value = data.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value <= 0
            or (hi is not None and value > hi)
        ):
            raise self.fail(f"{where}.{key}", "a positive number" + (f" up to {hi:g}" if hi is not None else ""), value)
        return float(value)

    def seconds(self, data: dict, key: str, where: str, default: float) -> float:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise self.fail(f"{where}.{key}", "a number of seconds (0 or more)", value)
        return float(value)

    def boolean(self, data: dict, key: str, where: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(f"{where}.{key}", "true or false", value)
        return value

    def strings(self, data: dict, key: str, where: str) -> tuple[str, ...]:
        value = data.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"{where}.{key}", "a list of strings", value)
        return tuple(expand(v, f"{self.name}: {where}.{key}") for v in value)

    def items(self, data: dict, key: str, where: str, build: Callable[[Any, str], Any]) -> tuple:
        value = data.get(key) or []
        if not isinstance(value, list):
            raise self.fail(f"{where}.{key}", "a list", value)
        built = tuple(build(item, f"{where}.{key}[{i}]") for i, item in enumerate(value))
        names = [getattr(b, "name", None) for b in built]
        duplicates = {n for n in names if n is not None and names.count(n) > 1}
        if duplicates:
            raise PolicyError(
                f"{self.name}: {where}.{key}: name {sorted(duplicates)[0]!r} used twice",
                hint="every entry needs its own name",
            )
        return built

    # -- sections ------------------------------------------------------------------------------

    def policy(self, data: Any) -> Policy:
        top = self.mapping(
            data,
            "(top level)",
            {"repository", "encryption", "compression", "sources", "retention", "schedules", "checks", "sandbox"},
        )
        if "repository" not in top:
            raise PolicyError(f"{self.name}: repository: required, expected a mapping with path or url")
        sandbox = self.mapping(top.get("sandbox"), "sandbox", {"dir"})
        sandbox_dir = self.path(sandbox, "dir", "sandbox")
        return Policy(
            path=self.name,
            repository=self.repository(top["repository"]),
            encryption=self.encryption(top.get("encryption")),
            compression=self.compression(top.get("compression")),
            sources=self.sources(top.get("sources")),
            retention=self.retention(top.get("retention")),
            schedules=self.items(top, "schedules", "", self.schedule) if top.get("schedules") else (),
            checks=self.items(top, "checks", "", self.check) if top.get("checks") else (),
            sandbox_dir=Path(sandbox_dir) if sandbox_dir else None,
        )

    def repository(self, value: Any) -> RepositoryConfig:
        where = "repository"
        data = self.mapping(
            value,
            where,
            {
                "path",
                "url",
                "endpoint",
                "region",
                "access_key",
                "secret_key",
                "lock_dir",
                "lock_wait",
                "lock_ttl",
                "retry",
            },
        )
        path, url = self.path(data, "path", where), self.string(data, "url", where)
        if bool(path) == bool(url):
            raise PolicyError(
                f"{self.name}: {where}: expected exactly one of path (a directory) or url (s3://bucket/prefix)"
            )
        if url and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?", url):
            raise self.fail(f"{where}.url", "s3://bucket[/prefix]", url)
        return RepositoryConfig(
            path=path,
            url=url,
            endpoint=self.string(data, "endpoint", where),
            region=self.string(data, "region", where, default="us-east-1"),
            access_key=self.string(data, "access_key", where),
            secret_key=self.string(data, "secret_key", where),
            lock_dir=self.path(data, "lock_dir", where),
            lock_wait=self.seconds(data, "lock_wait", where, 0.0),
            lock_ttl=self.number(data, "lock_ttl", where, 60.0),
            retry=self.retry(data.get("retry"), f"{where}.retry"),
        )

    def retry(self, value: Any, where: str) -> RetryConfig:
        data = self.mapping(value, where, {"attempts", "max_seconds"})
        return RetryConfig(
            attempts=self.integer(data, "attempts", where, 5, 1, 100),
            max_seconds=self.number(data, "max_seconds", where, 30.0, hi=3600),
        )

    def encryption(self, value: Any) -> EncryptionConfig:
        data = self.mapping(value, "encryption", {"key_file", "key_env"})
        config = EncryptionConfig(
            key_file=self.path(data, "key_file", "encryption"), key_env=self.string(data, "key_env", "encryption")
        )
        if config.key_file and config.key_env:
            raise PolicyError(f"{self.name}: encryption: expected one of key_file or key_env, not both")
        return config

    def compression(self, value: Any) -> CompressionConfig:
        data = self.mapping(value, "compression", {"level", "threads"})
        return CompressionConfig(
            level=self.integer(data, "level", "compression", 3, 1, 19),
            threads=self.integer(data, "threads", "compression", 2, 1, 64),
        )

    def sources(self, value: Any) -> Sources:
        data = self.mapping(value, "sources", {"postgres", "redis", "buckets"})
        return Sources(
            postgres=self.items(data, "postgres", "sources", self.postgres),
            redis=self.items(data, "redis", "sources", self.redis),
            buckets=self.items(data, "buckets", "sources", self.buckets),
        )

    def postgres(self, value: Any, where: str) -> PostgresSource:
        data = self.mapping(
            value,
            where,
            {
                "name",
                "dsn",
                "data_dir",
                "databases",
                "bin_dir",
                "async_archive",
                "spool_dir",
                "archive_workers",
                "backup_timeout",
                "rpo",
            },
        )
        dsn = self.string(data, "dsn", where, required=True)
        if "=" not in dsn:
            raise self.fail(f"{where}.dsn", "a libpq key=value string such as 'host=… port=… user=…'", dsn)
        return PostgresSource(
            name=self.string(data, "name", where, required=True),
            dsn=dsn,
            data_dir=self.path(data, "data_dir", where),
            databases=self.strings(data, "databases", where),
            bin_dir=self.path(data, "bin_dir", where, default="/usr/lib/postgresql/15/bin"),
            async_archive=self.boolean(data, "async_archive", where, False),
            spool_dir=self.path(data, "spool_dir", where),
            archive_workers=self.integer(data, "archive_workers", where, 2, 1, 64),
            backup_timeout=self.number(data, "backup_timeout", where, 120.0),
            rpo=self.number(data, "rpo", where, 300.0),
        )

    def redis(self, value: Any, where: str) -> RedisSource:
        data = self.mapping(value, where, {"name", "url", "role", "aof_dir"})
        url = self.string(data, "url", where, required=True)
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise self.fail(f"{where}.url", "redis://host:port[/db]", url)
        role = self.string(data, "role", where, default="cache")
        if role not in ("cache", "queue"):
            raise self.fail(f"{where}.role", "cache or queue", role)
        return RedisSource(
            name=self.string(data, "name", where, required=True),
            url=url,
            role=role,
            aof_dir=self.path(data, "aof_dir", where),
        )

    def buckets(self, value: Any, where: str) -> BucketSource:
        return bucket_source(self, value, where)

    def retention(self, value: Any) -> Retention:
        data = self.mapping(value, "retention", {"hourly", "daily", "weekly", "monthly", "min_full"})
        return Retention(
            **{
                k: self.integer(data, k, "retention", d, 0, 100000)
                for k, d in (("hourly", 24), ("daily", 7), ("weekly", 4), ("monthly", 12))
            },
            min_full=self.integer(data, "min_full", "retention", 1, 1, 1000),
        )

    def schedule(self, value: Any, where: str) -> Schedule:
        data = self.mapping(value, where, {"name", "job", "cron"})
        cron = self.string(data, "cron", where, required=True)
        if len(cron.split()) != 5:
            raise self.fail(f"{where}.cron", "five cron fields (minute hour day month weekday)", cron)
        return Schedule(
            name=self.string(data, "name", where, required=True),
            job=self.string(data, "job", where, required=True),
            cron=cron,
        )

    def check(self, value: Any, where: str) -> Check:
        data = self.mapping(value, where, {"name", "database", "sql", "source"})
        return Check(
            name=self.string(data, "name", where, required=True),
            database=self.string(data, "database", where, required=True),
            sql=self.string(data, "sql", where, required=True),
            source=self.string(data, "source", where),
        )


def expand(value: str, where: str, variables: Mapping[str, str] | None = None) -> str:
    """Expand ``${VAR}`` / ``${VAR:-default}`` from ``variables`` (default: the environment); an unset
    variable without default is an error."""
    source = os.environ if variables is None else variables

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        found = source.get(name)
        if found:
            return found
        if default is not None:
            return default
        raise PolicyError(
            f"{where}: environment variable {name} is not set", hint=f"export {name}=… or write ${{{name}:-default}}"
        )

    return _VAR.sub(substitute, value)
