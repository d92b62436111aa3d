"""What each job of the registry (jobs.py) runs: the command line's own ``run_*`` functions, over every
source the job covers. A source that fails does not stop the others; the job fails if any did."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from hadr_backup import engines
from hadr_backup.engines import EngineContext
from hadr_backup.errors import EXIT_FAILURE, EXIT_OK, HadrError, UsageError


@dataclass
class JobOutput:
    """The results of one job's steps (``what`` -> a result value) and the errors of those that failed."""

    job: str
    steps: list[tuple[str, Any]] = field(default_factory=list)
    errors: list[tuple[str, str, int]] = field(default_factory=list)  # (what, message, exit code)

    @property
    def exit_code(self) -> int:
        codes = [code for _what, _message, code in self.errors]
        codes += [getattr(result, "exit_code", EXIT_OK) for _what, result in self.steps]
        return max(codes, default=EXIT_OK)

    @property
    def error(self) -> str | None:
        """One line: what failed, for the job history and the log."""
        failed = [f"{what}: {message.splitlines()[0]}" for what, message, _code in self.errors]
        failed += [f"{what}: found problems" for what, result in self.steps if getattr(result, "exit_code", 0)]
        return "; ".join(failed) or None

    def step(self, what: str, run) -> None:
        """Run one step; an error is recorded (an interruption is not an error: it propagates)."""
        try:
            self.steps.append((what, run()))
        except HadrError as error:
            self.errors.append((what, str(error), error.exit_code))
        except Exception as error:  # a fault nobody put into words: still recorded, the next step runs
            self.errors.append((what, f"{type(error).__name__}: {error}", EXIT_FAILURE))

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "steps": [{"what": what, "result": result.to_json()} for what, result in self.steps],
            "errors": [{"what": what, "message": message, "exit_code": code} for what, message, code in self.errors],
        }

    def render(self, out) -> None:
        for what, result in self.steps:
            out.line(f"== {what}")
            result.render(out)
        for what, message, _code in self.errors:
            out.line(f"== {what}: FAILED: {message}")


def _backup_kinds(ctx: EngineContext, job: str, kinds: list[str]) -> JobOutput:
    output = JobOutput(job)
    for kind in kinds:
        section = engines.KINDS[kind][0]
        sources = getattr(ctx.policy.sources, section)
        if not sources:
            output.errors.append((f"backup {kind}", f"the policy has no sources.{section} entry", 2))
        for source in sources:
            output.step(f"backup {kind} {source.name}", lambda k=kind, s=source: engines.engine(k).backup(ctx, s.name))
    return output


def backup_pg(ctx: EngineContext) -> JobOutput:
    return _backup_kinds(ctx, "backup pg", ["pg"])


def backup_redis(ctx: EngineContext) -> JobOutput:
    return _backup_kinds(ctx, "backup redis", ["redis"])


def backup_s3(ctx: EngineContext) -> JobOutput:
    return _backup_kinds(ctx, "backup s3", ["s3"])


def backup_all(ctx: EngineContext) -> JobOutput:
    kinds = [kind for kind in engines.KINDS if getattr(ctx.policy.sources, engines.KINDS[kind][0])]
    if not kinds:
        raise UsageError("the policy lists no sources", hint="add sources.postgres, sources.redis or sources.buckets")
    return _backup_kinds(ctx, "backup all", kinds)


def archive_redis(ctx: EngineContext) -> JobOutput:
    from hadr_backup.redis.aofarchive import run_archive_redis

    sources = [source for source in ctx.policy.sources.redis if source.aof_dir]
    if not sources:
        raise UsageError(
            "no sources.redis entry has an aof_dir: there is no AOF to archive",
            hint="set aof_dir on the Redis sources whose AOF this host can read",
        )
    output = JobOutput("archive redis")
    for source in sources:
        output.step(f"archive redis {source.name}", lambda s=source: run_archive_redis(ctx.policy, s.name))
    return output


def prune(ctx: EngineContext) -> Any:
    try:
        module = importlib.import_module("hadr_backup.repo.prune")
    except ModuleNotFoundError as missing:
        if missing.name != "hadr_backup.repo.prune":
            raise
        raise UsageError("this hadr has no retention yet (hadr prune)", hint="remove the prune schedule") from None
    return module.run_prune(ctx, None, dry_run=False)


def verify_repo(ctx: EngineContext) -> Any:
    from hadr_backup.verify.repo import run_verify_repo

    return run_verify_repo(ctx.policy, deep=False)


def check(ctx: EngineContext) -> Any:
    from hadr_backup.verify.check import run_check

    return run_check(ctx.policy, None, timeout=60.0, ui=ctx.ui)
