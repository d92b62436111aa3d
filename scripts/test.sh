#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: install what is missing, lint, then pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k pitr -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONDONTWRITEBYTECODE=1
PY=${PYTHON:-python3}
# style as the project writes it (ruff format, ruff check), before anything runs
"$PY" -m ruff format --check hadr_backup tests bench
"$PY" -m ruff check hadr_backup tests bench
set +e
# the integration tests mostly wait on servers: three workers (one file each at a time, so a module's servers
# stay in one process) take the suite from about 17 to about 7 minutes on two cores; HADR_TEST_WORKERS=0 runs
# it in one process
workers=${HADR_TEST_WORKERS:-3}
if [ "$workers" = 0 ]; then
  "$PY" -m pytest -q "$@"
else
  "$PY" -m pytest -q -n "$workers" --dist loadfile "$@"
fi
code=$?
set -e
if [ $code -eq 5 ]; then echo "test: no tests ran" >&2; exit 1; fi
exit $code
