"""S3 point-in-time restore: ``hadr restore s3 --to-bucket`` against ``rclone copy --transfers 16``.

One moto server (in server mode, over HTTP) holds a versioned source bucket of ``HADR_BENCH_S3_RESTORE_OBJECTS``
(default 5,000) objects of 1–64 KiB (random bytes, fixed seed); after the instant T a tenth of them are
overwritten. hadr restores the bucket as it was at T into a new bucket (the versions of T found in the
version listing, server-side copies, 16 workers) and then verifies it (every object read back and hashed, and
the source version of T read and hashed: twice the bucket's bytes read). rclone copies the current objects
into another bucket (server-side, 16 transfers): it cannot go back to T and checks nothing but sizes and
ETags, so it is the floor of what a copy costs. Figures: objects per second (wall) and CPU seconds (user + sys
of the command; the moto server's CPU is counted on neither side), with hadr's verification included and, for
comparison, a dry run (listing and planning only).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import yaml
from bench_s3 import WORKERS, fill, measured, on_moto, rclone_env, versioned
from runner import ROOT, Figure

sys.path.insert(0, str(ROOT))

from hadr_backup.sandbox.servers import S3Server  # noqa: E402
from hadr_backup.timefmt import rfc3339  # noqa: E402

OBJECTS = int(os.environ.get("HADR_BENCH_S3_RESTORE_OBJECTS", 5_000))
COMPETITOR = f"rclone copy --transfers {WORKERS}"
HADR = [sys.executable, "-m", "hadr_backup"]


def run() -> list[Figure]:
    return on_moto("hadr-bench-s3-restore-", _figures)


def _figures(work: Path, server: S3Server) -> list[Figure]:
    client, endpoint = server.client(), server.endpoint_url
    keys = [f"data/{index:06d}.bin" for index in range(OBJECTS)]
    source = versioned(client, "bench-source")
    fill(client, source, keys, seed=1)
    time.sleep(math.ceil(time.time()) - time.time() + 0.02)  # T in a second of its own
    target = math.floor(time.time()) + 0.5
    time.sleep(1.0)
    fill(client, source, keys[::10], seed=2)
    time.sleep(1.1)
    policy = _policy(work, endpoint, source)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    restore = [*HADR, "--policy", str(policy), "restore", "s3", "--bucket", source, "--target-time", rfc3339(target)]
    dry = measured([*restore, "--to-bucket", "bench-dry", "--dry-run"], env)
    ours = measured([*restore, "--to-bucket", "bench-restored"], env)
    versioned(client, "bench-rclone")
    theirs = measured(
        ["rclone", "copy", "--transfers", str(WORKERS), f"bench:{source}", "bench:bench-rclone"], rclone_env(endpoint)
    )
    what = f"{OBJECTS:,} objects of 1-64 KiB"
    return [
        Figure(f"s3 restore to T, {what}", OBJECTS / ours[0], OBJECTS / theirs[0], "objects/s", True, COMPETITOR, ""),
        Figure(f"s3 restore CPU, {what}", ours[1], theirs[1], "s", False, COMPETITOR, ""),
        Figure(f"s3 restore --dry-run, {what}", dry[0], None, "s", False, "-", ""),
    ]


def _policy(work: Path, endpoint: str, bucket: str) -> Path:
    entry = {"name": "bench", "endpoint": endpoint, "buckets": [bucket], "access_key": "testing"}
    data = {"repository": {"path": str(work / "repo")}, "sources": {"buckets": [{**entry, "secret_key": "testing"}]}}
    policy = work / "policy.yaml"
    policy.write_text(yaml.safe_dump(data))
    return policy
