"""Scheduled work: the job registry, the daemon (APScheduler), cron lines, job history and metrics.

Jobs call the same ``run_*`` functions as the command line; the daemon runs each job as ``hadr schedule
exec NAME`` (the command a cron line runs too), so a job is interruptible, isolated, and logged the same
way whichever scheduler starts it.
"""
