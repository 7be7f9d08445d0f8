# Sourced by the other scripts: creates .venv (with uv when it can) and installs the project.
# Usage: ensure_venv "<extras>"   e.g. ensure_venv dev
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${WFE_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

ensure_venv() {
  local extras="$1"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtual environment in $VENV"
    # python3 -m venv needs ensurepip (Debian's python3-venv); uv does not.
    if ! "$PY" -m venv "$VENV" 2>/dev/null; then
      rm -rf "$VENV"
      "$PY" -m pip install --quiet --user uv 2>/dev/null || "$PY" -m pip install --quiet --break-system-packages --user uv
      "$PY" -m uv venv --quiet --python "$PY" "$VENV"
    fi
  fi
  if [ ! -x "$VENV/bin/uv" ]; then
    if [ -x "$VENV/bin/pip" ]; then
      "$VENV/bin/pip" install --quiet --disable-pip-version-check uv
    else
      "$PY" -m uv pip install --quiet --python "$VENV/bin/python" uv
    fi
  fi
  local target="$ROOT"
  [ -n "$extras" ] && target="$ROOT[$extras]"
  echo "==> installing airflow-workflow-engine${extras:+[$extras]}"
  "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" -e "$target"
}
