"""Processes and ports: free ports, readiness waits, idempotent stops, and running as the postgres OS user.

When hadr runs as root, PostgreSQL tools run as ``POSTGRES_OS_USER`` (initdb and postgres refuse root), and
the folders they write are handed to that user.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

POSTGRES_OS_USER = "postgres"


# -- ports and waits -------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def wait_port_closed(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> bool:
    return wait_until(lambda: not port_open(port, host), timeout)


# -- processes --------------------------------------------------------------------------------------


def pid_alive(pid: int | None) -> bool:
    """True while ``pid`` is a live process (a zombie counts as gone)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def process_matches(pid: int, needle: str) -> bool:
    """True when ``pid`` is alive and its command line contains ``needle`` (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return pid_alive(pid) and needle in cmdline


def stop_pid(pid: int | None, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Signal ``pid``, wait up to ``timeout`` for it to exit, then SIGKILL it. Idempotent."""
    if not pid_alive(pid):
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    if not wait_until(lambda: not pid_alive(pid), timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        wait_until(lambda: not pid_alive(pid), 5.0)


def log_tail(path: Path | None, lines: int = 20) -> str:
    if path is None or not Path(path).exists():
        return "(no log)"
    text = Path(path).read_text(errors="replace").rstrip().splitlines()
    return "\n".join(text[-lines:]) or "(empty log)"


# -- the postgres OS user ---------------------------------------------------------------------------


def running_as_root() -> bool:
    return os.geteuid() == 0


def as_owner(argv: Sequence[str]) -> list[str]:
    """``argv`` run as the postgres OS user when we are root (initdb and postgres refuse root)."""
    if running_as_root():
        return ["runuser", "-u", POSTGRES_OS_USER, "--", *argv]
    return list(argv)


def run_as_owner(
    argv: Sequence[str], *, check: bool = True, timeout: float | None = 120, detach: bool = False
) -> subprocess.CompletedProcess:
    """Run a PostgreSQL tool as the cluster owner; output captured as text."""
    return subprocess.run(
        as_owner(argv),
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        start_new_session=detach,
    )


def prepare_dir_for_postgres(path: Path | str) -> Path:
    """Create ``path`` and, when root, hand it to the postgres OS user (so the server can write there)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if running_as_root():
        owner = pwd.getpwnam(POSTGRES_OS_USER)
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return path


def postgres_user_can(argv: Sequence[str]) -> bool:
    """True when ``argv`` succeeds as the postgres OS user, e.g. ``["test", "-x", dir]`` or
    ``[sys.executable, "-c", "pass"]`` (an archive_command runs as that user). Always true if not root."""
    if not running_as_root():
        return True
    probe = subprocess.run(as_owner(argv), stdin=subprocess.DEVNULL, capture_output=True)
    return probe.returncode == 0
