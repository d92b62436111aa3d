"""`hadr sandbox up|load|status|down` through the real CLI, in subprocesses, on free ports.

The first `up` writes the sandbox's policy.yaml with the ports of HADR_SANDBOX_PG_PORT,
HADR_SANDBOX_CACHE_PORT, HADR_SANDBOX_QUEUES_PORT and HADR_SANDBOX_S3_PORT, so each test gets its own;
one test passes a policy file of its own instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from hadr_backup.procs import free_port, pid_alive, port_open, stop_pid
from tests.schema_check import assert_schema

REPO_ROOT = Path(__file__).resolve().parents[2]
PORT_VARIABLES = ("HADR_SANDBOX_PG_PORT", "HADR_SANDBOX_CACHE_PORT", "HADR_SANDBOX_QUEUES_PORT", "HADR_SANDBOX_S3_PORT")


class SandboxCLI:
    """Runs ``python -m hadr_backup sandbox ...`` against one folder and one set of ports."""

    def __init__(self, folder: Path, ports: dict[str, int], policy: Path | None = None):
        self.folder, self.ports, self.policy = folder, ports, policy
        self.env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "PYTHONPATH": str(REPO_ROOT)}

    def argv(self, *args: str) -> list[str]:
        policy = ["--policy", str(self.policy)] if self.policy else []
        return [sys.executable, "-m", "hadr_backup", *policy, "sandbox", *args, "--dir", str(self.folder)]

    def run(self, *args: str, expect: int = 0, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run(
            self.argv(*args),
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == expect, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def json(self, *args: str, **kwargs: Any) -> dict[str, Any]:
        return json.loads(self.run(*args, "--json", **kwargs).stdout)

    def pids(self) -> list[int]:
        run_dir = self.folder / "run"
        return [int(p.read_text()) for p in run_dir.glob("*.pid")] if run_dir.exists() else []


@pytest.fixture
def sandbox_cli():
    """A sandbox folder (traversable by the postgres OS user) and free ports; torn down whatever happens."""
    parent = Path(tempfile.mkdtemp(prefix="hadr-sbx-", dir="/tmp"))
    parent.chmod(0o755)
    ports: dict[str, int] = {}
    while len(set(ports.values())) < len(PORT_VARIABLES):
        ports = {name: free_port() for name in PORT_VARIABLES}
    cli = SandboxCLI(parent / "sandbox", ports)
    try:
        yield cli
    finally:
        pids = cli.pids()
        subprocess.run(cli.argv("down"), env=cli.env, cwd=REPO_ROOT, capture_output=True, timeout=120)
        for pid in pids:  # in case down itself failed
            stop_pid(pid, timeout=5)
        shutil.rmtree(parent, ignore_errors=True)


def psql_show(port: int, setting: str) -> str:
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres", connect_timeout=10) as conn:
        return conn.execute(f"SHOW {setting}").fetchone()[0]


def counts_of(status: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for component in status["components"]:
        merged.update(component["counts"])
    return merged


def test_sandbox_lifecycle(sandbox_cli: SandboxCLI) -> None:
    # first up: everything runs, seeded, under the policy file it wrote (absolute paths, its ports)
    up = assert_schema("sandbox-up", sandbox_cli.json("up"))
    assert up["seeded"] is True
    assert all(c["running"] and c["pid"] for c in up["components"])
    assert {c["port"] for c in up["components"]} == set(sandbox_cli.ports.values())
    policy = sandbox_cli.folder / "policy.yaml"
    assert up["policy"] == str(policy) and up["export"] == f"export HADR_POLICY={policy}"
    written = policy.read_text()
    assert "${" not in written and f"path: {sandbox_cli.folder}/repo" in written
    assert all(f":{port}" in written or f"port={port}" in written for port in sandbox_cli.ports.values())
    archive_command = psql_show(sandbox_cli.ports["HADR_SANDBOX_PG_PORT"], "archive_command")
    assert f"--policy {policy} wal-push --source main %p" in archive_command
    assert "HADR_SANDBOX" not in archive_command

    # load: writes of every kind, invariants true afterwards
    loaded = sandbox_cli.run("load", "--seconds", "5", "--rate", "40", "--seed", "7", "--json")
    load = assert_schema("sandbox-load", json.loads(loaded.stdout))
    assert load["interrupted"] is False and load["problems"] == []
    assert load["counts"]["operations"] > 50 and load["counts"]["uploads"] > 0
    # its progress, off a terminal: a line when it starts, one when it ends with the operations done
    phases = [line for line in loaded.stderr.splitlines() if line.startswith("load on the sandbox in ")]
    assert len(phases) == 2, loaded.stderr
    assert phases[0].endswith(" at 40 operations/s, 5.0 s")
    assert re.search(rf": done, 5\.0 s in 5\.\d s; {load['counts']['operations']} operations$", phases[1]), phases

    # status: counts everywhere, invariants checked and true
    status = assert_schema("sandbox-status", sandbox_cli.json("status"))
    assert status["running"] is True and status["problems"] == []
    counts = counts_of(status)
    for key in (
        "payment_service.user",
        "payment_service.audit_log",
        "upload_service.new_data_item",
        "raw-data-items.objects",
        "keys",
        "jobs.wait",
    ):
        assert counts[key] > 0, key
    before = {k: v for k, v in counts.items() if k.startswith(("payment_service", "upload_service", "raw-"))}

    # a second up while running is refused
    refused = sandbox_cli.run("up", expect=2)
    assert "already running" in refused.stderr

    # Ctrl-C stops a load cleanly
    loading = subprocess.Popen(
        sandbox_cli.argv("load", "--seconds", "60", "--json"),
        env=sandbox_cli.env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    loading.send_signal(signal.SIGINT)
    out, err = loading.communicate(timeout=30)
    assert loading.returncode == 0, err
    interrupted = assert_schema("sandbox-load", out)
    assert interrupted["interrupted"] is True and interrupted["elapsed"] < 30 and interrupted["problems"] == []
    counts = counts_of(sandbox_cli.json("status"))
    before = {k: counts[k] for k in before}

    # down: no process left, ports free, pid files gone
    pids = sandbox_cli.pids()
    assert len(pids) == 4
    down = assert_schema("sandbox-down", sandbox_cli.json("down"))
    assert len(down["stopped"]) == 4 and down["saved_objects"] == before["raw-data-items.objects"]
    for pid in pids:
        assert not pid_alive(pid), pid
    for port in sandbox_cli.ports.values():
        assert not port_open(port), port
    assert sandbox_cli.pids() == []
    assert assert_schema("sandbox-status", sandbox_cli.json("status"))["running"] is False  # exit 0 while down

    # up again: the data is kept, not re-seeded
    again = assert_schema("sandbox-up", sandbox_cli.json("up"))
    assert again["seeded"] is False and again["restored_objects"] == before["raw-data-items.objects"]
    status = sandbox_cli.json("status")
    assert status["problems"] == []
    assert {k: counts_of(status)[k] for k in before} == before

    # down --purge removes the folder (its policy too); the next up seeds afresh, and its last line
    # points the other commands at the policy it wrote again
    sandbox_cli.run("down", "--purge")
    assert not sandbox_cli.folder.exists()
    human = sandbox_cli.run("up").stdout
    assert "seeded a fresh stack" in human and policy.is_file()
    assert human.splitlines()[-1] == f"export HADR_POLICY={policy}"
    sandbox_cli.run("down", "--purge")
    assert not sandbox_cli.folder.exists()


def test_up_refuses_a_taken_port_and_leaves_nothing_running(sandbox_cli: SandboxCLI) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", sandbox_cli.ports["HADR_SANDBOX_QUEUES_PORT"]))
        listener.listen()
        refused = sandbox_cli.run("up", expect=1)
    assert f"port {sandbox_cli.ports['HADR_SANDBOX_QUEUES_PORT']}" in refused.stderr
    assert "redis-queues" in refused.stderr
    assert not any(pid_alive(pid) for pid in sandbox_cli.pids())
    for name, port in sandbox_cli.ports.items():
        assert not port_open(port), name


def test_sandbox_under_a_policy_file(sandbox_cli: SandboxCLI) -> None:
    ports = sandbox_cli.ports
    policy = sandbox_cli.folder.parent / "policy.yaml"
    policy.write_text(f"""
repository: {{path: {sandbox_cli.folder}/repo}}
sandbox: {{dir: {sandbox_cli.folder}}}
sources:
  postgres:
    - name: pg
      dsn: host=127.0.0.1 port={ports["HADR_SANDBOX_PG_PORT"]} user=postgres dbname=postgres
      data_dir: {sandbox_cli.folder}/pgdata/data
      databases: [payment_service, upload_service]
  redis:
    - {{name: cache, url: "redis://127.0.0.1:{ports["HADR_SANDBOX_CACHE_PORT"]}/0", role: cache}}
    - {{name: queues, url: "redis://127.0.0.1:{ports["HADR_SANDBOX_QUEUES_PORT"]}/0", role: queue}}
  buckets:
    - {{name: items, endpoint: "http://127.0.0.1:{ports["HADR_SANDBOX_S3_PORT"]}", buckets: [raw-data-items]}}
""")
    sandbox_cli.policy = policy
    sandbox_cli.env = {k: v for k, v in sandbox_cli.env.items() if k not in PORT_VARIABLES}
    up = sandbox_cli.json("up")
    assert up["policy"] == str(policy) and up["seeded"] is True
    assert {c["name"] for c in up["components"]} == {"postgres-pg", "redis-cache", "redis-queues", "s3-items"}
    assert (sandbox_cli.folder / "pgdata" / "data" / "PG_VERSION").exists()

    assert up["export"] == f"export HADR_POLICY={policy}"
    assert not (sandbox_cli.folder / "policy.yaml").exists()  # the given policy is the one used
    assert psql_show(ports["HADR_SANDBOX_PG_PORT"], "archive_mode") == "on"
    archive_command = psql_show(ports["HADR_SANDBOX_PG_PORT"], "archive_command")
    assert archive_command.endswith(f"--policy {policy} wal-push --source pg %p")
    assert sandbox_cli.json("status")["problems"] == []
    sandbox_cli.run("down", "--purge")
    assert not sandbox_cli.folder.exists()


def test_a_failed_up_stops_what_it_started(sandbox_cli: SandboxCLI, monkeypatch: pytest.MonkeyPatch) -> None:
    from hadr_backup.sandbox import run
    from hadr_backup.sandbox.layout import sandbox_policy

    for name, port in sandbox_cli.ports.items():
        monkeypatch.setenv(name, str(port))
    policy, folder = sandbox_policy(None, sandbox_cli.folder, write=True)

    def failing_seed(sandbox: run.Sandbox) -> bool:
        raise RuntimeError("seeding failed")

    monkeypatch.setattr(run, "seed_if_new", failing_seed)
    pids: list[int] = []
    monkeypatch.setattr(run.Sandbox, "record_pid", lambda self, component, pid: pids.append(pid))
    with pytest.raises(RuntimeError, match="seeding failed"):
        run.run_sandbox_up(policy, folder)
    assert len(pids) == 4
    assert not any(pid_alive(pid) for pid in pids)
    for name, port in sandbox_cli.ports.items():
        assert not port_open(port), name
