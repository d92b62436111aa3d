"""The README's "By hand" steps, run as they are written.

``scripts/by-hand.sh`` holds them and the README shows that file verbatim (checked here); the script runs in a
fresh folder, with `hadr` on PATH running this checkout and the sandbox's ports taken from
HADR_SANDBOX_*_PORT (which only the first `up` reads: the policy file it writes keeps them). Afterwards the
restored cluster is started again: it was promoted (a primary on a new timeline), holds every row written up
to the target and none after it, and its restore_command names the sandbox policy by its absolute path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from hadr_backup.procs import free_port, stop_pid
from hadr_backup.timefmt import parse_target_time

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "by-hand.sh"
PG_CTL = "/usr/lib/postgresql/15/bin/pg_ctl"
PORT_VARIABLES = ("HADR_SANDBOX_PG_PORT", "HADR_SANDBOX_CACHE_PORT", "HADR_SANDBOX_QUEUES_PORT", "HADR_SANDBOX_S3_PORT")
AUDIT_ROWS = "SELECT count(*) FROM audit_log WHERE audit_date {} %s"
REPLAYED_ROWS = "SELECT count(*) FROM audit_log WHERE audit_date > %s AND audit_date <= %s"


def script_steps() -> list[str]:
    text = SCRIPT.read_text()
    return text.split("set -euo pipefail\n\n", 1)[1].splitlines()


def readme_steps() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    by_hand = readme[readme.index("By hand") : readme.index("## Configuration")]
    blocks = re.findall(r"```sh\n(.*?)```", by_hand, re.DOTALL)
    return next(block for block in blocks if block.startswith("hadr sandbox up")).splitlines()


def test_the_readme_shows_the_script_verbatim() -> None:
    assert script_steps() and readme_steps() == script_steps()


@pytest.fixture
def by_hand_folder():
    """A fresh folder the postgres OS user can enter, a `hadr` command for this checkout, free ports;
    the restored cluster and the sandbox are stopped afterwards whatever happened."""
    parent = Path(tempfile.mkdtemp(prefix="hadr-byhand-", dir="/tmp"))
    parent.chmod(0o755)
    work, bin_dir = parent / "work", parent / "bin"
    for folder in (work, bin_dir):
        folder.mkdir()
        folder.chmod(0o755)
    (bin_dir / "hadr").write_text(f'#!/bin/sh\nexec {sys.executable} -m hadr_backup "$@"\n')
    (bin_dir / "hadr").chmod(0o755)
    ports: dict[str, int] = {}
    while len(set(ports.values())) < len(PORT_VARIABLES):
        ports = {name: free_port() for name in PORT_VARIABLES}
    env = {
        **os.environ,
        **{k: str(v) for k, v in ports.items()},
        "PYTHONPATH": str(REPO_ROOT),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    try:
        yield work, env, ports
    finally:
        if (work / "restored" / "postmaster.pid").exists():
            subprocess.run(
                ["runuser", "-u", "postgres", "--", PG_CTL, "-D", str(work / "restored"), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
            )
        run_dir = work / ".hadr-sandbox" / "run"
        pids = [int(p.read_text()) for p in run_dir.glob("*.pid")] if run_dir.exists() else []
        subprocess.run(["hadr", "sandbox", "down"], cwd=work, env=env, capture_output=True, timeout=120)
        for pid in pids:
            stop_pid(pid, timeout=5)
        shutil.rmtree(parent, ignore_errors=True)


def test_the_by_hand_steps_restore_to_the_target_and_promote(by_hand_folder) -> None:
    work, env, ports = by_hand_folder
    done = subprocess.run(
        ["bash", str(SCRIPT)], cwd=work, env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    policy = work / ".hadr-sandbox" / "policy.yaml"

    # `sandbox up` printed the line the script exports; the restore promoted
    assert f"export HADR_POLICY={policy}" in done.stdout.splitlines()
    assert re.search(r"^state\s+promoted\b", done.stdout, re.MULTILINE), done.stdout
    target = parse_target_time(re.search(r"target time resolves to (\S+ \S+) \(UTC\)", done.stderr).group(1))

    # the restored cluster fetches WAL under the sandbox policy, named by its absolute path
    auto_conf = (work / "restored" / "postgresql.auto.conf").read_text()
    restore_command = re.search(r"^restore_command = '(.*)'$", auto_conf, re.MULTILINE).group(1)
    assert f"--policy {policy} wal-fetch --source main %f %p" in restore_command
    assert "HADR_SANDBOX" not in restore_command

    # started again, it is a primary on a new timeline with the rows up to the target and none after it
    port = free_port()
    started = subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            PG_CTL,
            "-D",
            str(work / "restored"),
            "-l",
            str(work / "restored" / "again.log"),
            "-o",
            f"-p {port}",
            "-w",
            "start",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    settled = target - timedelta(seconds=1)  # a row inserted by then was committed before the target
    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=payment_service") as copy:
        assert copy.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        assert copy.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()[0] >= 2
        copied_before = copy.execute(AUDIT_ROWS.format("<="), (settled,)).fetchone()[0]
        copied_after = copy.execute(AUDIT_ROWS.format(">"), (target,)).fetchone()[0]
        copied_replayed = copy.execute(REPLAYED_ROWS, (target - timedelta(seconds=8), settled)).fetchone()[0]

    # production (the sandbox, up again with the policy file it wrote) wrote rows after the target
    up = subprocess.run(["hadr", "sandbox", "up"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    with psycopg.connect(
        f"host=127.0.0.1 port={ports['HADR_SANDBOX_PG_PORT']} user=postgres dbname=payment_service"
    ) as production:
        before = production.execute(AUDIT_ROWS.format("<="), (settled,)).fetchone()[0]
        after = production.execute(AUDIT_ROWS.format(">"), (target,)).fetchone()[0]
        replayed = production.execute(REPLAYED_ROWS, (target - timedelta(seconds=8), settled)).fetchone()[0]
    assert replayed > 0 and copied_replayed == replayed  # written by the first load, after the first backup
    assert copied_before == before
    assert after > 0 and copied_after == 0
