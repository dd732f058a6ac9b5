#!/usr/bin/env bash
# The main job: train a 2D UNet on the cardiac phantom (generated on first
# use), predict the test split, evaluate it, and print the per-class Dice.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/supervised/quickstart.toml}
RUN=runs/quickstart

cargo build --release -p medseg-supervised -p medseg-infer-app -p medseg-eval
./target/release/medseg-supervised train "$CONFIG"
./target/release/medseg-infer "$CONFIG" --output "$RUN/predictions"
./target/release/medseg-eval --manifest "$RUN/predictions/predictions.csv" \
    --num-classes 4 --out "$RUN/evaluation"

echo
echo "Per-class Dice on the test split (mean and std over cases):"
{ head -n 1 "$RUN/evaluation/eval_dice.csv"; tail -n 2 "$RUN/evaluation/eval_dice.csv"; } | sed 's/,/\t/g' 
echo
echo "training curves:   $RUN/curves_loss.png, $RUN/curves_dice.png"
echo "prediction overlays: $RUN/predictions/*_overlay.png"
echo "evaluation:        $RUN/evaluation/ (eval_<metric>.csv, summary.json, boxplot_dice.png, boxplot_hd95.png)"
