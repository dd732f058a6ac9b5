"""Paired chart of scripts/winograd_ab.sh: test mean Dice per seed with the
Winograd convolution path on and off (development tool; needs matplotlib).

Usage: .venv/bin/python tools/plot_winograd_ab.py [docs/results/winograd_runs.csv]
Writes docs/results/winograd_dice.png beside the CSV.
"""
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "docs/results/winograd_runs.csv"
    runs = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            runs.setdefault(int(row["seed"]), {})[row["winograd"]] = float(row["test_mean"])
    seeds = sorted(s for s, r in runs.items() if "0" in r and "1" in r)
    fig, ax = plt.subplots(figsize=(5, 4))
    for s in seeds:
        ax.plot([0, 1], [runs[s]["0"], runs[s]["1"]], "o-", color="0.5")
        ax.annotate(f"seed {s}", (1.03, runs[s]["1"]), fontsize=8, va="center")
    diffs = [runs[s]["1"] - runs[s]["0"] for s in seeds]
    mean = sum(diffs) / len(diffs)
    ax.set_xticks([0, 1], ["im2col (MEDSEG_WINOGRAD=0)", "Winograd (default)"])
    ax.set_xlim(-0.3, 1.4)
    ax.set_ylabel("test mean Dice (RV, myo, LV)")
    ax.set_title(f"quickstart, {len(seeds)} seeds; mean paired difference {mean:+.4f}", fontsize=9)
    fig.tight_layout()
    out = os.path.join(os.path.dirname(path), "winograd_dice.png")
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    main()
