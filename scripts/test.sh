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
echo "==> pytest"
pytest "$@"
