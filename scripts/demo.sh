#!/usr/bin/env bash
# Runs the demo: the example document workflow driven to completion, printing stages, output and cost.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
ensure_venv ""
exec "$VENV/bin/python" -m airflow_workflow_engine.demo "$@"
