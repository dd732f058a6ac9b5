#!/usr/bin/env python3
"""Lists what PyMIC_examples' segmentation training configs use, for
medseg-config's coverage test (tests/pymic_coverage.rs): every
`section.key`, and for the keys that name things (networks, losses,
schedulers, optimisers, methods, post-processing, transforms) every
`section.key=name`. Evaluation and pre-processing configs are left out.

Usage (no network; give a checkout of github.com/HiLab-git/PyMIC_examples):
    python3 tools/list_pymic_example_keys.py PATH/TO/PyMIC_examples \
        > crates/medseg-config/tests/fixtures/pymic/published_keys.txt
Prints the number of configs read on stderr.
"""
import configparser
import glob
import os
import sys

NAMED = {"net_type", "loss_type", "lr_scheduler", "optimizer", "method_name",
         "post_process", "train_transform", "train_transform_unlab",
         "valid_transform", "test_transform", "transform"}


def names(value):
    v = value.strip()
    if v.startswith("[") and v.endswith("]"):
        v = v[1:-1]
    return [x.strip() for x in v.split(",") if x.strip() and x.strip().lower() != "none"]


def main(root):
    files = sorted(f for f in glob.glob(os.path.join(root, "seg_*", "**", "*.cfg"), recursive=True)
                   if "evaluation" not in os.path.basename(f)
                   and "preprocess" not in os.path.basename(f))
    out = set()
    for f in files:
        c = configparser.ConfigParser()
        c.read(f)
        for s in c.sections():
            for k, v in c.items(s):
                out.add(f"{s}.{k}")
                if k in NAMED:
                    for n in names(v):
                        out.add(f"{s}.{k}={n}")
    print(f"{len(files)} configs", file=sys.stderr)
    for line in sorted(out):
        print(line)


if __name__ == "__main__":
    main(sys.argv[1])
