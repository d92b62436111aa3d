"""Checks of a Redis source (``hadr check``), of its stored snapshots (``hadr verify repo --deep``) and of
its AOF archive (``hadr verify repo``)."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path

from hadr_backup.errors import HadrError
from hadr_backup.fsutil import durable_write
from hadr_backup.policy.model import RedisSource
from hadr_backup.redis import aoffiles
from hadr_backup.redis.aofarchive import archived_state
from hadr_backup.redis.aoffiles import BASE, HISTORY, INCR
from hadr_backup.redis.aofgenerations import generations
from hadr_backup.redis.aofrestore import AOF_DIR_NAME, AofChain, write_chain
from hadr_backup.redis.aofwindows import load_chains
from hadr_backup.redis.wire import Address, Connection, RedisError, parse_info
from hadr_backup.repo import layout
from hadr_backup.verify.findings import ERROR, OK, SKIPPED, WARNING, Report

SOURCE_CHECKS = ("server-reachable", "sync-permitted")


def check_source(source: RedisSource) -> Report:
    """PING with the source's credentials, then whether this user may take a snapshot (REPLCONF, which
    needs the same permission class as SYNC; SYNC itself would start one)."""
    report = Report(f"check {source.name}")
    address = Address.of_source(source)
    try:
        conn = Connection(address, timeout=10)
    except RedisError as error:
        report.add(ERROR, "server-reachable", source.name, error.message, error.hint or "")
        report.add(SKIPPED, "sync-permitted", source.name, "the server cannot be reached")
        return report
    with conn:
        try:
            conn.call("PING")
            info = parse_info(conn.call("INFO", "server"))
            report.add(OK, "server-reachable", source.name, f"Redis {info.get('redis_version', '?')} at {address}")
        except RedisError as error:
            report.add(ERROR, "server-reachable", source.name, error.message, "the user needs +ping +info")
            report.add(SKIPPED, "sync-permitted", source.name, "the server does not answer this user")
            return report
        try:
            conn.call("REPLCONF", "capa", "eof")
            report.add(OK, "sync-permitted", source.name, "the user may use the replication protocol")
        except RedisError as error:
            report.add(ERROR, "sync-permitted", source.name, error.message, "the user needs +sync +replconf")
    return report


def check_rdb_objects(repo, snapshots, report: Report) -> None:
    """Each snapshot's RDB, decrypted to a temporary file, must pass ``redis-check-rdb``."""
    for entry in snapshots:
        for stored in entry.objects:
            report.count("rdb_checked")
            with tempfile.TemporaryDirectory(prefix="hadr-check-rdb-") as scratch:
                path = f"{scratch}/dump.rdb"
                try:
                    durable_write(path, repo.read_object(stored.key, sha256=stored.sha256), sync=False)
                except HadrError as error:
                    report.add(ERROR, "rdb-unreadable", entry.id, f"{stored.key}: {error.message}")
                    continue
                _tool(["redis-check-rdb", path], "rdb-check-failed", entry.id, stored.key, report)


# -- the AOF archive (hadr verify repo) -----------------------------------------------------------------


def check_aof_archive(repo, source: str, report: Report, deep: bool) -> None:
    """The AOF archive of ``source``: every file the last archived manifest lists is archived, the base
    whole; every file of a closed generation archived to its end (unless a prune removed one: that
    generation is no longer offered); each file's pieces run from 0 without a gap or overlap to the offset
    the state records, and each is stored. ``deep``: each piece read back holds its recorded bytes (length
    and SHA-256), and each restorable generation assembled passes redis-check-rdb (an RDB-preamble base)
    and redis-check-aof."""
    state = archived_state(repo, source)
    if state is None:
        return
    subject = f"aof {source}"
    stored = {info.key for info in repo.store.list(layout.aof_prefix(source))}
    damaged = set()
    for name, record in state["files"].items():
        if record.get("pruned"):  # `hadr prune` removes (or removed) its pieces
            continue
        report.count("aof_files")
        if _check_pieces(repo, source, name, record, stored, report, deep):
            damaged.add(name)
    _check_listed(state, subject, report)
    _check_closed_generations(state, subject, report)
    recorded = {layout.aof_piece(source, n, s, e) for n, r in state["files"].items() for s, e, _sha in r["pieces"]}
    for key in sorted(stored - recorded - {layout.aof_state(source)}):
        report.add(
            WARNING, "aof-piece-unrecorded", key,
            "stored but not in the archive state (a run killed before it recorded it): the next "
            "`hadr archive redis` adopts it",
        )  # fmt: skip
    if deep:
        _check_chains(repo, source, subject, damaged, report)


def _check_listed(state: dict, subject: str, report: Report) -> None:
    """The files of the last archived manifest: archived, the base whole, incr files in sequence."""
    listed = aoffiles.parse_manifest(state.get("manifest") or "")
    for aof_file in listed.files:
        record = state["files"].get(aof_file.name)
        if aof_file.type != HISTORY and record is None:
            report.add(ERROR, "aof-file-unarchived", subject, f"the manifest lists {aof_file.name}, never archived")
        elif aof_file.type == BASE and not record["complete"]:
            report.add(ERROR, "aof-base-incomplete", subject, f"base {aof_file.name} is archived only in part")
    _check_incr_sequence(listed, subject, report)


def _check_closed_generations(state: dict, subject: str, report: Report) -> None:
    """Each generation a rewrite closed: its base and incr files archived to their end."""
    records = state["files"]
    for generation in generations(state):
        named = (generation.base, *generation.incrs)
        if generation.current or any(records.get(name, {}).get("pruned") for name in named):
            continue
        report.count("aof_generations_closed")
        where = f"of the generation of base {generation.base}"
        for name in named:
            record = records.get(name)
            if record is None:
                report.add(ERROR, "aof-file-unarchived", subject, f"{name} {where} was never archived")
            elif not record["complete"]:
                code = "aof-base-incomplete" if name == generation.base else "aof-gap"
                report.add(
                    ERROR, code, subject,
                    f"{name} {where} is archived only to {record['archived']} bytes, not to its end: that "
                    "generation is not restorable",
                )  # fmt: skip


def _check_pieces(repo, source: str, name: str, record: dict, stored: set, report: Report, deep: bool) -> bool:
    """One file's pieces; True when one is missing or damaged, or they leave a gap."""
    expected_start, damaged = 0, False
    for start, end, sha256 in record["pieces"]:
        report.count("aof_pieces")
        key = layout.aof_piece(source, name, start, end)
        if start != expected_start or end <= start:
            report.add(ERROR, "aof-gap", key, f"begins at {start}, the piece before ends at {expected_start}")
            damaged = True
        expected_start = end
        if key not in stored:
            report.add(ERROR, "aof-piece-missing", key, f"bytes {start}-{end} of {name} are not in the repository")
            damaged = True
        elif deep:
            damaged |= not _piece_holds(repo, key, end - start, sha256, report)
    if expected_start != record["archived"]:
        report.add(
            ERROR, "aof-gap", f"aof {source} {name}",
            f"the pieces end at {expected_start}, the archive state says {record['archived']} bytes are archived",
        )  # fmt: skip
        damaged = True
    return damaged


def _piece_holds(repo, key: str, length: int, sha256: str, report: Report) -> bool:
    digest, size = hashlib.sha256(), 0
    try:
        for chunk in repo.read_object(key):
            digest.update(chunk)
            size += len(chunk)
    except HadrError as error:
        report.add(ERROR, "aof-piece-corrupt", key, f"cannot be read back: {error.message}")
        return False
    if size != length or digest.hexdigest() != sha256:
        report.add(
            ERROR, "aof-piece-corrupt", key,
            f"holds {size} bytes with SHA-256 {digest.hexdigest()[:16]}…, the archive recorded {length} "
            f"bytes with {sha256[:16]}…",
        )  # fmt: skip
        return False
    return True


def _check_incr_sequence(listed: aoffiles.Manifest, subject: str, report: Report) -> None:
    """The incr files Redis appends one after another have consecutive sequence numbers."""
    seqs = sorted(f.seq for f in listed.files if f.type == INCR)
    for before, after in zip(seqs, seqs[1:], strict=False):
        if after != before + 1:
            report.add(ERROR, "aof-gap", subject, f"the manifest lists incr {before} then {after}: files are missing")


def _check_chains(repo, source: str, subject: str, damaged: set[str], report: Report) -> None:
    """Each restorable generation without a damaged piece, written out as a restore would (to its end) and
    checked by Redis's own tools, one at a time (one generation on disk at once)."""
    chains = load_chains(repo, source)
    for generation, error in chains.unreadable:
        if not damaged & {generation.base, *generation.incrs}:  # else its damaged piece is the finding
            report.add(ERROR, "aof-chain-unusable", subject, f"generation of base {generation.base}: {error.message}")
    if chains.current is None and not any(g.current for g, _error in chains.unreadable) and report.passed:
        report.add(ERROR, "aof-chain-unusable", subject, "no current base archived whole with a time to start from")
    for chain in chains.chains:
        if not damaged & {chain.base.name, *(f.name for f in chain.incrs)}:
            _check_chain(repo, chain, subject, report)


def _check_chain(repo, chain: AofChain, subject: str, report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="hadr-check-aof-") as scratch:
        try:
            write_chain(repo, chain, Path(scratch), None)
        except HadrError as error:
            report.add(ERROR, "aof-chain-unusable", subject, f"generation of base {chain.base.name}: {error.message}")
            return
        directory = Path(scratch) / AOF_DIR_NAME
        report.count("aof_chains_checked")
        what = f"the archived base {chain.base.name}"
        if chain.base.name.endswith(".rdb"):
            _tool(["redis-check-rdb", str(directory / chain.base.name)], "rdb-check-failed", subject, what, report)
        manifest = directory / f"{chain.prefix}.manifest"
        what = f"the assembled generation of base {chain.base.name}"
        _tool(["redis-check-aof", str(manifest)], "aof-check-failed", subject, what, report)


def _tool(argv: list[str], code: str, subject: str, what: str, report: Report) -> None:
    """Run one of Redis's check tools; a refusal is a finding with the end of what it said."""
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        tail = " ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        report.add(ERROR, code, subject, f"{argv[0]} refuses {what}: {tail}")
