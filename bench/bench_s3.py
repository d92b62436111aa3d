"""S3 bucket mirror: ``hadr backup s3`` (mode mirror) against ``rclone copy --transfers 16``.

One moto server (in server mode, over HTTP) holds a source bucket of ``HADR_BENCH_S3_OBJECTS`` (default
10,000) objects of 1–64 KiB (random bytes, fixed seed). Each side copies it into its own, fresh, versioned
bucket on the same endpoint — server-side copies on both sides (hadr: CopyObject with the version id and a
SHA-256 checksum, 16 workers; rclone: its S3 server-side copy, 16 transfers). Then ``HADR_BENCH_S3_CHANGED``
(default 1 %) of the objects are overwritten and each side runs again: hadr copies the new versions only, rclone
compares and copies the changed objects. Figures: objects per second (wall), CPU seconds (user + sys of the
command; the moto server's CPU is counted on neither side), and the peak RSS of a process that streams a listing
of ``HADR_BENCH_S3_LIST_VERSIONS`` (default 100,000) versions through ``list_versions`` (and the same for a tenth
of them: memory must not grow with the listing). rclone needs ``AWS_CA_BUNDLE`` unset; it is configured by
``RCLONE_CONFIG_BENCH_*`` environment variables.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from runner import ROOT, Figure

sys.path.insert(0, str(ROOT))

from hadr_backup.procs import free_port  # noqa: E402
from hadr_backup.sandbox.servers import S3Server  # noqa: E402

OBJECTS = int(os.environ.get("HADR_BENCH_S3_OBJECTS", 10_000))
CHANGED = float(os.environ.get("HADR_BENCH_S3_CHANGED", 0.01))
LIST_VERSIONS = int(os.environ.get("HADR_BENCH_S3_LIST_VERSIONS", 100_000))
WORKERS = 16
COMPETITOR = f"rclone copy --transfers {WORKERS}"
HADR = [sys.executable, "-m", "hadr_backup"]
LISTER = """
import resource, sys
from hadr_backup.objectstore.client import ListingClient, source_client
from hadr_backup.objectstore.versions import list_versions
from hadr_backup.policy.model import BucketSource
source = BucketSource("bench", sys.argv[1], (sys.argv[2],), access_key="testing", secret_key="testing")
count = sum(1 for _ in list_versions(ListingClient(source_client(source)), sys.argv[2]))
print(count, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def measured(argv: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, user+sys CPU seconds of the child) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def fill(client, bucket: str, keys: list[str], seed: int) -> None:
    """Put one object of 1–64 KiB per key (random bytes from ``seed``), 16 at a time."""
    rng = random.Random(seed)
    bodies = {key: rng.randbytes(rng.randint(1, 64) << 10) for key in keys}
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=bucket, Key=key, Body=bodies[key]), keys))


def versioned(client, bucket: str) -> str:
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def rclone_env(endpoint: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update(
        RCLONE_CONFIG_BENCH_TYPE="s3",
        RCLONE_CONFIG_BENCH_PROVIDER="Other",
        RCLONE_CONFIG_BENCH_ENDPOINT=endpoint,
        RCLONE_CONFIG_BENCH_ACCESS_KEY_ID="testing",
        RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY="testing",
        RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE="true",
    )
    return env


def hadr_policy(work: Path, endpoint: str, source: str, mirror: str) -> Path:
    credentials = {"endpoint": endpoint, "access_key": "testing", "secret_key": "testing"}
    entry = {"name": "bench", "buckets": [source], "workers": WORKERS, "mirror": {"bucket": mirror, **credentials}}
    data = {"repository": {"path": str(work / "repo")}, "sources": {"buckets": [{**entry, **credentials}]}}
    policy = work / "policy.yaml"
    policy.write_text(yaml.safe_dump(data))
    return policy


def listing_rss(endpoint: str, bucket: str, env: dict) -> tuple[int, float]:
    done = subprocess.run([sys.executable, "-c", LISTER, endpoint, bucket], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    count, rss = done.stdout.split()
    return int(count), float(rss)


def run() -> list[Figure]:
    if not shutil.which("rclone"):
        raise RuntimeError("rclone is not installed: apt-get install -y rclone (scripts/setup.sh --bench)")
    work = Path(tempfile.mkdtemp(prefix="hadr-bench-s3-"))
    server = S3Server(free_port(), work / "moto")
    server.start()
    try:
        return _figures(work, server)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _figures(work: Path, server: S3Server) -> list[Figure]:
    client, endpoint = server.client(), server.endpoint_url
    keys = [f"data/{index:06d}.bin" for index in range(OBJECTS)]
    source = versioned(client, "bench-source")
    fill(client, source, keys, seed=1)
    versioned(client, "bench-hadr")
    versioned(client, "bench-rclone")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    policy = hadr_policy(work, endpoint, source, "bench-hadr")
    subprocess.run([*HADR, "--policy", str(policy), "init"], check=True, stdout=subprocess.DEVNULL, env=env)
    hadr_run = [*HADR, "--policy", str(policy), "backup", "s3"]
    rclone_run = ["rclone", "copy", "--transfers", str(WORKERS), "bench:bench-source", "bench:bench-rclone"]
    ours, theirs = measured(hadr_run, env), measured(rclone_run, rclone_env(endpoint))
    changed = keys[:: max(1, round(1 / CHANGED))] if CHANGED > 0 else []
    fill(client, source, changed, seed=2)
    ours_again, theirs_again = measured(hadr_run, env), measured(rclone_run, rclone_env(endpoint))
    fill_versions(client, LIST_VERSIONS)
    small = listing_rss(endpoint, "bench-list-small", env)
    large = listing_rss(endpoint, "bench-list", env)
    what = f"{OBJECTS:,} objects of 1-64 KiB"
    rate = lambda seconds: OBJECTS / seconds  # noqa: E731
    return [
        Figure(f"s3 mirror, {what}", rate(ours[0]), rate(theirs[0]), "objects/s", True, COMPETITOR, "ratio >= 1.0"),
        Figure(f"s3 mirror CPU, {what}", ours[1], theirs[1], "s", False, COMPETITOR, ""),
        Figure(f"s3 rerun after {len(changed):,} changed", ours_again[0], theirs_again[0], "s", False, COMPETITOR, ""),
        Figure(
            f"s3 rerun CPU after {len(changed):,} changed", ours_again[1], theirs_again[1], "s", False, COMPETITOR, ""
        ),
        Figure(f"s3 listing peak RSS, {small[0]:,} versions", small[1], None, "MB", False, "-", ""),
        Figure(f"s3 listing peak RSS, {large[0]:,} versions", large[1], None, "MB", False, "-", "< 150"),
    ]


def fill_versions(client, versions: int) -> None:
    """``bench-list``: ``versions`` versions (10 per key, tiny); ``bench-list-small``: a tenth of them."""
    for bucket, count in (("bench-list", versions), ("bench-list-small", versions // 10)):
        versioned(client, bucket)
        keys = [f"k/{index:07d}" for index in range(max(1, count // 10))]

        def ten(key: str, bucket: str = bucket) -> None:
            for round_ in range(10):
                client.put_object(Bucket=bucket, Key=key, Body=str(round_).encode())

        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(ten, keys))
