"""``hadr check``: prove, before it is needed, that each source's path into the repository works.

The repository once — reachable, its identity readable, the key opens it, writable (a probe object
created with a conditional put, read back and removed) — then each source through its engine's
``check`` (PostgreSQL: settings, role, clocks, a segment switched now must arrive). Sources of a kind
without an engine are reported as not checked. One line per check; exit 3 when one fails.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

from hadr_backup import engines
from hadr_backup.errors import HadrError, UsageError
from hadr_backup.fsutil import describe_os_error
from hadr_backup.policy.model import Policy
from hadr_backup.repo import layout
from hadr_backup.repo.repository import make_storage, open_repo, read_meta
from hadr_backup.repo.storage import Storage
from hadr_backup.timefmt import format_time
from hadr_backup.verify.findings import ERROR, OK, SKIPPED, WARNING, Finding, Report

REPO = "repository"
STATUS = {OK: "ok", WARNING: "WARN", ERROR: "FAIL", SKIPPED: "skip"}
WRITE_HINT = (
    "make the repository writable for every OS user hadr runs as (archive_command runs as the "
    "server's OS user, e.g. postgres)"
)


class CheckReport(Report):
    """Every check is a line, the passing ones included."""

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "passed": self.passed, "findings": [f.to_json() for f in self.findings]}

    def render(self, out) -> None:
        width = max((len(f.code) for f in self.findings), default=0)
        for finding in self.findings:
            out.line(f"{finding.code:<{width}}  {STATUS[finding.level]:<4}  {finding.describe()}")
        failed = len(self.problems)
        verdict = "PASSED" if self.passed else f"FAILED ({failed} of {len(self.findings)} checks failed)"
        out.line(f"{self.title}: {verdict}")


def run_check(
    policy: Policy,
    source_name: str | None = None,
    *,
    timeout: float = 60.0,
    ui=None,
    clock: Callable[[], float] = time.time,
) -> CheckReport:
    """The repository, then every source (or only ``source_name``), as one report."""
    targets = pick_sources(policy, source_name)
    report = CheckReport("check")
    # 1. the repository, once for all sources
    report.findings += check_repository(policy)
    # 2. each source through its engine
    ctx = engines.EngineContext(policy, ui, clock)
    for kind, source in targets:
        engine = engines.find(kind)
        if engine is None:
            report.add(SKIPPED, "source", source.name, f"not checked: hadr has no {engines.KINDS[kind][1]} engine yet")
        else:
            report.findings += engine.check(ctx, source.name, timeout).findings
    return report


def pick_sources(policy: Policy, source_name: str | None) -> list[tuple[str, Any]]:
    listed = engines.configured(policy)
    if source_name is None:
        return listed
    chosen = [(kind, source) for kind, source in listed if source.name == source_name]
    if not chosen:
        known = ", ".join(source.name for _kind, source in listed) or "none"
        raise UsageError(f"the policy lists no source named {source_name!r}", hint=f"its sources: {known}")
    return chosen


# -- the repository ---------------------------------------------------------------------------------


def check_repository(policy: Policy) -> list[Finding]:
    """Reachable, a hadr repository, opened by the key, writable: one finding each."""
    later = ("repository-identity", "repository-key", "repository-writable")
    # 1. the storage answers
    try:
        store = make_storage(policy)
        store.stat(layout.META)
    except (HadrError, OSError) as error:
        return [
            _failure("repository-reachable", error, f"{policy.repository.display}: "),
            *_skipped(later, "the repository cannot be reached"),
        ]
    found = [Finding(OK, "repository-reachable", REPO, f"{store.describe()} answers")]
    # 2. it holds a hadr repository whose identity reads
    try:
        meta = read_meta(store)
    except HadrError as error:
        return found + [_failure("repository-identity", error), *_skipped(later[1:], "there is no repository")]
    found.append(
        Finding(
            OK,
            "repository-identity",
            REPO,
            f"hadr repository {meta.get('id')}, format "
            f"{meta.get('format')}, created {format_time(meta.get('created_at'))}",
        )
    )
    # 3. the key opens it, and 4. a probe object can be written, read back and removed
    return found + [key_finding(policy), write_probe(store)]


def key_finding(policy: Policy) -> Finding:
    try:
        with open_repo(policy, catalog=False) as repo:
            if repo.data_key is None:
                return Finding(OK, "repository-key", REPO, "not encrypted, and the policy names no key")
            return Finding(OK, "repository-key", REPO, f"the key opens data key {repo.data_key.id}")
    except (HadrError, OSError) as error:
        return _failure("repository-key", error)


def write_probe(store: Storage) -> Finding:
    """A conditional create, a read back and a conditional delete of one probe object."""
    key = layout.probe(secrets.token_hex(8))
    payload = f"hadr check from {socket.gethostname()} pid {os.getpid()} at {time.time()}\n".encode()
    try:
        token = store.put_if(key, payload, token=None)
    except (HadrError, OSError) as error:
        return _failure("repository-writable", error, "the probe object cannot be created: ", WRITE_HINT)
    try:
        read_back = store.get_versioned(key).data
        store.delete_if(key, token)
    except (HadrError, OSError) as error:
        return _failure(
            "repository-writable",
            error,
            f"created {key} but could not read it back and remove it: ",
            f"remove {key} by hand once the repository works",
        )
    if read_back != payload:
        return Finding(
            ERROR,
            "repository-writable",
            REPO,
            f"{key} read back different bytes than were written",
            "the storage does not keep what it is given: check it before trusting backups to it",
        )
    return Finding(OK, "repository-writable", REPO, f"created, read back and removed {key}")


def _failure(code: str, error: BaseException, prefix: str = "", hint: str = "") -> Finding:
    if isinstance(error, HadrError):
        return Finding(ERROR, code, REPO, prefix + error.message, error.hint or hint)
    return Finding(ERROR, code, REPO, prefix + describe_os_error(error), hint)


def _skipped(codes: tuple[str, ...], reason: str) -> list[Finding]:
    return [Finding(SKIPPED, code, REPO, f"not checked: {reason}") for code in codes]
