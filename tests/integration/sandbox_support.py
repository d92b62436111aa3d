"""A place for a sandbox of a test's own: a temp folder and free ports, and the environment that names them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hadr_backup.procs import free_port
from hadr_backup.sandbox.layout import PORT_VARIABLES

REPO_ROOT = Path(__file__).resolve().parents[2]


def sandbox_place(prefix: str) -> tuple[Path, Path, dict[str, int], dict[str, str]]:
    """(parent, sandbox folder, ports, environment): the parent is a new folder under /tmp that the postgres
    OS user can traverse (the caller removes it); the ports are free and distinct; the environment gives
    them as ``HADR_SANDBOX_*_PORT`` and puts this tree first on the import path."""
    parent = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    parent.chmod(0o755)
    ports: dict[str, int] = {}
    while len(set(ports.values())) < len(PORT_VARIABLES):
        ports = {name: free_port() for name in PORT_VARIABLES}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "PYTHONPATH": str(REPO_ROOT)}
    return parent, parent / "sandbox", ports, env
