"""A scratch redis-server on a restored directory: loading it proves the restore, and for ``--into`` it
then serves what it loaded to the target (as a primary the target replicates, or as the source of
DUMP/RESTORE).

It never saves (no ``save`` points; an AOF it loads is only appended to by commands, and none are sent),
listens on a free port of ``bind``, and with a ``password`` requires it (``requirepass``). Its settings go
in a private config file rather than on the command line, where any local user could read the password.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hadr_backup.errors import RestoreFailed
from hadr_backup.procs import free_port, log_tail, wait_until
from hadr_backup.redis.aofrestore import AOF_DIR_NAME
from hadr_backup.redis.backup import RDB_NAME
from hadr_backup.redis.wire import Address, Connection, RedisError, keys_per_db, parse_info

LOAD_TIMEOUT = 600.0
ANY_ADDRESS = ("0.0.0.0", "::")


@dataclass
class ScratchServer:
    directory: Path
    aof_name: str | None = None  # load appendonlydir/<aof_name>.manifest instead of dump.rdb
    bind: str = "127.0.0.1"
    password: str | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    private: Path | None = None  # the folder of its config file and log

    @property
    def address(self) -> Address:
        """Where this host reaches it."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.bind, self.bind)
        return Address(host, self.port, None, self.password, False)

    @property
    def loads(self) -> Path:
        return (
            self.directory / AOF_DIR_NAME / f"{self.aof_name}.manifest" if self.aof_name else self.directory / RDB_NAME
        )

    def __enter__(self) -> ScratchServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Start it and wait until it has loaded the directory; RestoreFailed when it cannot."""
        self.private = Path(tempfile.mkdtemp(prefix="hadr-redis-scratch-"))
        config = self.private / "redis.conf"
        config.write_text(self._config())
        self.process = subprocess.Popen(
            ["redis-server", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ready = wait_until(lambda: self._loaded() or self.process.poll() is not None, LOAD_TIMEOUT, 0.05)
        if not ready or self.process.poll() is not None:
            log = log_tail(self.private / "redis.log")
            self.stop()
            raise RestoreFailed(f"a scratch redis-server could not load {self.loads}", hint=log)

    def connect(self, timeout: float = 30.0) -> Connection:
        return Connection(self.address, timeout=timeout)

    def keys(self) -> dict[str, int]:
        """Its keys per db (INFO keyspace)."""
        with self.connect() as conn:
            return keys_per_db(parse_info(conn.call("INFO", "keyspace")))

    def log(self) -> str:
        return log_tail(self.private / "redis.log") if self.private else "(no log)"

    def stop(self) -> None:
        """SHUTDOWN NOSAVE, else kill; its private folder removed. Idempotent."""
        if self.process is not None and self.process.poll() is None:
            try:
                with self.connect(timeout=5) as conn:
                    conn.send("SHUTDOWN", "NOSAVE")
                self.process.wait(timeout=30)
            except (RedisError, subprocess.TimeoutExpired):
                pass
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
        if self.private is not None:
            for name in ("redis.conf", "redis.log"):
                (self.private / name).unlink(missing_ok=True)
            os.rmdir(self.private)
            self.private = None

    def _config(self) -> str:
        lines = {
            "port": str(self.port),
            "bind": self.bind,
            "dir": _quoted(str(self.directory)),
            "dbfilename": RDB_NAME,
            "save": '""',
            "logfile": _quoted(str(self.private / "redis.log")),
            "appendonly": "yes" if self.aof_name else "no",
            "repl-diskless-sync": "yes",  # a replica gets the data at once, without a file
            "repl-diskless-sync-delay": "0",
        }
        if self.aof_name:
            lines |= {"appenddirname": AOF_DIR_NAME, "appendfilename": _quoted(self.aof_name)}
        if self.password:
            lines["requirepass"] = _quoted(self.password)
        return "".join(f"{name} {value}\n" for name, value in lines.items())

    def _loaded(self) -> bool:
        try:
            with Connection(self.address, timeout=2) as conn:
                return conn.call("PING") == "PONG"
        except RedisError:  # not listening yet, or -LOADING
            return False


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
