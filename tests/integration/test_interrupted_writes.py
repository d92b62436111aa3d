"""kill -9 in the middle of `hadr backup pg`: the write it was doing leaves a recognisable leftover (a
temp file locally, an incomplete multipart upload on S3) under the backup's own folder, which its
running entry records; the next writer marks the entry failed and removes every leftover, and
`verify repo` passes again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from hadr_backup.repo.repository import make_storage, open_repo
from tests.integration.pg_support import PgEnv

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "s3"])
def env(request):
    s3 = None
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        bucket = f"kill-{uuid.uuid4().hex[:12]}"
        server.client().create_bucket(Bucket=bucket)
        s3 = (server.endpoint_url, bucket)
    env = PgEnv(encrypted=True, s3=s3)
    # about 90 MB of barely compressible rows: several multipart parts, a few seconds of streaming
    env.sql(
        "create table bulk as select g, md5(random()::text) || md5(random()::text) || md5(random()::text) "
        "as filler from generate_series(1, 900000) g"
    )
    yield env
    env.close()


def kill_mid_write(env: PgEnv) -> str:
    """Start a backup, SIGKILL it as soon as a write of its is half done; return the entry id."""
    store = make_storage(env.policy)
    process = subprocess.Popen(
        [sys.executable, "-m", "hadr_backup", "--policy", str(env.policy_path), "backup", "pg"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        leftovers = list(store.list_temporary("backups/"))
        if leftovers:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return leftovers[0].key.split("/")[3]
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"no write of the backup was ever seen half done (exit {process.wait()})")


def test_kill_9_leftovers_are_recorded_reported_and_removed_by_the_next_writer(env: PgEnv) -> None:
    killed = kill_mid_write(env)
    store = make_storage(env.policy)
    with open_repo(env.policy) as repo:
        entry = repo.catalog.get(killed)
    assert entry.state == "running" and entry.prefix == f"backups/pg/main/{killed}/"
    # (the archiver may be pushing WAL meanwhile: its own temp files are not the backup's)
    assert [i.key.startswith(entry.prefix) for i in store.list_temporary("backups/")] == [True]
    # verify sees the leftover under a running entry: not yet a problem (its process may be alive)
    report = json.loads(env.hadr("--json", "verify", "repo").stdout)
    assert any(f["code"] == "backup-running" and f["subject"] == killed for f in report["findings"])

    assert env.backup().state == "complete"  # the next writer: marks it failed, removes its leftovers
    with open_repo(env.policy) as repo:
        entry = repo.catalog.get(killed)
    assert entry.state == "failed" and entry.cleaned and "interrupted" in entry.error
    assert list(store.list_temporary("backups/")) == []
    assert list(store.list(entry.prefix)) == []
    done = env.hadr("verify", "repo")
    assert done.returncode == 0, done.stdout
