"""Checks of a Redis source (``hadr check``) and of its stored snapshots (``hadr verify repo --deep``)."""

from __future__ import annotations

import subprocess
import tempfile

from hadr_backup.errors import HadrError
from hadr_backup.fsutil import durable_write
from hadr_backup.policy.model import RedisSource
from hadr_backup.redis.wire import Address, Connection, RedisError, parse_info
from hadr_backup.verify.findings import ERROR, OK, SKIPPED, Report

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
                done = subprocess.run(["redis-check-rdb", path], capture_output=True, text=True)
                if done.returncode != 0:
                    tail = " ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
                    report.add(ERROR, "rdb-check-failed", entry.id, f"redis-check-rdb refuses {stored.key}: {tail}")
