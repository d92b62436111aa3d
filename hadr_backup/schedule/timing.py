"""When schedule entries run: APScheduler cron triggers in the policy's time zone, the tick a run is for,
the next run, and the longest gap between runs (what an alert allows before a run counts as missed)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from hadr_backup.policy.model import Policy, Schedule
from hadr_backup.schedule.cron import parse_cron

MISFIRE_GRACE = 300  # seconds a run may start late (a busy host, a long job before it) and still run
GAP_SAMPLES = 400  # fire times looked at to find the longest gap (a weekly job: ~8 years of weeks)


def trigger_for(schedule: Schedule, policy: Policy) -> CronTrigger:
    return CronTrigger(**parse_cron(schedule.cron).trigger_fields(), timezone=ZoneInfo(policy.timezone))


def latest_tick(trigger: CronTrigger, now: datetime, grace: float = MISFIRE_GRACE) -> datetime | None:
    """The newest fire time at or before ``now`` and at most ``grace`` seconds old; None when there is none
    (a run started by hand, outside its schedule)."""
    tick = trigger.get_next_fire_time(None, now - timedelta(seconds=grace))
    if tick is None or tick > now:
        return None
    while True:
        following = trigger.get_next_fire_time(tick, tick + timedelta(microseconds=1))
        if following is None or following > now:
            return tick
        tick = following


def next_run(trigger: CronTrigger, now: datetime) -> datetime | None:
    return trigger.get_next_fire_time(None, now)


def longest_gap(trigger: CronTrigger, now: datetime) -> float:
    """The longest time in seconds between two consecutive runs, over the next GAP_SAMPLES runs."""
    previous = trigger.get_next_fire_time(None, now)
    gap = 0.0
    for _ in range(GAP_SAMPLES):
        if previous is None:
            break
        following = trigger.get_next_fire_time(previous, previous + timedelta(microseconds=1))
        if following is None:
            break
        gap = max(gap, (following - previous).total_seconds())
        previous = following
    return gap
