#!/usr/bin/env bash
# The README's "By hand" steps, one after the other, on a sandbox in ./.hadr-sandbox: run it from a folder
# the postgres OS user can enter. The README shows this file as it is, and
# tests/integration/test_by_hand.py runs it in a fresh folder.
set -euo pipefail

hadr sandbox up                   # PostgreSQL :54329 (archiving through hadr), Redis :63790 (cache) and
                                  # :63810 (queues), S3 :59000; writes .hadr-sandbox/policy.yaml, the key
                                  # and the encrypted repository; its last line is the export below
export HADR_POLICY="$PWD/.hadr-sandbox/policy.yaml"   # every other command reads the sandbox's policy
hadr backup pg                    # one base backup; WAL is archived continuously by `hadr wal-push`
hadr sandbox load --seconds 10    # a realistic write workload
T=$(date -u '+%Y-%m-%d %H:%M:%S') # the instant to go back to (UTC)
hadr sandbox load --seconds 5     # more writes, after T: the restore must leave them out
hadr backup pg                    # a second backup, which also archives the WAL written so far
hadr list && hadr info            # catalog; restorable window (now past T) and archive lag
hadr restore pg --target-time "$T" --to "$PWD/restored" --start --target-action promote
runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$PWD/restored" stop   # when done with it
hadr verify repo --deep
hadr sandbox down                 # --purge also removes the folder
