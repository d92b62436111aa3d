#!/usr/bin/env bash
# Install what hadr and its tests need on a fresh Debian machine: the PostgreSQL 15 server binaries,
# redis-server, zstd, openssl and prometheus (for promtool) from Debian (only when missing), then hadr with its test extras.
# Usage: scripts/setup.sh [--bench]   (--bench also installs pgbackrest and rclone for bench/)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15 postgresql-client-15)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v zstd >/dev/null || need+=(zstd)
command -v openssl >/dev/null || need+=(openssl)
command -v runuser >/dev/null || need+=(util-linux)
command -v promtool >/dev/null || need+=(prometheus)  # promtool: the metrics and alert rules tests
command -v flock >/dev/null || need+=(util-linux)
if [ "${1:-}" = "--bench" ]; then
  command -v pgbackrest >/dev/null || need+=(pgbackrest)
  command -v rclone >/dev/null || need+=(rclone)
  command -v bc >/dev/null || need+=(bc)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "setup: need root to install ${need[*]}" >&2; exit 1; fi
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
id postgres >/dev/null 2>&1 || useradd --system --home /var/lib/postgresql --shell /bin/bash postgres

PY=${PYTHON:-python3}
# editable, so that archive_command / restore_command (run by the server from its own directory) run
# this checkout's code
"$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]' 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
"$PY" -c "import hadr_backup, moto, pytest, xdist, psycopg, redis, zstandard" 

# PostgreSQL runs hadr (archive_command / restore_command) as the postgres OS user: that user must be
# able to run this Python and read this checkout. Open the search (x) bit of their parent directories.
if [ "$(id -u)" = 0 ]; then
  real_py=$("$PY" -c 'import os, sys; print(os.path.realpath(sys.executable))')
  for path in "$real_py" "$PWD/hadr_backup"; do
    dir=$(dirname "$path")
    while [ "$dir" != / ]; do
      runuser -u postgres -- test -x "$dir" 2>/dev/null || chmod o+x "$dir"
      dir=$(dirname "$dir")
    done
  done
  if ! (cd / && runuser -u postgres -- "$real_py" -c "import hadr_backup.cli.main") 2>/dev/null; then
    echo "setup: the postgres OS user cannot run hadr with $PY (check permissions of $PWD)" >&2
    exit 1
  fi
fi
