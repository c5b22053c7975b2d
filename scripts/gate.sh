#!/usr/bin/env bash
# The gate: set-up from uv.lock, then ruff, mypy on src/, and the whole test suite. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
export UV_PYTHON_DOWNLOADS=never
# This machine kind sets PYTHONDONTWRITEBYTECODE=1 and uv installs no bytecode, so every Python process compiled
# all it imported from source: `import lightning` took 20 s of CPU instead of 8, `import torch` 6 s instead of 2.5,
# in every worker, job process and CLI call of the suite. Python caches the bytecode here (the files are ignored).
unset PYTHONDONTWRITEBYTECODE
command -v uv >/dev/null || { echo "uv is missing: python3 -m pip install uv" >&2; exit 2; }
uv sync --locked  # with the dev group, which holds mlhub[worker]: the suite trains (torch, lightning, ONNX)
echo "== ruff"; uv run --locked ruff check src tests tools scripts
echo "== mypy"; uv run --locked mypy
# Two xdist workers, a test file each at a time (loadfile: a file's module fixtures stay in one process): most
# tests wait on subprocesses and servers, so two overlap well on this 2-core machine kind. MLHUB_TEST_WORKERS=0
# runs the suite in one process.
workers="${MLHUB_TEST_WORKERS:-2}"
if [ "$workers" = 0 ]; then
  echo "== pytest"; uv run --locked pytest "$@"
else
  echo "== pytest ($workers workers)"; uv run --locked pytest -n "$workers" --dist loadfile "$@"
fi
