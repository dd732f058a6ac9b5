#!/usr/bin/env bash
# Creates (once) the Python environment of the Flower side: the pinned flwr
# release (its SuperLink, ServerApp runtime and `flwr run`), numpy and
# safetensors for the ServerApp. Prints the venv's folder.
# Usage: tools/flower/setup_venv.sh [VENV_DIR]   (default target/flower-venv)
set -euo pipefail
cd "$(dirname "$0")/../.."
FLWR_VERSION="1.42.0"
VENV="${1:-target/flower-venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" >&2
fi
if ! "$VENV/bin/python" -c "import flwr, safetensors, numpy, sys; sys.exit(flwr.__version__ != '$FLWR_VERSION')" 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q "flwr==$FLWR_VERSION" "safetensors>=0.4" "numpy>=1.26" >&2
fi
echo "$VENV"
