"""WAL continuity of a PostgreSQL source as verification findings (values, never exceptions): every
backup has the WAL that makes it consistent, and WAL is continuous from each backup to the newest
segment of each timeline."""

from __future__ import annotations

from hadr_backup.errors import HadrError
from hadr_backup.postgres import wal
from hadr_backup.postgres.archiveview import ArchiveView, describe_gap, missing_between
from hadr_backup.ui import plural
from hadr_backup.verify.findings import ERROR, OK, WARNING, Finding


def check_wal_chain(repo, source: str, view: ArchiveView | None = None) -> list[Finding]:
    """Completeness of every backup and WAL continuity from each to the newest segment of each timeline
    (``view``: the archive, when the caller has loaded it)."""
    view = view or ArchiveView.load(repo, source)
    findings = list(view.problems)
    for backup in view.backups:
        span = [wal.TimelineSpan(backup.timeline, 0, None)]
        missing = missing_between(view, span, backup.start_lsn, max(backup.stop_lsn - 1, backup.start_lsn))
        if missing:
            findings.append(
                Finding(
                    ERROR,
                    "backup-wal-missing",
                    backup.id,
                    f"WAL needed to make it consistent is missing: {describe_gap(missing)}",
                )
            )
        failures = backup.meta.checksum_failures
        if failures:
            findings.append(
                Finding(
                    WARNING,
                    "backup-page-checksums",
                    backup.id,
                    f"{plural(len(failures), 'page checksum failure')} in the source when it was taken: {failures[0]}",
                )
            )
    seen: set[tuple[str, ...]] = set()
    for timeline in view.timelines:
        findings += _timeline_findings(view, timeline, seen)
    for name, versions in view.archived.conflicts.items():
        findings.append(Finding(WARNING, "wal-conflict", name, f"{len(versions)} different contents stored"))
    if not any(f.level == ERROR for f in findings):
        findings.append(Finding(OK, "wal-chain", source, _continuous(view)))
    return findings


def _continuous(view: ArchiveView) -> str:
    """What a chain without gaps proves, in words."""
    if not view.backups:
        return "no complete backup, so no WAL chain to follow yet"
    timelines = view.timelines
    which = "the backup" if len(view.backups) == 1 else f"each of the {len(view.backups)} backups"
    return (
        f"WAL continuous from {which} to the newest archived segment (timeline{'s' if len(timelines) > 1 else ''}"
        f" {', '.join(map(str, timelines))}), and every backup has the WAL that makes it consistent"
    )


def _timeline_findings(view: ArchiveView, timeline: int, seen: set) -> list[Finding]:
    try:
        spans = view.spans(timeline)
    except (HadrError, ValueError) as error:
        return [Finding(ERROR, "timeline-history-missing", wal.history_name(timeline), str(error).splitlines()[0])]
    newest = view.newest_on(spans)
    found = []
    for backup in view.backups_on(spans):
        if newest is None:
            break
        end = wal.segment_start_lsn(newest, view.segment_size)
        if end < backup.start_lsn:
            continue
        missing = missing_between(view, spans, backup.start_lsn, end)
        if missing and tuple(missing) not in seen:
            seen.add(tuple(missing))
            stops = wal.format_lsn(wal.segment_start_lsn(missing[0], view.segment_size))
            found.append(
                Finding(
                    ERROR,
                    "wal-gap",
                    missing[0],
                    f"timeline {timeline}: WAL missing {describe_gap(missing)}; backup {backup.id} "
                    f"cannot be rolled forward past {stops}",
                )
            )
    return found
