"""How a proven restore reaches a running Redis instance (``hadr restore redis --into URL``).

The scratch server that proved the restore holds the state at T. The target gets it one of two ways:

* replica (preferred): the target's ``masterauth`` is set to the scratch server's random password
  (``masteruser`` emptied when it was set), ``REPLICAOF <scratch>`` makes it a replica, a full sync
  replaces everything it held, and once its link is up and its offset equals the scratch server's,
  ``REPLICAOF NO ONE`` makes it a primary again; both settings are put back on every path.
* copy (fallback, when the target refuses REPLICAOF or the CONFIG commands, or cannot reach the scratch
  server): with ``--force`` FLUSHALL first, then every key of every db SCANned on the scratch server,
  DUMP + PTTL pipelined there and RESTORE … REPLACE pipelined on the target, in batches, TTLs kept.

Either way the target's keys per db must then equal the scratch server's.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field

from hadr_backup.errors import RestoreFailed, UsageError
from hadr_backup.redis.scratch import ANY_ADDRESS, ScratchServer
from hadr_backup.redis.wire import Address, Connection, RedisError, ReplyError, keys_per_db, parse_info

REPLICA, COPY = "replica", "copy"
REACH_TIMEOUT = 60.0  # the target must have connected to the scratch server by then
SYNC_TIMEOUT = 1800.0
SCAN_COUNT = 1000
RESTORE_BYTES = 16 << 20  # DUMP payloads held before they are sent to the target
SETTINGS = ("masterauth", "masteruser")


@dataclass
class Transferred:
    path: str  # REPLICA or COPY
    why: str
    keys: dict[str, int]  # what the target holds afterwards, per db
    replaced: dict[str, int]  # what it held before (--force), per db
    warnings: list[str] = field(default_factory=list)


@dataclass
class TargetState:
    """What the target holds while the transfer runs: the message of a failure mid-way says it."""

    written: bool = False
    text: str = "it is unchanged"
    copied: int = 0


def describe_keys(keys: dict[str, int]) -> str:
    return ", ".join(f"{db}: {n}" for db, n in keys.items()) or "none"


def connect_target(address: Address, timeout: float = 30.0) -> Connection:
    """A connection to the target; a wrong URL, password or address exits 2 (nothing was written)."""
    try:
        return Connection(address, timeout=timeout)
    except RedisError as error:
        raise UsageError(
            f"cannot restore into {address}: {error.message}; nothing was written",
            hint="check the host, port, user and password of the --into URL",
        ) from None


def survey(conn: Connection, force: bool) -> dict[str, int]:
    """The keys per db the target holds; exit 2 (touching nothing) when it is not a standalone primary,
    or holds keys and ``force`` is not given."""
    address = conn.address
    try:
        info = parse_info(conn.call("INFO"))
    except ReplyError as error:
        raise UsageError(
            f"{address} refuses INFO: {error.message}; nothing was written", hint="the user needs +info"
        ) from None
    if info.get("cluster_enabled") == "1":
        raise UsageError(f"{address} is a Redis Cluster node; nothing was written", hint="restore --to DIR instead")
    if info.get("role") != "master":
        raise UsageError(
            f"{address} is a replica of {info.get('master_host')}:{info.get('master_port')}; nothing was written",
            hint="restore into its primary, or make it a primary first (REPLICAOF NO ONE)",
        )
    held = keys_per_db(info)
    if held and not force:
        raise UsageError(
            f"{address} holds {sum(held.values())} keys ({describe_keys(held)}); nothing was written",
            hint="--force replaces everything it holds with the restored state",
        )
    return held


def transfer(address: Address, scratch: ScratchServer, force: bool, host: str | None = None) -> Transferred:
    """Put the scratch server's data into the target (replica path, else copy) and compare keys per db."""
    state = TargetState()
    with connect_target(address) as target, scratch.connect() as source:
        try:
            # 1. check again what was surveyed (it may have changed), and that the target can hold it all
            held = survey(target, force)
            proven = keys_per_db(parse_info(source.call("INFO", "keyspace")))
            _fits(target, source, proven)
            # 2. the target replicates the scratch server; where it may not, the copy
            why_not = _unreachable_reason(target, scratch)
            why_not = why_not or replicate(target, source, scratch, host or _reachable_host(target, scratch), state)
            if why_not:
                copy_keys(target, source, proven, held, state)
            # 3. the target must hold what the scratch server holds
            keys, warnings = _compare(target, source, proven)
        except ReplyError as error:
            raise _mid_way(address, f"it refused {error.message}", state) from None
        except RedisError as error:
            raise _mid_way(address, error.message, state) from None
    why = why_not or "REPLICAOF accepted: the target replicated the scratch server until their offsets matched"
    return Transferred(COPY if why_not else REPLICA, why, keys, held, warnings)


def _mid_way(address: Address, what: str, state: TargetState):
    if not state.written:
        return UsageError(f"cannot restore into {address}: {what}; nothing was written", hint=ACL_HINT)
    return RestoreFailed(
        f"the restore into {address} failed mid-way: {what}; {state.text}",
        hint="run the restore again once the target is reachable (with --force: it holds keys now)",
    )


ACL_HINT = "the README says which ACL permissions each path needs"


def _fits(target: Connection, source: Connection, proven: dict[str, int]) -> None:
    """Every restored db exists on the target, and it can load what this redis-server writes."""
    for db in proven:
        try:
            target.call("SELECT", db[2:])
        except ReplyError as error:
            raise UsageError(
                f"{target.address} cannot hold {db}: {error.message}; nothing was written",
                hint="raise its `databases` setting, or restore --to DIR",
            ) from None
    target.call("SELECT", "0")
    ours = _version(parse_info(source.call("INFO", "server")))
    theirs = _version(parse_info(target.call("INFO", "server")))
    if theirs < ours:
        raise UsageError(
            f"{target.address} runs Redis {'.'.join(map(str, theirs))}, older than the redis-server that loads the "
            f"restore ({'.'.join(map(str, ours))}): it cannot read what that writes; nothing was written",
            hint="upgrade the target, or restore --to DIR and start that directory with this redis-server",
        )


def _version(info: dict[str, str]) -> tuple[int, ...]:
    return tuple(int(part) for part in info.get("redis_version", "0.0").split(".")[:2])


# -- the replica path ------------------------------------------------------------------------------


def _unreachable_reason(target: Connection, scratch: ScratchServer) -> str | None:
    """Why the target certainly cannot reach the scratch server: it is elsewhere and the scratch server
    listens on a loopback address only."""
    peer = ipaddress.ip_address(target.sock.getpeername()[0])
    if scratch.bind in ANY_ADDRESS or peer.is_loopback or not ipaddress.ip_address(scratch.bind).is_loopback:
        return None
    return (
        f"the target is at {peer} and the scratch server listens on {scratch.bind} only "
        "(--scratch-bind ADDR the target can reach enables the replica path)"
    )


def _reachable_host(target: Connection, scratch: ScratchServer) -> str:
    """The address the target reaches the scratch server at: its bind address, or when it listens on all,
    this host's address on the connection to the target."""
    return target.sock.getsockname()[0] if scratch.bind in ANY_ADDRESS else scratch.bind


def replicate(target: Connection, source: Connection, scratch: ScratchServer, host: str, state) -> str | None:
    """Make the target a replica of the scratch server until it holds the same data, then a primary again.
    None when done; else why the target would not (and it is unchanged)."""
    changed: dict[str, str] = {}
    try:
        # 1. remember the target's replication credentials, then give it the scratch server's
        saved = {name: _config_get(target, name) for name in SETTINGS}
        for name, value in (("masterauth", scratch.password), ("masteruser", "")):
            if saved[name] != value:
                target.call("CONFIG", "SET", name, value)
                changed[name] = saved[name]
        # 2. replicate
        target.call("REPLICAOF", host, str(scratch.port))
    except ReplyError as error:
        _put_back(target, changed)
        return f"the target refused the replica path ({error.message})"
    state.written = True
    state.text = (
        f"it may still be a replica of the scratch server at {host}:{scratch.port}, which is stopped now; on it, "
        f"REPLICAOF NO ONE and CONFIG SET {' '.join(changed) or 'masterauth'} back to the old value"
    )
    try:
        # 3. wait until the target's offset is the scratch server's, then make it a primary again
        reached = _await_sync(target, source, host, scratch.port)
        target.call("REPLICAOF", "NO", "ONE")
    finally:
        _put_back(target, changed)
    if not reached:
        state.written, state.text = False, "it is unchanged"
        return f"the target did not connect to the scratch server at {host}:{scratch.port} within {REACH_TIMEOUT:.0f} s"
    state.text = "it holds the restored state"
    return None


def _config_get(conn: Connection, name: str) -> str:
    reply = conn.call("CONFIG", "GET", name)
    return reply[1] if reply else ""


def _put_back(target: Connection, changed: dict[str, str]) -> None:
    for name, value in changed.items():
        target.call("CONFIG", "SET", name, value)


def _await_sync(target: Connection, source: Connection, host: str, port: int) -> bool:
    """True once the target's link is up and its offset equals the scratch server's; False (after
    REPLICAOF NO ONE) when it never began to sync within REACH_TIMEOUT."""
    began, seen = time.monotonic(), False
    while True:
        ours = parse_info(source.call("INFO", "replication"))
        theirs = parse_info(target.call("INFO", "replication"))
        if theirs.get("master_link_status") == "up" and theirs.get("slave_repl_offset") == ours["master_repl_offset"]:
            return True
        seen = seen or int(ours.get("connected_slaves", "0")) > 0 or theirs.get("master_sync_in_progress") == "1"
        waited = time.monotonic() - began
        if not seen and waited > REACH_TIMEOUT:
            target.call("REPLICAOF", "NO", "ONE")
            return False
        if waited > SYNC_TIMEOUT:
            raise RestoreFailed(
                f"the target did not finish syncing from the scratch server at {host}:{port} in {SYNC_TIMEOUT:.0f} s; "
                "it may have dropped its data",
                hint="its log says why (e.g. out of memory); REPLICAOF NO ONE was sent",
            )
        time.sleep(0.05)


# -- the copy path ---------------------------------------------------------------------------------


def copy_keys(target: Connection, source: Connection, proven: dict[str, int], held: dict[str, int], state) -> None:
    """Every key of every db of the scratch server RESTOREd on the target, TTLs kept."""
    # 1. a target holding keys (--force): prove that it takes RESTORE, then empty it
    if held:
        _probe_restore(target, source, proven)
        target.call("FLUSHALL")
        state.written, state.text = True, "it was emptied (FLUSHALL) and holds part of the restore"
    # 2. db by db: SCAN the scratch server, DUMP + PTTL there, RESTORE on the target
    for db in proven:
        source.call("SELECT", db[2:])
        target.call("SELECT", db[2:])
        cursor = b"0"
        while True:
            cursor, keys = source.call("SCAN", cursor, "COUNT", str(SCAN_COUNT), raw=True)
            _copy_batch(target, source, keys, state)
            if cursor == b"0":
                break
    for conn in (source, target):
        conn.call("SELECT", "0")
    state.text = "it holds the restored state"


def _copy_batch(target: Connection, source: Connection, keys: list[bytes], state: TargetState) -> None:
    source.send_many([command for key in keys for command in (("DUMP", key), ("PTTL", key))])
    pending, size = [], 0
    for key in keys:
        payload, ttl = source.reply("DUMP", raw=True), source.reply("PTTL")
        if payload is None or ttl == -2:  # expired since SCAN saw it
            continue
        pending.append(("RESTORE", key, str(max(ttl, 1) if ttl >= 0 else 0), payload, "REPLACE"))
        size += len(payload) + len(key)
        if size >= RESTORE_BYTES:
            _restore(target, pending, state)
            pending, size = [], 0
    _restore(target, pending, state)


def _restore(target: Connection, commands: list[tuple], state: TargetState) -> None:
    if not commands:
        return
    state.written = True
    state.text = f"it holds part of the restore ({state.copied} keys copied)"
    for reply in target.pipeline(commands):
        if isinstance(reply, ReplyError):
            raise reply
        state.copied += 1
    state.text = f"it holds part of the restore ({state.copied} keys copied)"


def _probe_restore(target: Connection, source: Connection, proven: dict[str, int]) -> None:
    """RESTORE one key under a name of hadr's own with a TTL of 1 ms (it vanishes by itself): the target
    takes RESTORE before FLUSHALL empties it."""
    if not proven:
        return
    source.call("SELECT", next(iter(proven))[2:])
    key = source.call("RANDOMKEY", raw=True)
    payload = source.call("DUMP", key, raw=True) if key is not None else None
    if payload is not None:
        target.call("RESTORE", b"hadr:restore-probe", "1", payload, "REPLACE")


# -- the comparison --------------------------------------------------------------------------------


def _compare(target: Connection, source: Connection, proven: dict[str, int]) -> tuple[dict, list[str]]:
    """The target's keys per db must equal the scratch server's (a key that expires meanwhile may make
    them differ for an instant: read again a few times)."""
    for _ in range(10):
        now = keys_per_db(parse_info(source.call("INFO", "keyspace")))
        held = keys_per_db(parse_info(target.call("INFO", "keyspace")))
        if held == now:
            break
        time.sleep(0.2)
    else:
        raise RestoreFailed(
            f"the target holds keys per db {describe_keys(held)}, the scratch server {describe_keys(now)}",
            hint="something else wrote to the target meanwhile, or it evicted keys (maxmemory)",
        )
    warnings = (
        [] if now == proven else [f"keys expired during the transfer: {describe_keys(proven)} -> {describe_keys(now)}"]
    )
    return held, warnings
