"""The lean acknowledger of async wal-push: is this WAL file already stored?

PostgreSQL runs archive_command once per file, serially, so in async mode the answer for a file that
the background pusher already stored must cost little more than starting an interpreter. This file
imports only the standard library and runs as a script (``python -S walack.py``: no site-packages,
no package imports)::

    walack.py SPOOL REPO_ROOT|- PUSHER_COMMAND WAL_PATH COMMAND...

It exits 0 when the done marker of WAL_PATH proves that this very file is stored. Otherwise, unless an
error marker is waiting to be reported, it starts the background pusher when none runs (PUSHER_COMMAND,
one shell-quoted string: ``python -m hadr_backup --policy P wal-pusher --source S``, to which it adds
``--pg-wal DIR``; its output goes to SPOOL/pusher.log) and waits for the marker while the pusher
runs. When that does not end with the file stored it execs COMMAND (the full ``hadr wal-push``), which
reports the error, or stores the file itself.

A done marker (``SPOOL/done/<name>``) is written only after the store returned (fsync + rename, or a
confirmed PUT) and reads ``<dev> <ino> <size> <mtime_ns> <stored bytes> <object key>``: a marker
vouches only for the file it was written for, and for a local repository the object must exist.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time

WAIT_TIMEOUT = 300.0  # seconds a call waits for its file to be stored
POLL = 0.005
PUSHER_LOG = "pusher.log"  # in the spool: the pusher's stdout and stderr
LOG_LIMIT = 8 << 20  # bytes of a helper's log before it is moved aside to <log>.1


def marker_text(st: os.stat_result, stored_size: int, key: str) -> str:
    return f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {stored_size} {key}\n"


def read_marker(spool: str, name: str) -> list[str] | None:
    try:
        with open(os.path.join(spool, "done", name)) as handle:
            fields = handle.read().split()
    except OSError:
        return None
    return fields if len(fields) == 6 else None


def acknowledged(spool: str, wal_path: str, repo_root: str | None) -> list[str] | None:
    """The done marker of ``wal_path`` when it proves that this very file is stored, else None."""
    fields = read_marker(spool, os.path.basename(wal_path))
    if fields is None:
        return None
    try:
        st = os.stat(wal_path)
    except OSError:
        return None
    if fields[:4] != [str(st.st_dev), str(st.st_ino), str(st.st_size), str(st.st_mtime_ns)]:
        return None  # another file under that name (a new cluster, a restored copy): push it again
    if repo_root and not os.path.exists(os.path.join(repo_root, fields[5])):
        return None
    return fields


def has_error(spool: str, name: str) -> bool:
    return os.path.exists(os.path.join(spool, "error", name))


def pusher_running(spool: str) -> bool:
    try:
        fd = os.open(os.path.join(spool, "pusher.lock"), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def wait_while_pushing(spool: str, wal_path: str, repo_root: str | None, deadline: float) -> bool:
    """Wait until ``wal_path`` is acknowledged (True), or errors, or the pusher stops (False)."""
    name = os.path.basename(wal_path)
    while time.monotonic() < deadline:
        if acknowledged(spool, wal_path, repo_root):
            return True
        if has_error(spool, name) or not pusher_running(spool):
            return bool(acknowledged(spool, wal_path, repo_root))
        time.sleep(POLL)
    return False


def start_pusher(spool: str, pusher_command: list[str], pg_wal: str) -> None:
    """Start a detached pusher (``pusher_command --pg-wal PG_WAL``) and give it a moment to take its lock."""
    for sub in ("done", "error", "link"):
        os.makedirs(os.path.join(spool, sub), exist_ok=True)
    child = spawn_detached([*pusher_command, "--pg-wal", pg_wal], os.path.join(spool, PUSHER_LOG))
    deadline = time.monotonic() + 10
    while not pusher_running(spool) and time.monotonic() < deadline:
        if os.waitpid(child, os.WNOHANG)[0]:
            return  # it ended at once (another pusher won, or it failed: see pusher.log)
        time.sleep(POLL)


def spawn_detached(argv: list[str], log: str) -> int:
    """Start ``argv`` in a session of its own, stdin from /dev/null, stdout and stderr appended to
    ``log`` (moved to ``log.1`` first once it passes LOG_LIMIT); return its pid."""
    for fd in os.listdir("/proc/self/fd"):  # descriptors inherited from the server stay with it
        if int(fd) > 2:
            try:
                os.set_inheritable(int(fd), False)
            except OSError:
                pass
    try:
        if os.stat(log).st_size > LOG_LIMIT:
            os.replace(log, log + ".1")
    except FileNotFoundError:
        pass
    out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        return os.posix_spawn(
            argv[0],
            argv,
            os.environ,
            setsid=True,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out, 1),
                (os.POSIX_SPAWN_DUP2, out, 2),
            ],
        )
    finally:
        os.close(out)


def main(argv: list[str]) -> None:
    import shlex

    spool, repo_root, pusher_command, wal_path, command = argv[0], argv[1], argv[2], argv[3], argv[4:]
    repo_root = None if repo_root == "-" else repo_root
    if acknowledged(spool, wal_path, repo_root):
        sys.exit(0)
    if not has_error(spool, os.path.basename(wal_path)):
        if not pusher_running(spool):
            start_pusher(spool, shlex.split(pusher_command), os.path.dirname(os.path.abspath(wal_path)))
        if wait_while_pushing(spool, wal_path, repo_root, time.monotonic() + WAIT_TIMEOUT):
            sys.exit(0)
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
