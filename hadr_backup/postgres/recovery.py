"""Recovery configuration of a restored data directory, and starting it until recovery ends.

The restored node gets ``recovery.signal``, exactly one ``recovery_target_*`` (with its timeline,
inclusiveness and action), ``restore_command`` = hadr wal-fetch, and ``archive_mode = off``, so a
test restore never archives into production's repository until a cutover turns archiving back on.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hadr_backup.errors import HadrError
from hadr_backup.postgres.archive import restore_command_for
from hadr_backup.postgres.server import open_connection
from hadr_backup.procs import as_owner, pid_alive

RECOVERY_LOG = "hadr-recovery.log"
_OWN_KEYS = re.compile(r"\s*(recovery_target\w*|restore_command|archive_mode|port|unix_socket_directories)\s*=")
_STOPPED = re.compile(r"recovery stopping (?:before|after|at) .*$", re.MULTILINE)
_STOP_TIME = re.compile(r"time (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?[+-]\d\d(?::?\d\d)?)")
_FAILURE = re.compile(r"^.*\b(FATAL|PANIC):\s+(?P<message>.*)$", re.MULTILINE)
_CONNECTION_NOISE = re.compile(r"not yet accepting connections|is starting up|is shutting down")


class RecoveryFailed(HadrError):
    """The restored server did not reach its recovery target."""


@dataclass
class Reached:
    """Where recovery ended."""

    state: str  # paused | promoted | shut down
    time: float | None  # the last replayed transaction end
    lsn: str | None
    timeline: int | None
    log_line: str | None  # PostgreSQL's own "recovery stopping ..." line


def restore_command(policy, source_name: str) -> str:
    """hadr wal-fetch as the restored server runs it (as its OS user), under this policy's file."""
    return restore_command_for(policy.path, source_name)


def write_recovery_config(
    data_dir: Path, settings: dict[str, str], owner: tuple[int, int] | None, comment: str
) -> None:
    """Rewrite postgresql.auto.conf without any earlier recovery/archiving/port lines, append ours,
    and create recovery.signal (standby.signal would win over it, so it goes)."""
    auto = data_dir / "postgresql.auto.conf"
    kept = [line for line in (auto.read_text().splitlines() if auto.exists() else []) if not _OWN_KEYS.match(line)]
    lines = kept + [f"# {comment}"] + [f"{key} = {_quote(value)}" for key, value in settings.items()]
    auto.write_text("\n".join(lines) + "\n")
    (data_dir / "standby.signal").unlink(missing_ok=True)
    (data_dir / "recovery.signal").write_text("")
    for path in (auto, data_dir / "recovery.signal"):
        os.chmod(path, 0o600)
        if owner:
            os.chown(path, *owner)


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


# -- starting and waiting --------------------------------------------------------------------------


def start_server(data_dir: Path, bin_dir: str) -> Path:
    """pg_ctl start (as the postgres OS user when root), detached so the server outlives hadr."""
    log = data_dir / RECOVERY_LOG
    argv = as_owner([os.path.join(bin_dir, "pg_ctl"), "-D", str(data_dir), "-l", str(log), "-W", "start"])
    done = subprocess.run(
        argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, start_new_session=True, timeout=60
    )
    if done.returncode != 0:
        raise RecoveryFailed(
            f"pg_ctl could not start the restored server in {data_dir}: {(done.stderr or done.stdout).strip()}"
        )
    return log


def postmaster_pid(data_dir: Path) -> int | None:
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def wait_for_recovery(
    data_dir: Path, dsn: str, log: Path, timeout: float, on_replay: Callable[[str], None] | None = None
) -> Reached:
    """Poll until recovery pauses at its target, promotes, or shuts down there; fail with the log's
    FATAL line when the server stops otherwise (e.g. WAL missing or damaged). ``on_replay(lsn)``: the
    replay location while recovery runs (once the server accepts connections)."""
    began = time.monotonic()
    seen_pid = False
    while time.monotonic() < began + timeout:
        pid = postmaster_pid(data_dir)
        seen_pid = seen_pid or pid is not None
        if pid is None and (seen_pid or time.monotonic() - began > 5):
            return _stopped(log)
        state = _query_state(dsn) if pid else None
        if state is not None and state[2] and on_replay is not None:
            on_replay(state[2])
        if state is not None and state[0] in ("paused", "promoted"):
            return Reached(state[0], state[1], state[2], state[3], _stop_line(log))
        if state is None and pid and "pausing at the end of recovery" in _log_text(log):
            return Reached("paused", None, None, None, _stop_line(log))  # hot_standby = off: no queries
        time.sleep(0.1)
    raise RecoveryFailed(
        f"recovery did not end within {timeout:g} s; the server in {data_dir} is still running",
        hint=f"follow {log}; stop it with pg_ctl -D {data_dir} stop",
    )


_STATE_SQL = """
select pg_is_in_recovery(), null,
       extract(epoch from pg_last_xact_replay_timestamp()), pg_last_wal_replay_lsn()::text,
       pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())
"""
_STATE_SQL_IN_RECOVERY = """
select pg_is_in_recovery(), pg_get_wal_replay_pause_state(),
       extract(epoch from pg_last_xact_replay_timestamp()), pg_last_wal_replay_lsn()::text, null, null
"""


def _query_state(dsn: str) -> tuple[str, float | None, str | None, int | None] | None:
    import psycopg

    try:
        with open_connection(dsn, connect_timeout=3) as conn:
            in_recovery = conn.execute("select pg_is_in_recovery()").fetchone()[0]
            row = conn.execute(_STATE_SQL_IN_RECOVERY if in_recovery else _STATE_SQL).fetchone()
    except psycopg.Error:
        return None  # still starting up, or not consistent yet
    replay_time = float(row[2]) if row[2] is not None else None
    if row[0]:
        return ("paused" if row[1] == "paused" else "replaying", replay_time, row[3], None)
    return ("promoted", replay_time, row[3] or row[4], int(row[5][:8], 16))


def _log_text(log: Path) -> str:
    try:
        return log.read_text(errors="replace")
    except OSError:
        return ""


def _stop_line(log: Path) -> str | None:
    lines = [m.group(0).split("LOG:", 1)[-1].strip() for m in _STOPPED.finditer(_log_text(log))]
    return lines[-1] if lines else None


def _stopped(log: Path) -> Reached:
    """The server is gone: at its target (action shutdown), or because recovery failed."""
    text = _log_text(log)
    if "shutdown at recovery target" in text:
        from hadr_backup.timefmt import parse_target_time

        line = _stop_line(log)
        stamp = _STOP_TIME.search(line or "")  # "after": that transaction is the last one applied
        when = parse_target_time(stamp.group(1)).timestamp() if stamp and "stopping after" in line else None
        return Reached("shut down", when, None, None, line)
    fatal = [m["message"] for m in _FAILURE.finditer(text) if not _CONNECTION_NOISE.search(m["message"])]
    ours = [line.strip() for line in text.splitlines() if line.startswith("hadr:")]  # wal-fetch's own words
    detail = "\n  ".join(ours[-1:] + fatal[-3:]) or "\n  ".join(text.strip().splitlines()[-5:]) or "(empty log)"
    raise RecoveryFailed(f"recovery stopped with an error; PostgreSQL said:\n  {detail}", hint=f"the full log is {log}")
