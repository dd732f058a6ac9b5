#!/usr/bin/env bash
# Creates (once) the Python environment that builds and tests the
# medseg-metrics wheel: maturin (which builds it), numpy, and MedPy with
# scipy (the live reference of the Python test suite) and pytest, all
# pinned. MONAI is not installed here (it needs torch, over a GB): the tests
# compare against MONAI through the committed fixtures, and
# `cargo xtask bench metrics` runs it live. Prints the venv's folder.
# Usage: tools/wheel/setup_venv.sh [VENV_DIR]   (default target/wheel-venv)
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${1:-target/wheel-venv}"
MATURIN="1.16.0"
NUMPY="2.4.6"
SCIPY="1.17.1"
MEDPY="0.5.2"
PYTEST="9.2.0"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" >&2
fi
if ! "$VENV/bin/python" - <<PY 2>/dev/null
import sys
from importlib.metadata import version
want = {"maturin": "$MATURIN", "numpy": "$NUMPY", "scipy": "$SCIPY", "medpy": "$MEDPY", "pytest": "$PYTEST"}
sys.exit(any(version(k) != v for k, v in want.items()))
PY
then
    "$VENV/bin/python" -m pip install -q "maturin==$MATURIN" "numpy==$NUMPY" "scipy==$SCIPY" "pytest==$PYTEST" >&2
    # medpy.metric needs numpy and scipy only; --no-deps skips SimpleITK (its io module's)
    "$VENV/bin/python" -m pip install -q --no-deps "medpy==$MEDPY" >&2
fi
echo "$VENV"
