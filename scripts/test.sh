#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: install what is missing, then pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k pitr -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONDONTWRITEBYTECODE=1
set +e
"${PYTHON:-python3}" -m pytest -q "$@"
code=$?
set -e
if [ $code -eq 5 ]; then echo "test: no tests ran" >&2; exit 1; fi
exit $code
