#!/usr/bin/env bash
# Creates .venv, installs everything and runs the whole test suite: lint, format, types, docs, tests.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
ensure_venv dev
export PATH="$VENV/bin:$PATH"

echo "==> ruff check";          ruff check .
echo "==> ruff format --check"; ruff format --check .
echo "==> mypy --strict";       mypy --strict airflow_workflow_engine
echo "==> mkdocs build --strict"; NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet --site-dir "$ROOT/.tmp/site"
# PostgreSQL server binaries for the tests' throwaway cluster (Debian's packages; its own
# cluster is never created or started: the tests start one on 127.0.0.1 and stop it).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
    && command -v apt-get >/dev/null; then
  echo "==> installing PostgreSQL (apt-get install postgresql)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q postgresql-common
  grep -q '^create_main_cluster = false' /etc/postgresql-common/createcluster.conf \
    || echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
  apt-get install -y -q --no-install-recommends postgresql
fi
# Debian's Chromium for the UI tests (playwright drives it; it never downloads a browser).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "==> installing Chromium (apt-get install chromium)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends chromium
fi
# Debian's Redis for the CeleryExecutor suite (the tests start their own on 127.0.0.1).
if ! command -v redis-server >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "==> installing Redis (apt-get install redis-server)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends redis-server
fi

echo "==> pytest"
pytest "$@"
