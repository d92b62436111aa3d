"""The Redis settings AOF archiving needs, read with CONFIG GET, and the exact lines that fix them.

- ``appendonly yes``: there is an AOF at all;
- ``aof-timestamp-enabled yes``: ``#TS:<unix>`` lines, what a point-in-time restore cuts at;
- ``aof-disable-auto-gc yes``: Redis keeps the history files a rewrite leaves (instead of deleting them at
  once, possibly before their end is archived); hadr removes each one once archived whole.
``aof-use-rdb-preamble`` may be either: a base file is archived whole, RDB or AOF.
"""

from __future__ import annotations

from dataclasses import dataclass

from hadr_backup.errors import UsageError
from hadr_backup.redis.wire import Address, Connection, RedisError, parse_info

REQUIRED = {"appendonly": "yes", "aof-timestamp-enabled": "yes", "aof-disable-auto-gc": "yes"}
NAMES = ("appenddirname", "appendfilename")
MIN_MAJOR = 7


class AofSettingsWrong(UsageError):
    """The Redis source is not set up for AOF archiving."""


@dataclass(frozen=True)
class AofSettings:
    address: Address
    version: str
    values: dict[str, str]

    @property
    def dir_name(self) -> str:
        return self.values.get("appenddirname") or "appendonlydir"

    @property
    def file_name(self) -> str:
        return self.values.get("appendfilename") or "appendonly.aof"

    def wrong(self) -> dict[str, str]:
        """The settings to change: name -> the value they need."""
        return {name: value for name, value in REQUIRED.items() if self.values.get(name) != value}

    def fix_lines(self) -> list[str]:
        cli = f"redis-cli -h {self.address.host} -p {self.address.port}" + (" --tls" if self.address.tls else "")
        lines = [f"{cli} CONFIG SET {name} {value}" for name, value in self.wrong().items()]
        return [*lines, f"{cli} CONFIG REWRITE"] if lines else []

    def require_archivable(self) -> None:
        major = self.version.split(".")[0]
        if not major.isdigit() or int(major) < MIN_MAJOR:
            raise AofSettingsWrong(
                f"Redis {self.version or '?'} at {self.address} has no multi-part AOF (Redis >= 7 has)",
                hint="this source gets snapshots only: remove its aof_dir from the policy",
            )
        if self.wrong():
            wrong = ", ".join(f"{n} is {self.values.get(n, '?')!r}" for n in self.wrong())
            raise AofSettingsWrong(
                f"Redis at {self.address} is not set up for AOF archiving ({wrong}); run:\n  "
                + "\n  ".join(self.fix_lines()),
                hint="CONFIG REWRITE keeps them in redis.conf; appendonly yes starts a rewrite of the AOF",
            )


def read_settings(address: Address) -> AofSettings:
    with Connection(address, timeout=10) as conn:
        version = parse_info(conn.call("INFO", "server")).get("redis_version", "")
        values: dict[str, str] = {}
        for name in (*REQUIRED, *NAMES):
            try:
                reply = conn.call("CONFIG", "GET", name)
            except RedisError as error:
                raise AofSettingsWrong(
                    f"cannot read {name} from Redis at {address}: {error.message}",
                    hint="AOF archiving needs +config|get for this user",
                ) from None
            values.update(zip(reply[::2], reply[1::2], strict=False))
    return AofSettings(address, version, values)
