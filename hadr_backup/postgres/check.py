"""``hadr check`` for a PostgreSQL source: the archive path proven end to end, as ``pgbackrest check``
and ``barman check`` do.

One finding per check, in the order an operator fixes them: the server and the role; the settings
archiving depends on (wal_level, archive_mode, archive_command running this hadr with this policy and
source, archive_timeout within the source's RPO); the host's clock against the server's; then, with the
repository open, whether its archive belongs to this cluster, and a segment switched now that must reach
the repository within the timeout. A check that cannot run because one it depends on failed is skipped,
and says why.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

from hadr_backup.engines import EngineContext
from hadr_backup.errors import HadrError
from hadr_backup.policy.model import Policy, PostgresSource
from hadr_backup.postgres.archive import archive_command_for, load_identity, stored_versions
from hadr_backup.postgres.archivecmd import parse_push_command
from hadr_backup.postgres.server import archiver_state, connect
from hadr_backup.repo.repository import Repository, open_repo
from hadr_backup.timefmt import format_time
from hadr_backup.verify.findings import ERROR, OK, SKIPPED, WARNING, Finding, Report

SETTINGS = ("wal_level", "archive_mode", "archive_command", "archive_library", "archive_timeout")
SKEW_WARN, SKEW_FAIL = 1.0, 5.0  # seconds between this host's clock and the server's
ARCHIVE_CHECKS = ("archive-identity", "archive-end-to-end")
SERVER_CHECKS = (
    "role",
    "wal-level",
    "archive-mode",
    "archive-command",
    "archive-timeout",
    "clock-skew",
    *ARCHIVE_CHECKS,
)

_VIEW_SQL = """
select current_setting('server_version'), (select system_identifier::text from pg_control_system()),
       pg_size_bytes(current_setting('wal_segment_size')), pg_is_in_recovery(), current_user::text,
       r.rolsuper, r.rolreplication, has_function_privilege('pg_switch_wal()', 'execute')
from pg_roles r where r.rolname = current_user
"""


@dataclass(frozen=True)
class Setting:
    value: str
    pending_restart: bool  # a changed value waits for a restart

    @property
    def note(self) -> str:
        return " (a changed value waits for a restart)" if self.pending_restart else ""


@dataclass(frozen=True)
class ServerView:
    """What the checks read from the server, on one connection."""

    version: str
    system_identifier: str
    segment_size: int
    in_recovery: bool
    role: str
    superuser: bool
    replication: bool
    may_switch: bool
    settings: dict[str, Setting]


def read_view(conn) -> ServerView:
    row = conn.execute(_VIEW_SQL).fetchone()
    settings = {
        name: Setting(value, pending)
        for name, value, pending in conn.execute(
            "select name, setting, pending_restart from pg_settings where name = any(%s)", [list(SETTINGS)]
        )
    }
    return ServerView(row[0], row[1], int(row[2]), row[3], row[4], row[5], row[6], row[7], settings)


def check_source(ctx: EngineContext, source: PostgresSource, timeout: float) -> Report:
    """Every check of one PostgreSQL source, as findings (never an exception for what is found)."""
    import psycopg

    report = Report(f"check {source.name}")
    # 1. the server answers
    try:
        conn = connect(source)
    except HadrError as error:
        report.add(ERROR, "server-reachable", source.name, error.message, error.hint or "")
        report.findings += skipped(source.name, SERVER_CHECKS, "the server cannot be reached")
        return report
    try:
        with conn:
            view = read_view(conn)
            report.add(
                OK,
                "server-reachable",
                source.name,
                f"PostgreSQL {view.version} at {source.host}:"
                f"{source.port}, system identifier {view.system_identifier}"
                + (", a standby" if view.in_recovery else ""),
            )
            # 2. what the role may do, and the settings archiving depends on
            report.findings += [role_finding(source.name, view), *settings_findings(ctx.policy, source, view)]
            # 3. the host's clock against the server's
            report.findings.append(clock_finding(conn, source.name, ctx.clock))
            # 4. the repository: whose archive it holds, and whether a segment switched now arrives there
            report.findings += archive_findings(ctx, source, conn, view, timeout)
    except psycopg.Error as error:
        report.add(
            ERROR,
            "server-query",
            source.name,
            f"the server failed a query of the check: {str(error).strip()}",
            "see the PostgreSQL log",
        )
    return report


def skipped(subject: str, codes: tuple[str, ...], reason: str) -> list[Finding]:
    return [Finding(SKIPPED, code, subject, f"not checked: {reason}") for code in codes]


# -- the role and the settings ---------------------------------------------------------------------


def role_finding(subject: str, view: ServerView) -> Finding:
    if view.superuser:
        return Finding(OK, "role", subject, f"{view.role} is a superuser")
    if not view.may_switch:
        return Finding(
            ERROR,
            "role",
            subject,
            f"{view.role} is not a superuser and may not run pg_switch_wal(), "
            f"which this check and a backup's last segment need",
            f"GRANT EXECUTE ON FUNCTION pg_switch_wal() TO {_ident(view.role)}; or check as a superuser",
        )
    if not view.replication:
        return Finding(
            WARNING,
            "role",
            subject,
            f"{view.role} may run pg_switch_wal() but has no REPLICATION, which pg_basebackup (hadr backup pg) needs",
            f"ALTER ROLE {_ident(view.role)} REPLICATION",
        )
    return Finding(OK, "role", subject, f"{view.role} may run pg_switch_wal() and has REPLICATION")


def _ident(name: str) -> str:
    return name if name.isidentifier() and name.islower() else '"' + name.replace('"', '""') + '"'


def settings_findings(policy: Policy, source: PostgresSource, view: ServerView) -> list[Finding]:
    subject, settings = source.name, view.settings
    level, mode, timeout = settings["wal_level"], settings["archive_mode"], settings["archive_timeout"]
    found = [
        Finding(OK, "wal-level", subject, level.value + level.note)
        if level.value in ("replica", "logical")
        else Finding(
            ERROR,
            "wal-level",
            subject,
            f"{level.value}{level.note}: its WAL cannot restore a base backup",
            _restart_hint("wal_level = replica", level),
        )
    ]
    if mode.value == "always" or (mode.value == "on" and not view.in_recovery):
        found.append(Finding(OK, "archive-mode", subject, mode.value + mode.note))
    elif mode.value == "on":
        found.append(
            Finding(
                ERROR,
                "archive-mode",
                subject,
                "on: a standby archives only with archive_mode = always",
                _restart_hint("archive_mode = always", mode),
            )
        )
    else:
        found.append(
            Finding(
                ERROR,
                "archive-mode",
                subject,
                f"{mode.value}{mode.note}: PostgreSQL archives nothing",
                _restart_hint("archive_mode = on", mode),
            )
        )
    found.append(command_finding(policy, source, settings))
    found.append(timeout_finding(subject, int(timeout.value), source.rpo))
    return found


def _restart_hint(assignment: str, setting: Setting) -> str:
    if setting.pending_restart:
        return "restart PostgreSQL: the value set waits for a restart"
    return f"ALTER SYSTEM SET {assignment}; then restart PostgreSQL"


def _reload_hint(name: str, value: str) -> str:
    return f"ALTER SYSTEM SET {name} = '{value.replace(chr(39), chr(39) * 2)}'; SELECT pg_reload_conf();"


def timeout_finding(subject: str, seconds: int, rpo: float) -> Finding:
    hint = _reload_hint("archive_timeout", f"{min(60, int(rpo))}s")
    if seconds == 0:
        return Finding(
            ERROR,
            "archive-timeout",
            subject,
            f"0 (off): a quiet server keeps its last commits in an "
            f"unarchived segment for as long as it stays quiet, beyond the RPO of {rpo:g} s",
            hint,
        )
    if seconds > rpo:
        return Finding(
            ERROR,
            "archive-timeout",
            subject,
            f"{seconds} s, above the RPO of {rpo:g} s (sources.postgres[].rpo): a quiet server may lose more than that",
            hint,
        )
    return Finding(OK, "archive-timeout", subject, f"{seconds} s, within the RPO of {rpo:g} s")


def command_finding(policy: Policy, source: PostgresSource, settings: dict[str, Setting]) -> Finding:
    """archive_command runs this hadr's wal-push with this very policy and source name."""
    command, library = settings["archive_command"].value, settings.get("archive_library")
    expected = archive_command_for(policy.path, source.name)
    hint = _reload_hint("archive_command", expected)
    if library is not None and library.value:
        return Finding(
            ERROR,
            "archive-command",
            source.name,
            f"archive_library = {library.value!r} is set: PostgreSQL calls it instead of archive_command",
            _reload_hint("archive_library", ""),
        )
    if command == expected:
        return Finding(
            OK,
            "archive-command",
            source.name,
            "hadr wal-push with this policy and source, exactly "
            "as hadr writes it" + (" (async)" if source.async_archive else ""),
        )
    problem = command_problem(policy, source, command)
    if problem is None:
        return Finding(OK, "archive-command", source.name, f"hadr wal-push with this policy and source: {command}")
    level, message = problem
    return Finding(level, "archive-command", source.name, message, hint)


def command_problem(policy: Policy, source: PostgresSource, command: str) -> tuple[str, str] | None:
    """What is wrong with an archive_command hadr did not write; None when it runs the right wal-push."""
    if command == "(disabled)":
        return ERROR, "(disabled): archive_mode is off"
    if not command.strip():
        return ERROR, "empty: PostgreSQL archives nothing"
    pushed = parse_push_command(command)
    if pushed is None:
        return ERROR, f"{command!r} is not hadr wal-push: segments do not reach this repository"
    policy_path = os.path.abspath(policy.path)
    if pushed.policy is None:
        return ERROR, (
            f"{command!r} names no --policy: which policy wal-push uses depends on the server's "
            f"environment and data directory, not necessarily {policy_path}"
        )
    if not os.path.isabs(pushed.policy):
        return ERROR, f"the policy path {pushed.policy!r} is relative: archive_command runs in the data directory"
    if os.path.realpath(pushed.policy) != os.path.realpath(policy_path):
        return ERROR, f"runs hadr wal-push with another policy file, {pushed.policy}, not {policy_path}"
    if pushed.source is None and len(policy.sources.postgres) > 1:
        return ERROR, "names no --source, and the policy has several PostgreSQL sources"
    if pushed.source is not None and pushed.source != source.name:
        return ERROR, f"archives as source {pushed.source!r}, not {source.name!r}"
    if not pushed.passes_path:
        return ERROR, f"{command!r} does not pass the segment as %p"
    if pushed.source is None:
        return WARNING, "names no --source: right while the policy has only this PostgreSQL source"
    return None


# -- clocks ----------------------------------------------------------------------------------------


def clock_finding(conn, subject: str, clock) -> Finding:
    """The server's clock against this host's (``clock``), corrected by half the round trip: restore
    targets are server times, and the repository lease compares clocks of hosts."""
    skew, round_trip = measure_skew(conn, clock)
    found = (
        f"the server's clock is {abs(skew):.3f} s {'ahead of' if skew >= 0 else 'behind'} this host's "
        f"(round trip {round_trip * 1000:.1f} ms)"
    )
    hint = "synchronise both clocks (NTP, chrony): time targets and the repository lock depend on them"
    if abs(skew) > SKEW_FAIL:
        return Finding(ERROR, "clock-skew", subject, f"{found}, more than {SKEW_FAIL:g} s", hint)
    if abs(skew) > SKEW_WARN:
        return Finding(WARNING, "clock-skew", subject, f"{found}, more than {SKEW_WARN:g} s", hint)
    return Finding(OK, "clock-skew", subject, found)


def measure_skew(conn, clock, samples: int = 3) -> tuple[float, float]:
    """(server minus host in seconds, round trip) of the sample with the shortest round trip."""
    best: tuple[float, float] | None = None
    for _ in range(samples):
        before = clock()
        server = float(conn.execute("select extract(epoch from clock_timestamp())").fetchone()[0])
        after = clock()
        if best is None or after - before < best[1]:
            best = (server - (before + after) / 2, after - before)
    return best


# -- the archive in the repository -----------------------------------------------------------------


def archive_findings(
    ctx: EngineContext, source: PostgresSource, conn, view: ServerView, timeout: float
) -> list[Finding]:
    with ExitStack() as stack:
        try:
            repo = stack.enter_context(open_repo(ctx.policy, catalog=False))
        except HadrError as error:
            return skipped(source.name, ARCHIVE_CHECKS, f"the repository cannot be opened ({error.message})")
        found = [identity_finding(repo, source.name, view)]
        reason = switch_refused(view)
        if reason:
            return found + skipped(source.name, ARCHIVE_CHECKS[1:], reason)
        return found + [end_to_end(ctx, repo, source, conn, timeout)]


def identity_finding(repo: Repository, subject: str, view: ServerView) -> Finding:
    try:
        identity = load_identity(repo, subject)
    except HadrError as error:
        return Finding(
            ERROR,
            "archive-identity",
            subject,
            f"the archive's identity cannot be read: {error.message}",
            error.hint or "",
        )
    if identity is None:
        return Finding(
            OK,
            "archive-identity",
            subject,
            f"nothing archived yet: the first segment binds the archive to system identifier {view.system_identifier}",
        )
    if (str(identity.system_identifier), identity.segment_size) != (view.system_identifier, view.segment_size):
        return Finding(
            ERROR,
            "archive-identity",
            subject,
            f"the archive of source {subject!r} belongs to the "
            f"cluster with {identity.describe()}; this server is system identifier "
            f"{view.system_identifier} ({view.segment_size >> 20} MiB segments): wal-push refuses its WAL",
            "give this cluster its own source name in the policy (after initdb or pg_upgrade, a new "
            "name), or point this source at the cluster the archive belongs to",
        )
    return Finding(OK, "archive-identity", subject, f"belongs to this cluster: {identity.describe()}")


def switch_refused(view: ServerView) -> str | None:
    """Why no segment switch is tried, if one would prove nothing or cannot be made."""
    if view.in_recovery:
        return "a standby cannot switch WAL; check the primary"
    if view.settings["archive_mode"].value == "off":
        return "archive_mode is off, so no segment is archived"
    if not (view.superuser or view.may_switch):
        return f"{view.role} may not run pg_switch_wal()"
    return None


def end_to_end(ctx: EngineContext, repo: Repository, source: PostgresSource, conn, timeout: float) -> Finding:
    """Switch to a new segment now; the one just closed must reach the repository within ``timeout``."""
    conn.execute("select txid_current()")  # a record of its own: a switch with nothing written does nothing
    name = conn.execute("select pg_walfile_name(pg_switch_wal())").fetchone()[0]
    ctx.say(f"{source.name}: switched WAL; waiting up to {timeout:g} s for {name} to reach the repository")
    started = time.monotonic()
    try:
        outcome = wait_stored(repo, source.name, name, started + timeout, lambda: _archived(conn, name))
    except HadrError as error:
        return Finding(
            ERROR,
            "archive-end-to-end",
            source.name,
            f"could not look for {name} in the repository: {error.message}",
            error.hint or "",
        )
    if outcome == STORED:
        return Finding(
            OK,
            "archive-end-to-end",
            source.name,
            f"segment {name}, closed now by pg_switch_wal(), "
            f"reached the repository in {time.monotonic() - started:.1f} s",
        )
    if outcome == ELSEWHERE:
        return Finding(
            ERROR,
            "archive-end-to-end",
            source.name,
            f"segment {name}, closed now by pg_switch_wal(), "
            f"was archived (pg_stat_archiver counts it) but is not in the repository: archive_command "
            f"stores WAL somewhere else, or nowhere",
            "make archive_command hadr wal-push (see archive-command)",
        )
    return Finding(
        ERROR,
        "archive-end-to-end",
        source.name,
        f"segment {name}, closed now by pg_switch_wal(), did not reach the repository within {timeout:g} s",
        archiver_says(source),
    )


STORED, ELSEWHERE, LATE = "stored", "elsewhere", "late"


def wait_stored(
    repo: Repository, source: str, name: str, deadline: float, archived: Callable[[], bool], poll: float = 0.1
) -> str:
    """STORED once the repository holds ``name``; ELSEWHERE when PostgreSQL counts it archived and the
    repository still does not hold it (wal-push succeeds only once a segment is stored, so that is final);
    LATE at ``deadline``."""
    while True:
        if stored_versions(repo.store, source, name):
            return STORED
        if archived():
            return STORED if stored_versions(repo.store, source, name) else ELSEWHERE
        if time.monotonic() >= deadline:
            return LATE
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
        poll = min(poll * 1.5, 1.0)


def _archived(conn, name: str) -> bool:
    """pg_stat_archiver counts ``name``, or a later segment of its timeline, as archived (the archiver
    goes in order; a ``.backup`` file of segment ``name`` may go before ``name`` itself)."""
    last = conn.execute("select last_archived_wal from pg_stat_archiver").fetchone()[0] or ""
    return last == name or (last[:8] == name[:8] and last[:24] > name)


def archiver_says(source: PostgresSource) -> str:
    """What pg_stat_archiver tells about a segment that does not arrive."""
    state = archiver_state(source)
    if state is None:
        return "pg_stat_archiver could not be read: see archive_command and the PostgreSQL log"
    archived = state["last_archived_wal"] or "none"
    if state["last_failed_time"] is not None and (
        state["last_archived_time"] is None or state["last_failed_time"] >= state["last_archived_time"]
    ):
        return (
            f"pg_stat_archiver: the last failure was on {state['last_failed_wal']} at "
            f"{format_time(state['last_failed_time'])} ({state['failed_count']} failures; last archived "
            f"{archived}): the PostgreSQL log has archive_command's error"
        )
    return (
        f"pg_stat_archiver reports no failure since {archived} was archived: the archiver is behind or slow; "
        f"try a longer --timeout"
    )
