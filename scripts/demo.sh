#!/usr/bin/env bash
# The demo, offline (mock models): starts a real embedded Airflow (SQLite, every process on
# 127.0.0.1, AIRFLOW_HOME=.demo/), triggers the example document pipeline DAG with a conf
# through the REST API, prints the UI address and login while it runs, then each stage, the
# output and the AI cost table, and stops everything it started (also on Ctrl-C).
#
#   bash scripts/demo.sh                 # the Airflow demo (installs the 'airflow' extra)
#   bash scripts/demo.sh --keep-running  # ... and keep Airflow up afterwards, until Ctrl-C
#   bash scripts/demo.sh --in-process    # the same workflow on the in-memory kernel, no Airflow
#   bash scripts/demo.sh --help          # every option (--port, --home, --input, ...)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
extras="airflow"
for arg in "$@"; do
  [ "$arg" = "--in-process" ] && extras=""
done
ensure_venv "$extras"
exec "$VENV/bin/python" -m airflow_workflow_engine.demo "$@"
