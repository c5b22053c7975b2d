#!/usr/bin/env bash
# The gate: set-up from uv.lock, then ruff, mypy on src/, and the whole test suite. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
export UV_PYTHON_DOWNLOADS=never
command -v uv >/dev/null || { echo "uv is missing: python3 -m pip install uv" >&2; exit 2; }
uv sync --locked
echo "== ruff"; uv run --locked ruff check src tests tools scripts
echo "== mypy"; uv run --locked mypy
echo "== pytest"; uv run --locked pytest "$@"
