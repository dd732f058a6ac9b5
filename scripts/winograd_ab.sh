#!/usr/bin/env bash
# Does the Winograd convolution path change what the quickstart learns?
# Trains the quickstart config with MEDSEG_WINOGRAD=1 and =0 for each seed
# (same data, budget and seed per pair), predicts and evaluates the test
# split, and appends one row per run to docs/results/winograd_runs.csv.
# Usage: bash scripts/winograd_ab.sh [SEEDS...]   (default: 1 2 3 4)
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=configs/supervised/quickstart.toml
SEEDS=${*:-1 2 3 4}
OUT=docs/results/winograd_runs.csv
B=target/release
cargo build --release -p medseg-supervised -p medseg-infer-app -p medseg-eval
mkdir -p runs/winograd_ab
[ -f "$OUT" ] || echo "seed,winograd,train_s,best_val_dice,test_rv,test_myo,test_lv,test_mean" > "$OUT"
for seed in $SEEDS; do
  for w in 1 0; do
    run=runs/winograd_ab/s${seed}_w${w}
    start=$(date +%s)
    MEDSEG_WINOGRAD=$w $B/medseg-supervised train "$CONFIG" \
      --set training.seed=$seed --set "training.output_dir=\"$run\"" > "$run.log" 2>&1
    train_s=$(( $(date +%s) - start ))
    MEDSEG_WINOGRAD=$w $B/medseg-infer "$CONFIG" --set "training.output_dir=\"$run\"" \
      --output "$run/predictions" > /dev/null
    $B/medseg-eval --manifest "$run/predictions/predictions.csv" --num-classes 4 \
      --out "$run/evaluation" > /dev/null
    val=$(grep -o 'best validation mean Dice [0-9.]*' "$run.log" | awk '{print $NF}')
    test=$(tail -n 2 "$run/evaluation/eval_dice.csv" | head -n 1 | cut -d, -f2-5)
    echo "$seed,$w,$train_s,$val,$test" | tee -a "$OUT"
  done
done
