#!/usr/bin/env bash
# Builds the medseg-metrics wheel (bindings/python) with the pinned maturin
# of tools/wheel/setup_venv.sh, installs it into that venv, and prints the
# wheel's path on the last line. `cargo xtask wheel` and the Python test
# suite's Rust test (crates/medseg-metrics/tests/python_wheel.rs) call it.
#
# Usage: tools/wheel/build.sh [--native] [--out DIR]
#   --native   compile for this machine's CPU (-C target-cpu=native), as the
#              rest of medseg is; the default wheel runs on any x86-64-v2 CPU
#   --out DIR  where the wheel goes (default target/wheels)
# The Rust build goes to $CARGO_TARGET_DIR/wheel (default target/wheel).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$(pwd)"
NATIVE=0
OUT="$ROOT/target/wheels"
while [ $# -gt 0 ]; do
    case "$1" in
        --native) NATIVE=1 ;;
        --out) OUT="$2"; shift ;;
        *) echo "unknown argument $1 (expected --native, --out DIR)" >&2; exit 2 ;;
    esac
    shift
done
VENV="$(bash tools/wheel/setup_venv.sh)"
PY="$ROOT/$VENV/bin/python"
[ -x "$PY" ] || PY="$VENV/bin/python"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/wheel"
# RUSTFLAGS overrides the workspace's target-cpu=native (.cargo/config.toml)
if [ "$NATIVE" = 1 ]; then
    export RUSTFLAGS="-C target-cpu=native"
elif [ "$(uname -m)" = "x86_64" ]; then
    export RUSTFLAGS="-C target-cpu=x86-64-v2"
else
    export RUSTFLAGS="-C debuginfo=0"
fi
mkdir -p "$OUT"
rm -f "$OUT"/medseg_metrics-*.whl
"$PY" -m maturin build --release --quiet \
    --manifest-path bindings/python/Cargo.toml \
    --interpreter "$PY" --out "$OUT" >&2
WHEEL="$(ls "$OUT"/medseg_metrics-*.whl | head -n 1)"
"$PY" -m pip install -q --force-reinstall --no-deps "$WHEEL" >&2
echo "$WHEEL"
