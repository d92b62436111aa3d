"""The repository lock keeps writers apart and names the holder; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hadr_backup.errors import LockHeld
from hadr_backup.repo.lock import RepoLock

HOLD = """
import sys, time
from pathlib import Path
from hadr_backup.repo.lock import RepoLock
lock = RepoLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def hold_lock(path):
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_second_writer_gets_a_clear_error_naming_the_holder(tmp_path):
    path = tmp_path / ".lock"
    holder = hold_lock(path)
    try:
        with pytest.raises(LockHeld) as caught:
            RepoLock(path).acquire()
        assert f"pid {holder.pid}" in str(caught.value)
        assert "wait for that run to finish" in str(caught.value)
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_process_is_detected_as_stale(tmp_path):
    path = tmp_path / ".lock"
    holder = hold_lock(path)
    holder.kill()
    holder.wait()
    lock = RepoLock(path).acquire()
    try:
        assert lock.previous_holder["pid"] == holder.pid
        assert json.loads(path.read_text())["pid"] == os.getpid()
    finally:
        lock.release()


def test_release_then_reacquire(tmp_path):
    path = tmp_path / ".lock"
    with RepoLock(path) as lock:
        assert lock.previous_holder is None
    with RepoLock(path):
        pass
    assert path.read_text() == ""


def test_lock_is_held_for_the_whole_context(tmp_path):
    path = tmp_path / ".lock"
    with RepoLock(path):
        with pytest.raises(LockHeld):  # non-blocking: a waiting lock would hang here
            RepoLock(path).acquire()
