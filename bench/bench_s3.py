"""S3 bucket mirror: ``hadr backup s3`` (mode mirror) against ``rclone copy --transfers 16``.

One moto server (in server mode, over HTTP) holds a source bucket of ``HADR_BENCH_S3_OBJECTS`` (default
10,000) objects of 1–64 KiB (random bytes, fixed seed). Each side copies it into its own, fresh, versioned
bucket on the same endpoint — server-side copies on both sides (hadr: CopyObject with the version id and a
SHA-256 checksum, 16 workers; rclone: its S3 server-side copy, 16 transfers). Then ``HADR_BENCH_S3_CHANGED``
(default 1 %) of the objects are overwritten and each side runs again: hadr copies the new versions only, rclone
compares and copies the changed objects. Figures: objects per second (wall), CPU seconds (user + sys of the
command; the moto server's CPU is counted on neither side), and the peak RSS (VmHWM) of a process that streams a
listing of ``HADR_BENCH_S3_LIST_VERSIONS`` (default 100,000) versions through hadr's listing (and the same for a
tenth of them: memory must not grow with the listing), answered by a stand-in endpoint that generates the pages
(``VersionPages``; moto held 16 GB for 100k versions). ``HADR_BENCH_S3_OBJECTS=0`` measures the listing only.
rclone needs ``AWS_CA_BUNDLE`` unset; it is configured by
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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

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
# hadr's listing (retrying client, document order restored), with patient timeouts: moto answers a page of a
# 100k-version bucket slowly
LISTER = """
import sys
from botocore.config import Config
from hadr_backup.objectstore.client import BucketClient, ListingClient
from hadr_backup.objectstore.versions import list_versions
from hadr_backup.repo.s3 import _session
config = Config(connect_timeout=600, read_timeout=600, s3={"addressing_style": "path"})
client = _session().client("s3", endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="testing",
                           aws_secret_access_key="testing", config=config)
count = sum(1 for _ in list_versions(ListingClient(BucketClient(client, sys.argv[1], "bench")), sys.argv[2]))
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))  # reset by exec
print(count, int(peak.split()[1]) / 1024)
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

    def put(key: str) -> None:
        rng = random.Random(f"{seed}/{key}")
        client.put_object(Bucket=bucket, Key=key, Body=rng.randbytes(rng.randint(1, 64) << 10))

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(put, keys))


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


def hadr_policy(work: Path, endpoint: str, source: str, mirror: str | None) -> Path:
    """A policy whose bucket source copies into ``mirror`` (None: into the repository, encrypted)."""
    credentials = {"endpoint": endpoint, "access_key": "testing", "secret_key": "testing"}
    entry = {"name": "bench", "buckets": [source], "workers": WORKERS, **credentials}
    data = {"repository": {"path": str(work / "repo")}, "sources": {"buckets": [entry]}}
    if mirror is not None:
        entry["mirror"] = {"bucket": mirror, **credentials}
    else:
        data["encryption"] = {"key_file": str(work / "master.key")}
    work.mkdir(parents=True, exist_ok=True)
    policy = work / "policy.yaml"
    policy.write_text(yaml.safe_dump(data))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for command in (["key", "create"] if mirror is None else []), ["init"]:
        if command:
            subprocess.run([*HADR, "--policy", str(policy), *command], check=True, stdout=subprocess.DEVNULL, env=env)
    return policy


def listing_rss(endpoint: str, bucket: str, env: dict) -> tuple[int, float]:
    done = subprocess.run([sys.executable, "-c", LISTER, endpoint, bucket], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    count, rss = done.stdout.split()
    return int(count), float(rss)


def shown(figure: Figure) -> Figure:
    """Each figure on stderr as soon as it is measured (a later failure does not lose it)."""
    print(f"  {figure.name}: {figure.ours:,.2f} vs {figure.theirs} {figure.unit}", file=sys.stderr, flush=True)
    return figure


def run() -> list[Figure]:
    return on_moto("hadr-bench-s3-", _figures)


def on_moto(prefix: str, figures) -> list[Figure]:
    """``figures(work, server)`` against a fresh moto server in a fresh folder, both gone afterwards."""
    if not shutil.which("rclone"):
        raise RuntimeError("rclone is not installed: apt-get install -y rclone (scripts/setup.sh --bench)")
    work = Path(tempfile.mkdtemp(prefix=prefix))
    server = S3Server(free_port(), work / "moto")
    server.start()
    try:
        return figures(work, server)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _figures(work: Path, server: S3Server) -> list[Figure]:
    return (_mirror_figures(work, server) if OBJECTS else []) + _listing_figures()


def _mirror_figures(work: Path, server: S3Server) -> list[Figure]:
    client, endpoint = server.client(), server.endpoint_url
    keys = [f"data/{index:06d}.bin" for index in range(OBJECTS)]
    source = versioned(client, "bench-source")
    fill(client, source, keys, seed=1)
    versioned(client, "bench-hadr")
    versioned(client, "bench-rclone")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    policy = hadr_policy(work, endpoint, source, "bench-hadr")
    hadr_run = [*HADR, "--policy", str(policy), "backup", "s3"]
    rclone_run = ["rclone", "copy", "--transfers", str(WORKERS), "bench:bench-source", "bench:bench-rclone"]
    ours, theirs = measured(hadr_run, env), measured(rclone_run, rclone_env(endpoint))
    what = f"{OBJECTS:,} objects of 1-64 KiB"
    figures = [
        shown(
            Figure(
                f"s3 mirror, {what}",
                OBJECTS / ours[0],
                OBJECTS / theirs[0],
                "objects/s",
                True,
                COMPETITOR,
                "ratio >= 1.0",
            )
        ),
        shown(Figure(f"s3 mirror CPU, {what}", ours[1], theirs[1], "s", False, COMPETITOR, "")),
    ]
    into_repository = hadr_policy(work / "into-repository", endpoint, source, None)
    stored = measured([*HADR, "--policy", str(into_repository), "backup", "s3"], env)
    figures += [
        shown(Figure(f"s3 into the repository, {what}", OBJECTS / stored[0], None, "objects/s", True, "-", "")),
        shown(Figure(f"s3 into the repository CPU, {what}", stored[1], None, "s", False, "-", "")),
    ]
    changed = keys[:: max(1, round(1 / CHANGED))] if CHANGED > 0 else []
    fill(client, source, changed, seed=2)
    ours, theirs = measured(hadr_run, env), measured(rclone_run, rclone_env(endpoint))
    return figures + [
        shown(Figure(f"s3 rerun after {len(changed):,} changed", ours[0], theirs[0], "s", False, COMPETITOR, "")),
        shown(Figure(f"s3 rerun CPU after {len(changed):,} changed", ours[1], theirs[1], "s", False, COMPETITOR, "")),
    ]


def _listing_figures() -> list[Figure]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    figures = []
    for versions in (LIST_VERSIONS // 10, LIST_VERSIONS):
        with VersionPages(versions) as pages:
            count, rss = listing_rss(pages.endpoint, "bench-list", env)
        assert count == versions, (count, versions)
        target = "< 150" if versions == LIST_VERSIONS else ""
        figures.append(shown(Figure(f"s3 listing peak RSS, {count:,} versions", rss, None, "MB", False, "-", target)))
    return figures


class VersionPages:
    """A stand-in endpoint that answers ListObjectVersions for a bucket of ``versions`` records (10 per key,
    every fifth a delete marker), page by page as S3 does, generated on the fly: the listing side is what is
    measured (moto held 16 GB for 100k versions, and answers a page of them in seconds)."""

    def __init__(self, versions: int):
        self.versions = versions
        self.port = free_port()
        handler = type("Handler", (BaseHTTPRequestHandler,), {"do_GET": _page, "log_message": lambda *a: None})
        handler.pages = self
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> VersionPages:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def entry(self, index: int) -> str:
        key, age = f"k/{index // 10:07d}", index % 10
        modified = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(1_700_000_000 + (10 - age) * 60))
        head = f"<Key>{key}</Key><VersionId>i{index}</VersionId><IsLatest>{str(age == 0).lower()}</IsLatest>"
        if age % 5 == 1:
            return f"<DeleteMarker>{head}<LastModified>{modified}</LastModified></DeleteMarker>"
        tail = f'<ETag>"{index:032x}"</ETag><Size>{age + 1}</Size>'
        return f"<Version>{head}<LastModified>{modified}</LastModified>{tail}</Version>"


def _page(handler) -> None:
    pages = handler.pages
    query = parse_qs(urlsplit(handler.path).query)
    start = int(query.get("version-id-marker", ["i-1"])[0][1:]) + 1
    end = min(pages.versions, start + int(query.get("max-keys", ["1000"])[0]))
    more = end < pages.versions
    marker = (
        f"<NextKeyMarker>k/{(end - 1) // 10:07d}</NextKeyMarker><NextVersionIdMarker>i{end - 1}</NextVersionIdMarker>"
    )
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Name>bench-list</Name><IsTruncated>{str(more).lower()}</IsTruncated>{marker if more else ''}"
        + "".join(pages.entry(index) for index in range(start, end))
        + "</ListVersionsResult>"
    ).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/xml")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
