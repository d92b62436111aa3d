"""Real PostgreSQL, Redis and S3 servers on local ports, for tests, the sandbox and drills.

Every start waits for readiness with a timeout and, on failure, raises ServerError carrying the tail
of the server's log. Every stop is idempotent. Servers started with ``detach=True`` run in their own
session so they outlive the process that started them; they can be stopped later from their pid
(``RedisServer.attach``, ``S3Server.attach``; PostgreSQL is found through its data directory).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hadr_backup.errors import ServerError
from hadr_backup.procs import (
    POSTGRES_OS_USER,
    log_tail,
    pid_alive,
    port_open,
    prepare_dir_for_postgres,
    process_matches,
    run_as_owner,
    running_as_root,
    stop_pid,
    wait_until,
)

PG_BIN_DIR = "/usr/lib/postgresql/15/bin"
SOCKET_PATH_MAX = 107  # sun_path limit, including PostgreSQL's "/.s.PGSQL.<port>"


def _conf_value(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return "'" + text.replace("'", "''") + "'"


# -- PostgreSQL -------------------------------------------------------------------------------------


class PostgresCluster:
    """One PostgreSQL cluster: ``base_dir/data`` (or ``data_dir``), its log in ``base_dir``."""

    def __init__(
        self,
        base_dir: Path | str,
        port: int,
        *,
        settings: Mapping[str, Any] | None = None,
        checksums: bool = True,
        bin_dir: str = PG_BIN_DIR,
        data_dir: Path | str | None = None,
        encoding: str = "UTF8",
        locale: str = "C.UTF-8",
    ):
        self.base_dir = Path(base_dir).absolute()
        self.port = port
        self.settings = dict(settings or {})
        self.checksums = checksums
        self.encoding, self.locale = encoding, locale  # initdb -E / --locale (SQL_ASCII + C: old installs)
        self.bin_dir = Path(bin_dir)
        self._data_dir = Path(data_dir).absolute() if data_dir else self.base_dir / "data"
        self.log_path = self.base_dir / "postgresql.log"

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def is_initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    @property
    def pid(self) -> int | None:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    @property
    def is_running(self) -> bool:
        return self.pid is not None

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    def run_as_owner(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
        return run_as_owner(argv, **kwargs)

    def init(self) -> None:
        """initdb (trust auth, user postgres, checksums, the encoding) and write the base settings."""
        prepare_dir_for_postgres(self.base_dir)
        prepare_dir_for_postgres(self.data_dir.parent)
        argv = [
            self.tool("initdb"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            self.encoding,
            f"--locale={self.locale}",
            "-D",
            str(self.data_dir),
        ]
        if self.checksums:
            argv.append("--data-checksums")
        done = self.run_as_owner(argv, check=False)
        if done.returncode != 0:
            raise ServerError(f"initdb failed for {self.data_dir}:\n{(done.stdout + done.stderr)[-2000:]}")
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# written by hadr: per-cluster settings live in hadr.conf\ninclude_if_exists = 'hadr.conf'\n")
        self.write_settings(self.settings)

    def write_settings(self, settings: Mapping[str, Any]) -> None:
        """(Re)write ``hadr.conf``: port, listen address, socket dir, wal_level, then ``settings``."""
        socket_dir = str(self.base_dir)
        if len(socket_dir) + len(f"/.s.PGSQL.{self.port}") > SOCKET_PATH_MAX:
            socket_dir = ""  # too long for a unix socket; TCP on 127.0.0.1 only
        values: dict[str, Any] = {
            "port": self.port,
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": socket_dir,
            "wal_level": "replica",
        }
        self.settings.update(settings)
        values.update(self.settings)
        lines = [f"{key} = {_conf_value(value)}" for key, value in values.items()]
        path = self.data_dir / "hadr.conf"
        path.write_text("\n".join(lines) + "\n")
        if running_as_root():
            owner = pwd.getpwnam(POSTGRES_OS_USER)
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def start(self, timeout: float = 60) -> None:
        if self.is_running:
            return
        argv = [
            self.tool("pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            str(int(timeout)),
            "start",
        ]
        done = self.run_as_owner(argv, check=False, timeout=timeout + 10, detach=True)
        if done.returncode != 0 or not self.is_running:
            raise ServerError(
                f"PostgreSQL on port {self.port} did not start "
                f"(data {self.data_dir}); log tail:\n{log_tail(self.log_path)}",
                hint="read the log above; a port in use or a stale data dir are common causes",
            )

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        if not self.is_initialized or not self.is_running:
            return
        argv = [self.tool("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "-t", str(int(timeout)), "stop"]
        done = self.run_as_owner(argv, check=False, timeout=timeout + 10)
        if done.returncode != 0 and self.is_running:
            raise ServerError(f"PostgreSQL on port {self.port} did not stop: {done.stderr.strip()}")

    def reload(self) -> None:
        self.run_as_owner([self.tool("pg_ctl"), "-D", str(self.data_dir), "reload"])

    def set(self, **settings: Any) -> None:
        """ALTER SYSTEM each setting and reload (settings that need a restart take effect on the next one)."""
        with self.connect() as conn:
            for key, value in settings.items():
                conn.execute(f"ALTER SYSTEM SET {key} = {_conf_value(value)}")
            conn.execute("SELECT pg_reload_conf()")

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def connect(self, dbname: str = "postgres"):
        import psycopg

        return psycopg.connect(self.dsn(dbname), autocommit=True, connect_timeout=10)

    def execute(self, sql: str, params: Sequence[Any] | None = None, dbname: str = "postgres") -> None:
        with self.connect(dbname) as conn:
            conn.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] | None = None, dbname: str = "postgres") -> list[tuple]:
        with self.connect(dbname) as conn:
            return conn.execute(sql, params).fetchall()

    def __enter__(self) -> PostgresCluster:
        try:
            if not self.is_initialized:
                self.init()
            self.start()
        except BaseException:
            self.stop("immediate")
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop("immediate")


# -- Redis and S3: servers run as child processes ------------------------------------------------------


class _ChildServer:
    """A server run as a child process, or a handle (``attach``) on one started earlier by pid."""

    program = ""  # must appear in an attached pid's command line (guards against pid reuse)
    port: int
    log_path: Path | None
    _process: subprocess.Popen | None = None
    _pid: int | None = None

    @classmethod
    def attach(cls, *args: Any, pid: int | None, **kwargs: Any) -> Any:
        """A handle on a server started by another process, for ``stop()``, ``pid`` and ``client()``."""
        server = cls(*args, **kwargs)
        server._pid = pid if pid and process_matches(pid, cls.program) else None
        return server

    @property
    def pid(self) -> int | None:
        pid = self._process.pid if self._process else self._pid
        return pid if pid_alive(pid) else None

    def _spawn(self, argv: list[str], detach: bool) -> None:
        log: Any = subprocess.DEVNULL
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(self.log_path, "ab")
        try:
            self._process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=detach
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()

    def _wait_ready(self, ready: Callable[[], bool], timeout: float, what: str, hint: str | None = None) -> None:
        process = self._process
        assert process is not None
        if wait_until(lambda: process.poll() is not None or ready(), timeout, 0.05) and process.poll() is None:
            return
        self.stop(timeout=2)
        raise ServerError(f"{what} on port {self.port} did not start; log tail:\n{log_tail(self.log_path)}", hint=hint)

    def _forget(self) -> None:
        if self._process is not None:
            self._process.wait()
        self._process, self._pid = None, None

    def stop(self, timeout: float = 10) -> None:
        stop_pid(self.pid, timeout)
        self._forget()

    def __enter__(self) -> Any:
        self.start()  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class RedisServer(_ChildServer):
    """One redis-server bound to 127.0.0.1; its files and log (``redis.log``) in ``dir``."""

    program = "redis-server"

    def __init__(
        self,
        dir: Path | str,
        port: int,
        *,
        appendonly: bool = False,
        aof_timestamp: bool = False,
        save: str = "",
        extra: Mapping[str, Any] | None = None,
        binary: str = "redis-server",
    ):
        self.dir = Path(dir).absolute()
        self.port = port
        self.appendonly, self.aof_timestamp, self.save = appendonly, aof_timestamp, save
        self.extra = dict(extra or {})
        self.binary = binary
        self.log_path = self.dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        yes_no = {True: "yes", False: "no"}
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
            "--save",
            self.save,
            "--appendonly",
            yes_no[self.appendonly],
            "--aof-timestamp-enabled",
            yes_no[self.aof_timestamp],
        ]
        for key, value in self.extra.items():
            argv += [f"--{key}", yes_no[value] if isinstance(value, bool) else str(value)]
        return argv

    def client(self, **kwargs: Any):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, **{"socket_timeout": 10, **kwargs})

    def _control_client(self, timeout: float = 2):
        """A client that fails at once instead of retrying (for readiness probes and SHUTDOWN)."""
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return self.client(socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))

    def _serves_us(self) -> bool:
        """Our process answers (not some other server that holds the port)."""
        import redis

        try:
            return int(self._control_client().info("server")["process_id"]) == self.pid
        except (redis.RedisError, OSError, KeyError, ValueError):
            return False

    def start(self, timeout: float = 15, detach: bool = False) -> None:
        if self.pid:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self._spawn(self.argv(), detach)
        self._wait_ready(self._serves_us, timeout, "redis-server")

    def stop(self, timeout: float = 10) -> None:
        """SHUTDOWN NOSAVE (an AOF is still flushed), then kill if it has not exited in time."""
        import redis

        if self.pid:
            try:
                self._control_client(timeout).shutdown(nosave=True)
            except (redis.RedisError, OSError):
                pass
        super().stop(timeout)


class S3Server(_ChildServer):
    """An S3 API endpoint (moto in server mode) on 127.0.0.1; it keeps objects in memory only."""

    program = "moto.server"

    def __init__(self, port: int, dir: Path | str | None = None):
        self.port = port
        self.dir = Path(dir).absolute() if dir else None
        self.log_path = self.dir / "moto.log" if self.dir else None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, access_key: str = "testing", secret_key: str = "testing", region: str = "us-east-1"):
        return s3_client(self.endpoint_url, access_key, secret_key, region)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint_url + "/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def start(self, timeout: float = 30, detach: bool = False) -> None:
        if self.pid:
            return
        if port_open(self.port):  # else another server's answers would pass for ours
            raise ServerError(
                f"the S3 endpoint cannot start: port {self.port} is already in use",
                hint="stop what listens there or pick another port",
            )
        self._spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)], detach)
        self._wait_ready(self.answers, timeout, "the S3 endpoint (moto)")


def s3_client(
    endpoint_url: str | None, access_key: str | None = None, secret_key: str | None = None, region: str = "us-east-1"
):
    """A boto3 S3 client for an endpoint (path-style addressing, short timeouts)."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        config=config,
        aws_access_key_id=access_key or "testing",
        aws_secret_access_key=secret_key or "testing",
    )
