"""BullMQ queues on a live Redis (production, or an instance restored from the repository): their
invariants as a verification Report, and the requeue of jobs a restore left ``active``.

BullMQ keeps a queue under ``<prefix>:<queue>:`` (prefix ``bull``): an ``id`` counter that numbers new
jobs, one hash per job (``<prefix>:<queue>:<job id>``), the lists ``wait``, ``paused`` and ``active``,
and the sorted sets ``prioritized``, ``delayed``, ``waiting-children``, ``completed`` and ``failed``,
whose members are job ids. A worker holds ``<job id>:lock`` (a key with a TTL) while it runs a job.

The checks: every job id in a state has its hash; no job id is in two states; the ``id`` counter is at or
past the highest numeric job id (else new jobs would overwrite old ones); no job is left ``active``
without a worker's lock (after a restore nobody works on it, and nobody will until BullMQ's stalled-job
check moves it). Keys are found with SCAN, states are read a page at a time, and which state each job id
is in takes one byte per numeric id (plus the custom ids): memory stays bounded on big queues. On a live
instance jobs move while they are read, so every suspected problem is confirmed in one MULTI/EXEC first.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hadr_backup.redis.wire import Connection
from hadr_backup.verify.findings import ERROR, OK, WARNING, Report

PREFIX = "bull"
LISTS = ("wait", "paused", "active")
SORTED_SETS = ("prioritized", "delayed", "waiting-children", "completed", "failed")
STATES = LISTS + SORTED_SETS
PAGE = 1000  # job ids read (and checked) per round trip
MAX_FINDINGS = 50  # per queue and kind; the rest are counted in one finding
DEFAULT_MAX_EVENTS = 10000  # BullMQ's default opts.maxLenEvents
NUMERIC_SLACK = 1 << 20  # numeric ids this far past the counter still take one byte each

# The stalled-job handling of BullMQ (moveStalledJobsToWait) for the ids in ARGV[2..]: a job still in
# active whose lock is gone goes to the end of wait (or paused, when the queue is paused) that workers
# take from next, leaves the stalled set, and the `waiting` (prev active) and `stalled` events are added
# to the stream. Unlike BullMQ it does not count the move in the job's stalledCounter: the restore
# stopped the job, not the job itself, and the counter would fail it at its next real stall.
REQUEUE_SCRIPT = """
local target = KEYS[2]
local paused = redis.call("HEXISTS", KEYS[4], "paused") == 1
if paused then target = KEYS[3] end
local maxEvents = redis.call("HGET", KEYS[4], "opts.maxLenEvents") or ARGV[2]
local moved = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call("EXISTS", ARGV[1] .. id .. ":lock") == 0 and redis.call("LREM", KEYS[1], 1, id) > 0 then
    redis.call("RPUSH", target, id)
    redis.call("SREM", KEYS[7], id)
    redis.call("XADD", KEYS[6], "MAXLEN", "~", maxEvents, "*", "event", "waiting", "jobId", id, "prev", "active")
    redis.call("XADD", KEYS[6], "MAXLEN", "~", maxEvents, "*", "event", "stalled", "jobId", id)
    moved[#moved + 1] = id
  end
end
if #moved > 0 and not paused then redis.call("ZADD", KEYS[5], 0, "0") end
return moved
"""


@dataclass(frozen=True)
class QueueKeys:
    prefix: str
    queue: str

    def key(self, suffix: str) -> str:
        return f"{self.prefix}:{self.queue}:{suffix}"

    @property
    def base(self) -> str:
        """``queue.toKey('')``: a job's hash is ``base + job id``."""
        return self.key("")


@dataclass
class QueueSummary:
    name: str
    jobs: dict[str, int] = field(default_factory=dict)  # job ids per state
    id_counter: int = 0
    highest_id: int = 0
    requeued: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "jobs": self.jobs,
            "id_counter": self.id_counter,
            "highest_id": self.highest_id,
            "requeued": self.requeued,
        }


@dataclass
class QueuesResult:
    """``hadr verify queues``: the report, and per queue what is in each state."""

    target: str  # host:port (never the credentials)
    report: Report
    queues: list[QueueSummary] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return self.report.exit_code

    @property
    def requeued(self) -> int:
        return sum(len(q.requeued) for q in self.queues)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            **self.report.to_json(),
            "queues": [q.to_json() for q in self.queues],
            "requeued": self.requeued,
        }

    def render(self, out) -> None:
        if self.queues:
            rows = [(q.name, *(q.jobs.get(s, 0) for s in STATES), q.id_counter) for q in self.queues]
            out.table(f"BullMQ queues at {self.target}", ["queue", *STATES, "id counter"], rows)
        self.report.render(out)


def check_queues(
    conn: Connection, *, prefix: str = PREFIX, active_allowed: bool = False, requeue_active: bool = False
) -> QueuesResult:
    """Check every BullMQ queue on ``conn``'s database. ``active_allowed``: jobs in ``active`` without
    a lock are not problems (a live instance whose workers take no locks, such as the sandbox's).
    ``requeue_active``: move them back to ``wait`` (atomically, as BullMQ's stalled-job check does)."""
    report = Report(f"verify queues {conn.address}")
    result = QueuesResult(str(conn.address), report)
    for name in queue_names(conn, prefix):
        report.count("queues")
        result.queues.append(_check_queue(conn, QueueKeys(prefix, name), report, active_allowed, requeue_active))
    if not result.queues:
        report.add(OK, "no-queues", str(conn.address), f"no {prefix}:<queue>:id counter: no BullMQ queue here")
    return result


def queue_names(conn: Connection, prefix: str = PREFIX) -> list[str]:
    """Queues from their ``<prefix>:<queue>:id`` counters (BullMQ queue names hold no ``:``), by SCAN."""
    head, tail = f"{prefix}:", ":id"
    names = {key[len(head) : -len(tail)] for key in scan(conn, f"{prefix}:*{tail}", "string")}
    return sorted(name for name in names if name and ":" not in name)


def scan(conn: Connection, pattern: str, type_name: str | None = None) -> Iterator[str]:
    cursor = "0"
    while True:
        args = ["SCAN", cursor, "MATCH", pattern, "COUNT", "1000"] + (["TYPE", type_name] if type_name else [])
        cursor, keys = conn.call(*args)
        yield from keys
        if cursor == "0":
            return


def queue_counts(conn: Connection, prefix: str = PREFIX) -> dict[str, dict[str, int]]:
    """Job ids per state of every queue, the empty states left out: ``{"q": {"wait": 3, ...}}``."""
    counts = {}
    for name in queue_names(conn, prefix):
        keys = QueueKeys(prefix, name)
        lengths = pipeline(conn, [_length_command(conn, keys.key(state)) for state in STATES])
        counts[name] = {state: n for state, n in zip(STATES, lengths, strict=True) if n}
    return counts


def _length_command(conn: Connection, key: str) -> list[str]:
    kind = conn.call("TYPE", key)
    return {"list": ["LLEN", key], "zset": ["ZCARD", key], "set": ["SCARD", key]}.get(kind, ["EXISTS", key])


def pipeline(conn: Connection, commands: list[list[str]]) -> list[Any]:
    """Send every command, then read every reply (one round trip)."""
    for command in commands:
        conn.send(*command)
    return [conn.reply(command[0]) for command in commands]


# -- one queue -----------------------------------------------------------------------------------------


class _Seen:
    """The state each job id was first seen in: one byte per numeric id up to the highest (bounded by
    the id counter, not by how many ids the states hold), a dict for custom (non-numeric) ids."""

    def __init__(self, counter: int):
        self.limit = counter + NUMERIC_SLACK
        self.numeric = bytearray()
        self.other: dict[str, int] = {}
        self.highest = 0

    def add(self, job_id: str, state: int) -> int | None:
        """Record ``job_id`` in state number ``state``; the other state it was seen in, if any."""
        if job_id.isdigit() and (job_id == "0" or job_id[0] != "0"):
            number = int(job_id)
            self.highest = max(self.highest, number)
            if number < self.limit:
                if number >= len(self.numeric):
                    self.numeric.extend(bytes(max(number + 1 - len(self.numeric), len(self.numeric))))
                previous = self.numeric[number]
                self.numeric[number] = previous or state + 1
                return previous - 1 if previous and previous != state + 1 else None
        previous = self.other.setdefault(job_id, state + 1)
        return previous - 1 if previous != state + 1 else None


@dataclass
class _Suspects:
    """Problems seen while reading, to be confirmed atomically (at most MAX_FINDINGS each)."""

    missing: list[tuple[str, str]] = field(default_factory=list)  # (state, job id)
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)  # (job id, state, state)
    more: dict[str, int] = field(default_factory=dict)

    def note(self, kind: str, item: tuple) -> None:
        found = getattr(self, kind)
        if len(found) < MAX_FINDINGS:
            found.append(item)
        else:
            self.more[kind] = self.more.get(kind, 0) + 1


def _check_queue(conn, keys: QueueKeys, report: Report, active_allowed: bool, requeue: bool) -> QueueSummary:
    summary = QueueSummary(keys.queue)
    # 1. every state, a page at a time: job hashes present, no id in two states
    seen, suspects, types = _Seen(_counter(conn, keys)), _Suspects(), {}
    for number, state in enumerate(STATES):
        types[state] = conn.call("TYPE", keys.key(state))
        summary.jobs[state] = 0
        for page in _members(conn, keys.key(state), types[state]):
            summary.jobs[state] += len(page)
            report.count("jobs", len(page))
            _read_page(conn, keys, state, page, seen, suspects, number)
    # 2. the counter after the states (it only grows): at or past every numeric id listed
    summary.id_counter, summary.highest_id = _counter(conn, keys), seen.highest
    if summary.id_counter < seen.highest:
        report.add(
            ERROR, "id-counter-behind", f"{keys.queue}",
            f"the id counter {keys.key('id')} is {summary.id_counter}, behind the highest job id {seen.highest}: "
            "new jobs would take the ids (and overwrite the hashes) of jobs that exist",
            hint=f"SET {keys.key('id')} {seen.highest} on the restored instance before workers start",
        )  # fmt: skip
    # 3. what was suspected, confirmed atomically
    _confirm(conn, keys, types, suspects, report)
    # 4. jobs left active without a worker's lock
    _active(conn, keys, summary, report, active_allowed, requeue)
    report.add(OK, "queue", keys.queue, ", ".join(f"{s} {n}" for s, n in summary.jobs.items() if n) or "empty")
    return summary


def _counter(conn: Connection, keys: QueueKeys) -> int:
    value = conn.call("GET", keys.key("id"))
    return int(value) if value and value.isdigit() else 0


def _members(conn: Connection, key: str, kind: str) -> Iterator[list[str]]:
    """The members of a state, PAGE at a time (markers such as BullMQ 4's ``0:<ts>`` left out)."""
    if kind not in ("list", "zset"):
        return
    read = "LRANGE" if kind == "list" else "ZRANGE"
    start = 0
    while True:
        page = conn.call(read, key, str(start), str(start + PAGE - 1))
        yield [job_id for job_id in page if not (job_id == "0" or job_id.startswith("0:"))]
        if len(page) < PAGE:
            return
        start += PAGE


def _read_page(conn, keys: QueueKeys, state: str, page: list[str], seen: _Seen, suspects: _Suspects, number: int):
    exists = pipeline(conn, [["EXISTS", keys.base + job_id] for job_id in page])
    for job_id, present in zip(page, exists, strict=True):
        if not present:
            suspects.note("missing", (state, job_id))
        other = seen.add(job_id, number)
        if other is not None:
            suspects.note("duplicates", (job_id, STATES[other], state))


def _member_command(kind: str, key: str, job_id: str) -> list[str]:
    return ["LPOS", key, job_id] if kind == "list" else ["ZSCORE", key, job_id]


def _remove_command(kind: str, key: str, job_id: str) -> str:
    return f"LREM {key} 0 {job_id}" if kind == "list" else f"ZREM {key} {job_id}"


def _atomic(conn: Connection, commands: list[list[str]]) -> list[Any]:
    conn.call("MULTI")
    for command in commands:
        conn.call(*command)
    return conn.call("EXEC")


def _confirm(conn, keys: QueueKeys, types: dict[str, str], suspects: _Suspects, report: Report) -> None:
    for state, job_id in suspects.missing:
        member, exists = _atomic(
            conn, [_member_command(types[state], keys.key(state), job_id), ["EXISTS", keys.base + job_id]]
        )
        if member is not None and not exists:
            report.add(
                ERROR, "job-without-hash", f"{keys.queue} job {job_id}",
                f"in {state} but its hash {keys.base}{job_id} does not exist: a worker would fail on it",
                hint=f"{_remove_command(types[state], keys.key(state), job_id)}, or restore to another instant",
            )  # fmt: skip
    for job_id, first, second in suspects.duplicates:
        commands = [_member_command(types[s], keys.key(s), job_id) for s in (first, second)]
        if all(reply is not None for reply in _atomic(conn, commands)):
            report.add(
                ERROR, "job-in-two-states", f"{keys.queue} job {job_id}",
                f"in both {first} and {second}: it would run twice, or its state is wrong",
            )  # fmt: skip
    for kind, n in suspects.more.items():
        report.add(ERROR, f"more-{kind}", keys.queue, f"{n} more suspected {kind} not listed (or confirmed)")


def _active(conn, keys: QueueKeys, summary: QueueSummary, report: Report, allowed: bool, requeue: bool) -> None:
    """Active jobs whose lock is gone: a finding each, or moved back to wait with ``requeue``."""
    stalled: list[str] = []
    for page in _members(conn, keys.key("active"), conn.call("TYPE", keys.key("active"))):
        locks = pipeline(conn, [["EXISTS", f"{keys.base}{job_id}:lock"] for job_id in page])
        stalled += [job_id for job_id, locked in zip(page, locks, strict=True) if not locked]
        if any(locks):
            report.count("active_jobs_locked", sum(1 for locked in locks if locked))
    if allowed or not stalled:
        return
    if requeue:
        for start in range(0, len(stalled), PAGE):
            summary.requeued += _requeue(conn, keys, stalled[start : start + PAGE])
        report.add(
            WARNING, "active-requeued", keys.queue,
            f"{len(summary.requeued)} job(s) left active moved back to wait: "
            f"{_some(summary.requeued)}; they run again from the start",
        )  # fmt: skip
        return
    for job_id in stalled[:MAX_FINDINGS]:
        report.add(
            ERROR, "job-left-active", f"{keys.queue} job {job_id}",
            "in active, but no worker holds its lock: nobody runs it until BullMQ's stalled-job check moves it",
            hint="hadr verify queues --url URL --requeue-active moves it back to wait",
        )  # fmt: skip
    if len(stalled) > MAX_FINDINGS:
        report.add(ERROR, "more-job-left-active", keys.queue, f"{len(stalled) - MAX_FINDINGS} more jobs left active")


def _requeue(conn: Connection, keys: QueueKeys, job_ids: list[str]) -> list[str]:
    names = ("active", "wait", "paused", "meta", "marker", "events", "stalled")
    return conn.call(
        "EVAL", REQUEUE_SCRIPT, str(len(names)), *(keys.key(n) for n in names),
        keys.base, str(DEFAULT_MAX_EVENTS), *job_ids,
    )  # fmt: skip


def _some(job_ids: list[str], shown: int = 10) -> str:
    return ", ".join(job_ids[:shown]) + (f" and {len(job_ids) - shown} more" if len(job_ids) > shown else "")
