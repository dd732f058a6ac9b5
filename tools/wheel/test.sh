#!/usr/bin/env bash
# Builds and installs the medseg-metrics wheel (tools/wheel/build.sh), then
# runs its Python test suite (bindings/python/tests) against MedPy live and
# against MedPy and MONAI through the committed metric fixtures. Extra
# arguments go to pytest. `cargo test -p medseg-metrics` runs this
# (tests/python_wheel.rs), and so does the README's test command.
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEEL="$(bash tools/wheel/build.sh)"
VENV="$(bash tools/wheel/setup_venv.sh)"
echo "testing $WHEEL" >&2
"$VENV/bin/python" -m pytest -q -p no:cacheprovider bindings/python/tests "$@"
