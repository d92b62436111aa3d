"""``hadr restore redis --into URL``: the state at T put into a running Redis instance.

The state is assembled and proven exactly as ``--to DIR`` does (restore.py), in a private temporary
directory; the scratch redis-server that proved it keeps running, on ``--scratch-bind`` (default
127.0.0.1) behind a random password, and the target gets its data as a replica of it, else by
DUMP/RESTORE (transfer.py). The target is looked at before anything is written: an unreachable URL,
wrong credentials, a replica or a cluster node, or keys without ``--force`` exit 2 touching nothing.
The scratch server is stopped and the directory removed on every path.
"""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hadr_backup.errors import UsageError
from hadr_backup.policy.model import Policy
from hadr_backup.redis.queuerun import RestoredQueueCheck
from hadr_backup.redis.restore import RedisRestoreOptions, RedisRestoreResult, assemble, one_target
from hadr_backup.redis.transfer import REPLICA, connect_target, describe_keys, survey, transfer
from hadr_backup.redis.wire import Address
from hadr_backup.timefmt import format_time


@dataclass
class IntoReport:
    """How the restored state reached the target."""

    target: str  # host:port (never the password)
    path: str  # "replica" or "copy"
    why: str
    replaced: dict[str, int]  # the keys per db the target held before (--force)
    keys: dict[str, int]  # the keys per db it holds now
    scratch: str  # where the scratch server listened
    seconds: float  # the transfer alone

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def render(self, result: RedisRestoreResult, out) -> None:
        what = f"{result.backup_id} of {result.source}" if result.backup_id else f"the AOF archive of {result.source}"
        how = "replica of a scratch redis-server" if self.path == REPLICA else "copy (SCAN, DUMP/PTTL, RESTORE)"
        out.kv(
            [
                ("restored", f"{what} into {self.target}"),
                ("reached", format_time(result.reached)),
                ("keys", describe_keys(self.keys)),
                ("path", f"{how}: {self.why}"),
                ("replaced", describe_keys(self.replaced)),
                ("verified", "loaded by the scratch server, the target's keys per db equal to it"),
                ("took", f"{result.seconds:.1f} s, of which {self.seconds:.1f} s into the target"),
            ]
        )
        result.render_warnings(out)


def run_restore_into(policy: Policy, options: RedisRestoreOptions, ui=None) -> RedisRestoreResult:
    """Restore a Redis source to the state at the target into the running instance at ``options.into``."""
    began = time.monotonic()
    one_target(options)
    address = Address.parse(options.into)
    check_bind(options.scratch_bind)
    # 1. look at the target before anything is written: reachable, a primary, empty unless --force
    with connect_target(address) as conn:
        survey(conn, options.force)
    private = Path(tempfile.mkdtemp(prefix="hadr-redis-into-"))
    try:
        # 2. assemble the state at T as --to does, in a private directory
        assembled = assemble(policy, options, private, ui)
        # 3. prove it with a scratch server that keeps running, behind a random password
        with assembled.scratch(bind=options.scratch_bind, password=secrets.token_hex(32)) as scratch:
            proven = scratch.keys()
            assembled.check(proven)
            queue_check = RestoredQueueCheck(policy.sources.redis_named(options.source))
            queue_check.on(scratch)
            if ui is not None:
                ui.info(f"proven ({describe_keys(proven)}); putting it into {address}")
            # 4. into the target: as a replica of the scratch server, else by DUMP/RESTORE
            transfer_began = time.monotonic()
            done = transfer(address, scratch, options.force)
            scratch_at = f"{scratch.bind}:{scratch.port}"
    finally:
        shutil.rmtree(private, ignore_errors=True)
    report = IntoReport(
        str(address), done.path, done.why, done.replaced, done.keys, scratch_at, time.monotonic() - transfer_began
    )
    result = assembled.result(proven, began, into=report)
    result.warnings += done.warnings + queue_check.warnings
    return result


def check_bind(bind: str) -> None:
    """--scratch-bind must be an IP address of this host (or 0.0.0.0 / ::): exit 2 before anything else."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((bind, 0))
    except (ValueError, OSError) as error:
        raise UsageError(
            f"--scratch-bind {bind!r} is not an IP address of this host ({error})",
            hint="an address of this host the target can reach, or 0.0.0.0",
        ) from None
