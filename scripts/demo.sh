#!/usr/bin/env bash
# The whole story on a local sandbox: install what is missing, start the sandbox, take a base backup,
# run a workload, make an "accidental" UPDATE, restore PostgreSQL to just before it into a side cluster,
# show what came back, and print the measured RTO and RPO; then snapshot the Redis queues, archive their AOF
# while the workload runs, restore them to a second into a scratch directory, start them and check them
# (as at that second; jobs left active requeued; BullMQ checks passing). At the end the demo's sandbox is stopped (its
# data stays in the folder), so the README's by-hand steps can follow on the same ports.
# Usage: scripts/demo.sh [hadr demo options]   (e.g. --seconds 10 --keep)
# HADR_DEMO_DIR (default /tmp/hadr-demo) is the sandbox folder; `hadr sandbox down --dir DIR --purge` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f scripts/setup.sh ]; then bash scripts/setup.sh; fi
DIR=${HADR_DEMO_DIR:-/tmp/hadr-demo}
exec "${PYTHON:-python3}" -m hadr_backup demo --dir "$DIR" --stop-sandbox "$@"
