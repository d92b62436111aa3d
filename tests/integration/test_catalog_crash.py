"""kill -9 a catalog writer at random points: the catalog always loads and never shows an unfinished
backup as complete; the next writer marks the interrupted one failed and carries on."""

from __future__ import annotations

import random
import subprocess
import sys
import time

from hadr_backup.repo.catalog import COMPLETE, FAILED, RUNNING
from hadr_backup.repo.keys import create_key_file
from hadr_backup.repo.repository import init_repo, open_repo
from tests.helpers import local_policy, local_policy_data, write_policy

WRITER = """
import os, random, sys
from hadr_backup.policy.load import load_policy
from hadr_backup.repo.repository import open_repo
policy = load_policy(sys.argv[1])
with open_repo(policy, write=True) as repo:
    print("open", flush=True)
    while True:
        entry = repo.begin_backup("pg", "main", {"note": "crash test"})
        objects = [repo.put_object(f"backups/pg/main/{entry.id}/part{i}",
                                   [os.urandom(random.randint(1, 400_000))]) for i in range(3)]
        repo.finish_backup(entry, objects)
"""


def test_kill_9_at_random_points_never_leaves_a_false_complete(tmp_path):
    key = tmp_path / "k.key"
    create_key_file(key)
    policy = local_policy(tmp_path / "repo", key)
    policy_file = write_policy(tmp_path / "p.yaml", local_policy_data(tmp_path / "repo", key))
    init_repo(policy)
    rng = random.Random(1234)
    seen_states: set[str] = set()
    for round_ in range(24):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(policy_file)], stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "open"
        time.sleep(rng.uniform(0.0, 0.25))
        writer.kill()
        writer.wait()

        with open_repo(policy) as repo:  # read-only: must always load
            for entry in repo.catalog.entries:
                seen_states.add(entry.state)
                if entry.state == COMPLETE:
                    assert len(entry.objects) == 3, f"round {round_}: {entry.id} complete without its objects"
                    for stored in entry.objects:
                        data = b"".join(repo.read_object(stored.key, sha256=stored.sha256))
                        assert len(data) == stored.raw_size
    # the next writer marks the interrupted backup failed, and works
    with open_repo(policy, write=True) as repo:
        assert not [e for e in repo.catalog.entries if e.state == RUNNING]
        failed = [e for e in repo.catalog.entries if e.state == FAILED]
        assert failed and all("interrupted" in e.error for e in failed)
        entry = repo.begin_backup("pg", "main")
        repo.finish_backup(entry, [repo.put_object(f"backups/pg/main/{entry.id}/x", [b"after"])])
    with open_repo(policy) as repo:
        assert repo.catalog.get(entry.id).state == COMPLETE
    assert COMPLETE in seen_states and RUNNING in seen_states
