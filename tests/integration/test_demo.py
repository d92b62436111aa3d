"""`hadr demo` end to end, through the real CLI, on a sandbox of its own (free ports, temp folder)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from hadr_backup.procs import port_open, stop_pid
from tests.integration.sandbox_support import REPO_ROOT, sandbox_place
from tests.schema_check import assert_schema

pytestmark = pytest.mark.integration


def test_demo_restores_the_damaged_rows_and_measures_rto_and_rpo() -> None:
    parent, folder, ports, env = sandbox_place("hadr-demo-")

    def hadr(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "hadr_backup", *args],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )

    try:
        done = hadr("--json", "demo", "--dir", str(folder), "--seconds", "3", "--stop-sandbox")
        assert done.returncode == 0, done.stdout + done.stderr
        result = assert_schema("demo", done.stdout)
        assert result["passed"] and result["damaged_rows"] > 0
        assert result["recovered_rows"] == result["damaged_rows"]
        assert result["later_rows"] > 0 and result["later_rows_absent"] == result["later_rows"]
        assert result["lost_rows"] == 0 and result["ledger_problems"] == 0
        assert 0 < result["rto"] < 120 and 0 <= result["rpo"] < 5
        assert result["restore"]["state"] == "paused"
        policy = folder / "policy.yaml"  # written by the demo's `sandbox up`, named by its absolute path
        assert f"--policy {policy} wal-fetch --source main %f %p" in result["restore"]["settings"]["restore_command"]
        assert not (folder / "demo-restore").exists()  # the side cluster is gone
        assert "4/6 point-in-time restore" in done.stderr
        redis = result["redis"]  # the queues restored to a second from the AOF archive, then checked
        assert redis["passed"] and redis["queues_as_at_target"] and redis["jobs_at_target"] > 0
        assert redis["archived_bytes"] > 0 and redis["reached"] <= redis["target"]
        # jobs workers had in hand at T: found by the checks on the restore's scratch server, then requeued
        assert redis["requeued"] >= 5 and redis["queue_findings"] == []
        assert any("left active" in w and "--requeue-active" in w for w in redis["restore_warnings"])
        assert not (folder / "demo-redis-restore").exists()
        bucket = result["bucket"]  # the sandbox bucket restored to an instant into a new bucket, verified
        assert bucket["passed"] and bucket["mismatches"] == 0 and bucket["demo_objects_as_at_target"]
        assert bucket["objects"] > 20 and "0 mismatches" in done.stderr and "verified:" in done.stderr
        # stopped at the end (as scripts/demo.sh asks), so another sandbox can take the ports
        assert result["sandbox_stopped"] is True
        assert not [port for port in ports.values() if port_open(port)], ports
    finally:
        pids = [int(p.read_text()) for p in (folder / "run").glob("*.pid")] if (folder / "run").exists() else []
        hadr("sandbox", "down", "--dir", str(folder))
        for pid in pids:
            stop_pid(pid, timeout=5)
        shutil.rmtree(parent, ignore_errors=True)
