"""Restore extraction: hadr's own tar reader and extractor against the standard library's.

``postgres/tarsafe.py`` (with ``tarstream.py``) reads the tar stream and extracts it safely. The
alternative is ``tarfile.open(mode="r|")`` with PEP 706's ``filter="data"`` (Python >= 3.11.4), given the
same durability and ownership (``TarfileExtractor`` below: files created with O_EXCL | O_NOFOLLOW, fsynced
on a thread while the next ones are written, owned by the server's OS user, directories fsynced at the end).

One cluster holds a pgbench database of scale ``HADR_BENCH_PG_SCALE`` (default 50, about 790 MB) and one
hadr base backup of it (zstd level 3, 2 threads, unencrypted, as in ``bench_pg``). Both extractors then
restore that backup into an empty directory, the sides interleaved, ``RUNS`` times each, and the median
counts:

* restore: the backup's tar objects read from the repository (checked, decompressed) and extracted, as
  ``hadr restore pg`` does;
* extract only: the same tar stream read from a plain file in 1 MiB pieces, so that only the extractors differ.

Wall seconds and CPU seconds (user + system, every thread of this process) are measured; the two restored
directories are checked to hold the same files with the same contents and modes. ``safety()`` runs the
hostile archives of ``tests/unit/test_tarsafe.py`` through both and prints where they disagree.
"""

from __future__ import annotations

import hashlib
import io
import os
import pwd
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import yaml
from runner import ROOT, Figure

sys.path.insert(0, str(ROOT))

from hadr_backup.fsutil import fsync_dir  # noqa: E402
from hadr_backup.postgres.tarsafe import ExtractStats, SafeExtractor, UnsafeArchive, _Syncer  # noqa: E402
from hadr_backup.procs import free_port, prepare_dir_for_postgres, running_as_root  # noqa: E402
from hadr_backup.sandbox.servers import PostgresCluster  # noqa: E402

SCALE = int(os.environ.get("HADR_BENCH_PG_SCALE", 50))
RUNS = int(os.environ.get("HADR_BENCH_PG_RUNS", 3))
PIECE = 1 << 20
BIN = "/usr/lib/postgresql/15/bin"
COMPETITOR = f"tarfile r| + filter='data' (Python {sys.version.split()[0]})"


# -- the standard library's extractor, with SafeExtractor's interface -------------------------------


class _ChunkStream(io.RawIOBase):
    """A readable file over an iterable of byte chunks (what tarfile's stream mode reads from)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks, self._view = iter(chunks), memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._view:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._view = memoryview(chunk)
        size = min(len(buffer), len(self._view))
        buffer[:size], self._view = self._view[:size], self._view[size:]
        return size


class _DurableTarFile(tarfile.TarFile):
    """tarfile with SafeExtractor's file creation, ownership and durability."""

    extractor: TarfileExtractor

    def makefile(self, tarinfo: tarfile.TarInfo, targetpath: str) -> None:
        x = self.extractor
        self.fileobj.seek(tarinfo.offset_data)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(targetpath, flags, 0o600)
        try:
            with open(fd, "wb", closefd=False, buffering=0) as target:
                tarfile.copyfileobj(self.fileobj, target, tarinfo.size, tarfile.ReadError, PIECE)
            if x.owner:
                os.fchown(fd, *x.owner)
        except BaseException:
            os.close(fd)
            raise
        if x.syncer is not None:
            x.syncer.submit(fd)
        else:
            os.close(fd)
        x.directories.add(os.path.dirname(targetpath))
        x.stats.files += 1
        x.stats.bytes += tarinfo.size

    def makedir(self, tarinfo: tarfile.TarInfo, targetpath: str) -> None:
        # the data filter drops a directory's mode (the umask's default, 0755, would follow); keep 0700
        try:
            os.mkdir(targetpath, 0o700)
        except FileExistsError:
            pass
        self.extractor.directories.update((targetpath, os.path.dirname(targetpath)))
        self.extractor.stats.directories += 1

    def makelink(self, tarinfo: tarfile.TarInfo, targetpath: str) -> None:
        super().makelink(tarinfo, targetpath)
        self.extractor.stats.links += 1

    def chown(self, tarinfo: tarfile.TarInfo, targetpath: str, numeric_owner: bool) -> None:
        if self.extractor.owner:
            os.lchown(targetpath, *self.extractor.owner)


class TarfileExtractor:
    """``SafeExtractor(root, owner=, durable=).extract(chunks)`` on top of tarfile's data filter."""

    def __init__(self, root: Path, *, owner: tuple[int, int] | None = None, durable: bool = False):
        self.root, self.owner, self.durable = Path(root), owner, durable
        self.stats, self.directories, self.syncer = ExtractStats(), {str(root)}, None

    def extract(self, chunks: Iterable[bytes]) -> ExtractStats:
        self.syncer = _Syncer() if self.durable else None
        try:
            with _DurableTarFile.open(fileobj=_ChunkStream(chunks), mode="r|", bufsize=PIECE) as archive:
                archive.extractor = self
                archive.extractall(self.root, filter="data")
        except (tarfile.FilterError, tarfile.ReadError, FileExistsError, NotADirectoryError) as error:
            raise UnsafeArchive(f"{type(error).__name__}: {error}") from None
        finally:
            if self.syncer is not None:
                self.syncer.finish()
        if self.durable:
            for directory in sorted(self.directories, key=len, reverse=True):
                fsync_dir(directory)
        return self.stats


EXTRACTORS: dict[str, Callable[..., object]] = {"hadr": SafeExtractor, "tarfile": TarfileExtractor}


# -- the base backup -----------------------------------------------------------------------------


def sh(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"failed ({done.returncode}): {' '.join(argv)}\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return done.stdout


def make_backup(base: Path) -> tuple[object, object]:
    """A pgbench cluster of scale SCALE, backed up once; returns (policy, catalog entry)."""
    from hadr_backup.policy.load import load_policy
    from hadr_backup.repo.repository import open_repo

    prepare_dir_for_postgres(base)
    prepare_dir_for_postgres(base / "repo")
    cluster = PostgresCluster(base / "pg", free_port())
    policy_path = base / "policy.yaml"
    policy_path.write_text(
        yaml.safe_dump(
            {
                "repository": {"path": str(base / "repo")},
                "compression": {"level": 3, "threads": 2},
                "sources": {"postgres": [{"name": "main", "dsn": cluster.dsn(), "backup_timeout": 600}]},
            }
        )
    )
    hadr = [sys.executable, "-m", "hadr_backup", "--policy", str(policy_path)]
    cluster.init()
    cluster.write_settings({"max_wal_size": "4GB", "checkpoint_timeout": "30min"})
    cluster.start()
    try:
        sh(
            [
                f"{BIN}/pgbench",
                "-h",
                "127.0.0.1",
                "-p",
                str(cluster.port),
                "-U",
                "postgres",
                "-i",
                "-s",
                str(SCALE),
                "-q",
                "postgres",
            ]
        )
        cluster.stop()
        command = " ".join([*hadr, "wal-push", "--source", "main", "%p"])
        cluster.write_settings({"archive_mode": "on", "archive_command": command})
        cluster.start()
        sh([*hadr, "init"])
        sh([*hadr, "backup", "pg"])
    finally:
        cluster.stop("immediate")
    policy = load_policy(str(policy_path))
    with open_repo(policy) as repo:
        entry = [e for e in repo.catalog.select(kind="pg") if e.complete][-1]
    return policy, entry


def repository_chunks(policy, entry) -> Iterator[bytes]:
    from hadr_backup.repo.repository import open_repo

    sha = {o.key: o.sha256 for o in entry.objects}
    with open_repo(policy) as repo:
        for key in entry.meta["tar_objects"]:
            yield from repo.read_object(key, sha256=sha.get(key))


def file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as source:
        while piece := source.read(PIECE):
            yield piece


# -- measuring -------------------------------------------------------------------------------------


def measure(name: str, chunks: Iterable[bytes], target: Path, owner) -> tuple[float, float]:
    """(wall, CPU) seconds of one durable extraction into the empty ``target``."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    os.sync()
    cpu, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    EXTRACTORS[name](target, owner=owner, durable=True).extract(chunks)
    wall, after = time.perf_counter() - wall, resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    print(f"  {name:8} {wall:6.2f} s wall {cpu:6.2f} s CPU", file=sys.stderr, flush=True)
    return wall, cpu


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files) + dirs:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            digest.update(f"{os.path.relpath(path, root)} {info.st_mode:o} {info.st_uid}\n".encode())
            if os.path.islink(path):
                digest.update(os.readlink(path).encode())
            elif os.path.isfile(path):
                with open(path, "rb") as handle:
                    while block := handle.read(PIECE):
                        digest.update(block)
    return digest.hexdigest()


def run() -> list[Figure]:
    base = Path(tempfile.mkdtemp(prefix="hadr-bench-tar-", dir=os.environ.get("HADR_BENCH_DIR", "/tmp")))
    owner = (pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid) if running_as_root() else None
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        policy, entry = make_backup(base)
        plain = base / "base.tar"
        with open(plain, "wb") as out:
            for chunk in repository_chunks(policy, entry):
                out.write(chunk)
        print(f"  backup {entry.id}: {plain.stat().st_size / 1e6:.0f} MB of tar", file=sys.stderr, flush=True)
        digests = set()
        for run_number in range(RUNS):
            order = ("hadr", "tarfile") if run_number % 2 == 0 else ("tarfile", "hadr")
            for name in order:
                target = base / f"restored-{name}"
                times.setdefault(("restore", name), []).append(
                    measure(name, repository_chunks(policy, entry), target, owner)
                )
                times.setdefault(("extract", name), []).append(measure(name, file_chunks(plain), target, owner))
                if run_number == 0:
                    digests.add(tree_digest(target))
        if len(digests) != 1:
            raise RuntimeError("the two extractors restored different trees")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return figures(times)


def figures(times: dict[tuple[str, str], list[tuple[float, float]]]) -> list[Figure]:
    found = []
    for phase, label in (("restore", "repository -> directory"), ("extract", "plain tar file -> directory")):
        for index, unit in ((0, "s wall"), (1, "s CPU")):
            ours = statistics.median(t[index] for t in times[(phase, "hadr")])
            theirs = statistics.median(t[index] for t in times[(phase, "tarfile")])
            print(f"  median {phase} {unit}: hadr {ours:.2f}, tarfile {theirs:.2f}", file=sys.stderr, flush=True)
            found.append(
                Figure(
                    f"{phase} scale {SCALE}, {label} ({unit.split()[1]})",
                    ours,
                    theirs,
                    unit.split()[0],
                    False,
                    COMPETITOR,
                    "",
                )
            )
    return found


# -- safety ------------------------------------------------------------------------------------------


def safety() -> list[tuple[str, str, str, str]]:
    """(case, SafeExtractor, tarfile's data filter as it is, TarfileExtractor) for every hostile archive."""
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from test_tarsafe import COLLIDING, ESCAPING, _tar, path_max_escape

    cases = [
        (" ".join(f"{n}:{k}" + (f"->{v}" if k.endswith("link") else "") for n, k, v in members), _tar(members))
        for members, _ in ESCAPING + COLLIDING
    ]
    cases.append(("symlink chain past PATH_MAX (CVE-2025-4517)", path_max_escape()))
    rows = []
    for label, data in cases:
        outcomes = [
            _outcome(lambda root, d=data, e=extractor: e(root).extract([d]))
            for extractor in (SafeExtractor, TarfileExtractor)
        ]
        plain = _outcome(
            lambda root, d=data: tarfile.open(fileobj=io.BytesIO(d), mode="r|").extractall(root, filter="data")
        )
        rows.append((label, outcomes[0], plain, outcomes[1]))
    return rows


def _outcome(extract: Callable[[Path], object]) -> str:
    top = Path(tempfile.mkdtemp(prefix="hadr-tar-safety-"))
    root = top / "a" / "root"
    root.mkdir(parents=True)
    try:
        extract(root)
        verdict = "accepted"
    except (UnsafeArchive, tarfile.TarError, OSError) as error:
        verdict = f"refused ({type(error).__name__})"
    escaped = [p for p in top.rglob("*") if root not in p.parents and p != root and p.name not in ("a",)]
    shutil.rmtree(top, ignore_errors=True)
    return verdict + (f", WROTE OUTSIDE: {[p.name for p in escaped]}" if escaped else "")


if __name__ == "__main__":
    if sys.argv[1:] == ["safety"]:
        for row in safety():
            print(" | ".join(row))
    else:
        for figure in run():
            print(figure)
