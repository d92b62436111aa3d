"""Listing at scale: ``hadr info`` and the end-of-backup WAL wait on an S3 repository holding many WAL objects.

An S3 endpoint (moto, in this process) holds, per size, a repository (``init_repo``) with one source's
archive of N synthetic WAL segments (timeline 1, 16 MiB names, 256 to a folder; each object a real
pipeline-encoded body whose key carries its plaintext's SHA-256), its ``archive.json``, and a catalog with
one complete backup whose WAL is the archive's last three segments. The objects are written straight into
moto's backend (100k PUTs over HTTP take minutes); everything measured goes through hadr's S3 driver over
HTTP. Measured, each in a fresh ``python3`` process after its imports and a first S3 client:

* ``run_info`` (what ``hadr info`` runs; the source's DSN points at a closed port: no live cluster);
* ``wait_for_wal`` for that backup (``open_repo`` before the clock): the end of every ``hadr backup pg``.

Wall seconds, CPU seconds (user + sys of the process and its children) and peak memory (the rise of the
resident set over its level before the operation: VmHWM after ``/proc/self/clear_refs`` reset it).

``HADR_BENCH_LISTING_BEFORE=<git revision>``: the same runs against that revision's ``hadr_backup``
(``git archive`` into a temp dir), as "theirs" (ratio: before / after); it must read the catalog this tree
writes, so pick a recent one. ``HADR_BENCH_LISTING_OBJECTS``
(default 100000) is the large size; 100 objects is the small one. ``HADR_BENCH_LISTING_RUNS`` (default 1)
runs per figure, median counted. ``HADR_BENCH_LISTING_BACKUP=start`` puts the backup at the archive's start
instead, so that ``hadr info`` follows the WAL chain through the whole archive.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from runner import ROOT, Figure

sys.path.insert(0, str(ROOT))

from hadr_backup.procs import free_port  # noqa: E402

LARGE = int(os.environ.get("HADR_BENCH_LISTING_OBJECTS", 100_000))
SIZES = sorted({100, LARGE})
RUNS = int(os.environ.get("HADR_BENCH_LISTING_RUNS", 1))
BEFORE = os.environ.get("HADR_BENCH_LISTING_BEFORE")
BACKUP_AT = os.environ.get("HADR_BENCH_LISTING_BACKUP", "end")
SOURCE = "bench"
SEGMENT_SIZE = 16 << 20
PLAINTEXT = b"a synthetic WAL segment"

# The measured side: a fresh interpreter with PYTHONPATH at the tree under test. It uses only functions
# that exist before and after (parse_policy, run_info, open_repo, Streamed, wait_for_wal).
CHILD = r"""
import json, os, re, resource, sys, time
import yaml
import psycopg  # noqa: F401  imported before the clock, as the running command has it
from hadr_backup.policy.load import parse_policy
from hadr_backup.inventory import run_info
from hadr_backup.postgres import walstatus, waldecode  # noqa: F401
from hadr_backup.postgres.basebackup import Streamed, required_segments, wait_for_wal
from hadr_backup.repo.repository import open_repo
from hadr_backup.repo.s3 import make_client
for module in ("hadr_backup.postgres.archiveview", "hadr_backup.verify.walchain"):  # where windows live
    try:
        __import__(module)
    except ImportError:
        pass

operation, policy_file, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
assert os.path.dirname(os.path.dirname(os.path.realpath(__import__("hadr_backup").__file__))) == spec["tree"]
policy = parse_policy(yaml.safe_load(open(policy_file)), policy_file)
make_client(None, "us-east-1", None, None)  # the S3 service model loaded, as by any earlier request

def vm(field):
    return int(re.search(field + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

def cpu():
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                        resource.RUSAGE_CHILDREN)))

def measure(run):
    open("/proc/self/clear_refs", "w").write("5")  # VmHWM back to the current resident set
    rss, used, wall = vm("VmRSS"), cpu(), time.perf_counter()
    answer = run()
    wall, used = time.perf_counter() - wall, cpu() - used
    print(json.dumps({"wall": wall, "cpu": used, "memory": vm("VmHWM") - rss, "answer": answer}))

if operation == "info":
    measure(lambda: run_info(policy, time.time()).to_json()["sources"][0]["archive"]["segments"])
else:
    source = policy.sources.postgres_named(None)
    streamed = Streamed(objects=[], label="", manifest={}, timeline=1, start_lsn=spec["start_lsn"],
                        stop_lsn=spec["stop_lsn"], start_time=0.0, stop_time=0.0, segment_size=spec["segment_size"],
                        files=0, raw_size=0, checksum_failures=[])
    with open_repo(policy) as repo:
        measure(lambda: (wait_for_wal(repo, source, streamed), len(required_segments(streamed)))[1])
"""


@contextmanager
def s3_endpoint():
    """A moto S3 endpoint served from a thread of this process, and its in-memory backend."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    finally:
        server.stop()


def make_repository(work: Path, endpoint: str, backend, objects: int) -> tuple[Path, dict]:
    """A policy file for a repository holding ``objects`` archived segments and one backup; the spec of
    that backup's WAL (for the wait)."""
    import yaml

    from hadr_backup.policy.load import parse_policy
    from hadr_backup.postgres import wal
    from hadr_backup.repo.repository import init_repo, open_repo
    from hadr_backup.sandbox.servers import s3_client

    bucket = f"bench-listing-{objects}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    data = {
        "repository": {
            "url": f"s3://{bucket}/hadr",
            "endpoint": endpoint,
            "access_key": "testing",
            "secret_key": "testing",
        },
        "sources": {"postgres": [{"name": SOURCE, "dsn": f"host=127.0.0.1 port={free_port()} user=x"}]},
    }
    policy_file = work / f"policy-{objects}.yaml"
    policy_file.write_text(yaml.safe_dump(data))
    policy = parse_policy(data, str(policy_file))
    init_repo(policy)
    sha = hashlib.sha256(PLAINTEXT).hexdigest()
    names = [wal.segment_name_from_number(1, number, SEGMENT_SIZE) for number in range(objects)]
    with open_repo(policy, write=True) as repo:
        repo.put_json(
            wal.archive_info_key(SOURCE),
            {
                "system_identifier": 7,
                "segment_size": SEGMENT_SIZE,
                "page_magic": 0xD110,
                "pg_version": 15,
                "block_size": 8192,
            },
        )
        first = repo.put_object(wal.wal_object_key(SOURCE, names[0], sha), [PLAINTEXT])
        body = b"".join(s3_client(endpoint).get_object(Bucket=bucket, Key="hadr/" + first.key)["Body"])
        for name in names[1:]:
            backend.put_object(bucket, "hadr/" + wal.wal_object_key(SOURCE, name, sha), body)
        spec = add_backup(repo, objects)
    return policy_file, spec


def add_backup(repo, objects: int) -> dict:
    """A complete backup in the catalog whose WAL is three segments at the archive's end (or start)."""
    from hadr_backup.postgres import wal

    first = 0 if BACKUP_AT == "start" else objects - 3
    start_lsn, stop_lsn = first * SEGMENT_SIZE + 40, (first + 2) * SEGMENT_SIZE + 4096
    entry = repo.begin_backup("pg", SOURCE, {})
    tar = repo.put_object(f"backups/pg/{SOURCE}/{entry.id}/base.tar", [b"not a real tar"])
    manifest = repo.put_object(f"backups/pg/{SOURCE}/{entry.id}/backup_manifest", [b"{}"])
    meta = {
        "timeline": 1,
        "start_lsn": wal.format_lsn(start_lsn),
        "stop_lsn": wal.format_lsn(stop_lsn),
        "start_wal": wal.segment_name(1, start_lsn, SEGMENT_SIZE),
        "stop_wal": wal.segment_name(1, stop_lsn, SEGMENT_SIZE),
        "start_time": time.time() - 60,
        "stop_time": time.time() - 30,
        "wal_segment_size": SEGMENT_SIZE,
        "tar_objects": [tar.key],
        "manifest_object": manifest.key,
        "system_identifier": "7",
        "pg_version_num": 150000,
        "pg_version": "15.0",
    }
    repo.finish_backup(entry, [tar, manifest], meta)
    return {"start_lsn": start_lsn, "stop_lsn": stop_lsn, "segment_size": SEGMENT_SIZE}


def checkout(revision: str, into: Path) -> Path:
    """``hadr_backup`` as of ``revision``, unpacked into ``into``."""
    into.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "hadr_backup"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def measure(tree: Path, operation: str, policy_file: Path, spec: dict) -> dict:
    """One run of ``operation`` with ``tree``'s hadr_backup, in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            operation,
            str(policy_file),
            json.dumps({**spec, "tree": os.path.realpath(tree)}),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=tree,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{operation} with {tree} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"  {operation} {tree.name}: {result['wall']:.2f} s wall, {result['cpu']:.2f} s CPU, "
        f"{result['memory'] / 2**20:.1f} MiB, answer {result['answer']}",
        file=sys.stderr,
    )
    return result


def median_of(tree: Path, operation: str, policy_file: Path, spec: dict, expected: int) -> dict:
    runs = [measure(tree, operation, policy_file, spec) for _ in range(RUNS)]
    if any(run["answer"] != expected for run in runs):
        raise RuntimeError(f"{operation} with {tree} answered {[r['answer'] for r in runs]}, not {expected}")
    return {key: statistics.median(run[key] for run in runs) for key in ("wall", "cpu", "memory")}


def figures_for(label: str, after: dict, before: dict | None, unit: str, target: str) -> list[Figure]:
    """Wall and CPU time in ``unit`` (s or ms), peak memory in MiB; before as "theirs" when measured."""
    scale = {"s": 1, "ms": 1000}[unit]
    competitor = f"hadr {BEFORE} (before)" if before else ""

    def figure(what: str, key: str, factor: float, in_unit: str, goal: str = "") -> Figure:
        return Figure(
            f"{label}: {what}",
            after[key] * factor,
            before[key] * factor if before else None,
            in_unit,
            False,
            competitor,
            goal,
        )

    return [
        figure("wall", "wall", scale, unit, target),
        figure("CPU user+sys", "cpu", scale, unit),
        figure("peak memory", "memory", 1 / 2**20, "MiB"),
    ]


def run() -> list[Figure]:
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="hadr-bench-listing-") as temp, s3_endpoint() as (endpoint, backend):
        work = Path(temp)
        old = checkout(BEFORE, work / "before") if BEFORE else None
        for objects in SIZES:
            started = time.perf_counter()
            policy_file, spec = make_repository(work, endpoint, backend, objects)
            print(f"{objects} WAL objects stored in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            where = ", backup at the start" if BACKUP_AT == "start" else ""
            for operation, label, expected, unit, target in (
                ("info", f"hadr info, {objects:,} WAL objects{where}", objects, "s", ""),
                ("wait", f"end-of-backup WAL wait, {objects:,} WAL objects{where}", 3, "ms", "< 500"),
            ):
                after = median_of(ROOT, operation, policy_file, spec, expected)
                before = median_of(old, operation, policy_file, spec, expected) if old else None
                figures += figures_for(label, after, before, unit, target)
    return figures


if __name__ == "__main__":
    from runner import render_text

    print(render_text(run()))
