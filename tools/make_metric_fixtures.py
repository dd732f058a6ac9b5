#!/usr/bin/env python3
"""Reference values for medseg-metrics from MedPy 0.5.2 and MONAI 1.6.

Writes small label-map pairs (2D and 3D, anisotropic spacing, objects touching
the image border, thin structures, empty classes, several classes) and the
values MedPy and MONAI compute on them to
crates/medseg-metrics/tests/fixtures/*.json.

Run from the repository root:

    .venv/bin/python tools/make_metric_fixtures.py

Non-finite numbers are written as the strings "inf", "-inf" and "nan"; a value
the library refuses to compute (MedPy raises on empty masks) is null.
"""

import json
import math
import os
import subprocess
import sys
import warnings

REQUIRED = {"medpy": "medpy==0.5.2", "monai": "monai>=1.6,<1.7", "torch": "torch", "scipy": "scipy"}


def ensure_packages():
    missing = []
    for mod, pip_name in REQUIRED.items():
        try:
            __import__(mod)
        except ImportError:
            missing.append(pip_name)
    if missing:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *missing])


ensure_packages()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from medpy.metric import binary as mp  # noqa: E402
from monai.metrics import (  # noqa: E402
    compute_average_surface_distance,
    compute_hausdorff_distance,
    compute_surface_dice,
)

warnings.filterwarnings("ignore")

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "medseg-metrics", "tests", "fixtures")
NSD_TOLERANCES = [0.0, 1.0, 2.5]


def enc(x):
    if x is None:
        return None
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def medpy_or_none(fn, *args, **kwargs):
    try:
        return enc(fn(*args, **kwargs))
    except RuntimeError:
        return None


def ellipsoid(shape, centre, radii):
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    r = sum(((g - c) / rad) ** 2 for g, c, rad in zip(grids, centre, radii))
    return r <= 1.0


def jitter(mask, rng, p):
    """Flip a few voxels next to the boundary so that surfaces are ragged."""
    flip = rng.random(mask.shape) < p
    return np.where(flip, ~mask, mask)


def case_2d(rng):
    shape = (40, 48)
    gt = np.zeros(shape, np.uint16)
    pred = np.zeros(shape, np.uint16)
    gt[ellipsoid(shape, (20, 18), (12, 10))] = 1
    pred[jitter(ellipsoid(shape, (21, 20), (11, 11)), rng, 0.02)] = 1
    # class 2 touches the top and right borders
    gt[ellipsoid(shape, (2, 44), (8, 7))] = 2
    pred[ellipsoid(shape, (0, 46), (9, 6))] = 2
    # class 3: thin line structures (erosion removes everything)
    gt[30:38, 40] = 3
    pred[31:39, 41] = 3
    pred[5, 5] = 3
    return dict(name="multiclass_2d", spacing=[0.7, 1.3], pred=pred, gt=gt, classes=[1, 2, 3, 4])


def case_3d(rng):
    shape = (14, 22, 26)
    gt = np.zeros(shape, np.uint16)
    pred = np.zeros(shape, np.uint16)
    gt[ellipsoid(shape, (7, 11, 12), (5, 8, 9))] = 1
    pred[jitter(ellipsoid(shape, (7.5, 10, 13), (5, 7, 10)), rng, 0.03)] = 1
    # class 2 touches three borders
    gt[ellipsoid(shape, (0, 0, 25), (4, 6, 6))] = 2
    pred[ellipsoid(shape, (1, 1, 24), (5, 5, 7))] = 2
    # class 5 only in the prediction, class 6 only in the ground truth
    pred[10:12, 18:21, 2:4] = 5
    gt[2:4, 17:20, 1:5] = 6
    return dict(name="multiclass_3d", spacing=[2.5, 0.8, 0.9], pred=pred, gt=gt, classes=[1, 2, 5, 6, 7])


def case_3d_noisy(rng):
    shape = (12, 16, 18)
    gt = (rng.random(shape) < 0.35).astype(np.uint16)
    gt[3:9, 4:12, 5:14] = 1
    pred = (rng.random(shape) < 0.3).astype(np.uint16)
    pred[4:10, 3:11, 4:15] = 1
    return dict(name="speckle_3d", spacing=[1.7, 0.6, 1.1], pred=pred, gt=gt, classes=[0, 1])


def medpy_values(p, g, spacing, connectivity):
    return dict(
        hd=medpy_or_none(mp.hd, p, g, voxelspacing=spacing, connectivity=connectivity),
        hd95=medpy_or_none(mp.hd95, p, g, voxelspacing=spacing, connectivity=connectivity),
        assd=medpy_or_none(mp.assd, p, g, voxelspacing=spacing, connectivity=connectivity),
        asd=medpy_or_none(mp.asd, p, g, voxelspacing=spacing, connectivity=connectivity),
        asd_reverse=medpy_or_none(mp.asd, g, p, voxelspacing=spacing, connectivity=connectivity),
    )


def monai_values(p, g, spacing):
    yp = torch.from_numpy(p.astype(np.float32))[None, None]
    yg = torch.from_numpy(g.astype(np.float32))[None, None]
    kw = dict(include_background=True, spacing=list(spacing))
    out = dict(
        hd=enc(compute_hausdorff_distance(yp, yg, **kw)[0, 0]),
        hd95=enc(compute_hausdorff_distance(yp, yg, percentile=95, **kw)[0, 0]),
        hd95_directed=enc(compute_hausdorff_distance(yp, yg, percentile=95, directed=True, **kw)[0, 0]),
        assd=enc(compute_average_surface_distance(yp, yg, symmetric=True, **kw)[0, 0]),
        asd=enc(compute_average_surface_distance(yp, yg, symmetric=False, **kw)[0, 0]),
    )
    for tol in NSD_TOLERANCES:
        out["nsd_%g" % tol] = enc(compute_surface_dice(yp, yg, [tol], **kw)[0, 0])
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240611)
    for case in (case_2d(rng), case_3d(rng), case_3d_noisy(rng)):
        pred, gt, spacing = case["pred"], case["gt"], case["spacing"]
        ndim = pred.ndim
        refs = []
        for c in case["classes"]:
            p, g = pred == c, gt == c
            refs.append(
                dict(
                    class_id=c,
                    medpy=dict(
                        dc=enc(mp.dc(p, g)),
                        jc=enc(mp.jc(p, g)),
                        precision=enc(mp.precision(p, g)),
                        recall=enc(mp.recall(p, g)),
                        specificity=enc(mp.specificity(p, g)),
                        ravd=medpy_or_none(mp.ravd, p, g),
                        face=medpy_values(p, g, spacing, 1),
                        full=medpy_values(p, g, spacing, ndim),
                    ),
                    monai=monai_values(p, g, spacing),
                )
            )
        doc = dict(
            name=case["name"],
            generator="tools/make_metric_fixtures.py",
            medpy_version="0.5.2",
            monai_version=__import__("monai").__version__,
            shape=list(pred.shape),
            spacing=spacing,
            nsd_tolerances=NSD_TOLERANCES,
            pred=pred.ravel().tolist(),
            gt=gt.ravel().tolist(),
            classes=refs,
        )
        path = os.path.join(OUT, case["name"] + ".json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
        os.replace(tmp, path)
        print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
