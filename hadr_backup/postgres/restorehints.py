"""What to do with a restored PostgreSQL server next, as ``hadr restore pg`` prints it: how to start it,
connect to it, resume or promote it, and stop it — the command lines themselves, run as the server's OS
user (``runuser -u postgres --`` when hadr runs as root, as it did to start the server)."""

from __future__ import annotations

import os
import shlex

from hadr_backup.postgres.recovery import RECOVERY_LOG
from hadr_backup.procs import as_owner

AT_TARGET = {"pause": "pauses there, read-only", "promote": "opens for writes", "shutdown": "shuts down"}


def next_steps(
    directory: str, bin_dir: str, state: str, action: str, conninfo: str | None, port: int | None
) -> list[tuple[str, str]]:
    """(label, what to run) for a restored server in ``state`` (configured | paused | promoted | shut down)."""

    def pg_ctl(*args: str) -> str:
        return shlex.join(as_owner([os.path.join(bin_dir, "pg_ctl"), "-D", directory, *args]))

    def psql(*args: str) -> str:  # psql comes with the client package, which may sit elsewhere
        program = os.path.join(bin_dir, "psql")
        return shlex.join([program if os.path.exists(program) else "psql", conninfo or "", *args])

    start = pg_ctl("-l", os.path.join(directory, RECOVERY_LOG), "start")
    conf = os.path.join(directory, "postgresql.auto.conf")
    if state == "configured":
        where = (
            ""
            if port
            else "; it listens on the port in its postgresql.conf (the source's): restore with --port to choose another"
        )
        return [("start", f"{start}  (it replays WAL to the target, then {AT_TARGET.get(action, action)}{where})")]
    if state == "shut down":
        return [
            (
                "start",
                f"set recovery_target_action = 'promote' in {conf}, then {start}  (it replays to the "
                f"target again and opens for writes)",
            )
        ]
    steps = [("connect", psql())] if conninfo else []
    if state == "paused":
        steps += [
            (
                "resume",
                f"{psql('-c', 'select pg_wal_replay_resume()')}  (recovery ends at the target and "
                f"the server opens for writes, on a new timeline)",
            ),
            ("promote", f"{pg_ctl('promote')}  (the same, from the shell)"),
            ("replay further", f"stop it, set a later recovery_target_* in {conf}, start it again"),
        ]
    return steps + [("stop", pg_ctl("stop"))]
