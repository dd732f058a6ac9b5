#!/usr/bin/env python3
"""Time MONAI dictionary transforms equivalent to benches/benches/transforms.rs.

Prints one JSON object: {"case": seconds_per_sample, ..., "_info": {...}}.
Cases (same names as the criterion bench), on a 1x128x128x128 image + label:
  crop96   RandSpatialCropd 96^3
  flip     RandFlipd over the three axes, prob 1
  rotate   RandRotated, up to 15 degrees about each axis, prob 1, keep_size
  elastic  Rand3DElasticd, prob 1 (MONAI smooths a dense random field: sigma 5..7,
           magnitude 2..4; medseg interpolates a coarse control grid instead)
  pipeline crop96 + flip + rotate + elastic
Images bilinear, labels nearest, as in medseg. Run by `cargo xtask bench transforms`.
"""
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
import monai
from monai.transforms import Compose, RandSpatialCropd, RandFlipd, RandRotated, Rand3DElasticd


def volume(n=128):
    c = (n - 1) / 2.0
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) - c,) * 3, indexing="ij")
    img = ((np.sin(z * 0.1) + np.cos(y * 0.07)) * 100.0 + x).astype(np.float32)
    r = np.sqrt(z * z + y * y + x * x)
    lab = np.where(r < 20, 2, np.where(r < 40, 1, 0)).astype(np.float32)
    return {"image": torch.from_numpy(img[None]), "label": torch.from_numpy(lab[None])}


def cases():
    keys = ["image", "label"]
    a = math.radians(15)
    crop = RandSpatialCropd(keys, roi_size=(96, 96, 96), random_size=False)
    flip = RandFlipd(keys, prob=1.0, spatial_axis=[0, 1, 2])
    rot = RandRotated(keys, range_x=a, range_y=a, range_z=a, prob=1.0, keep_size=True,
                      mode=("bilinear", "nearest"), padding_mode="zeros")
    ela = Rand3DElasticd(keys, sigma_range=(5, 7), magnitude_range=(2, 4), prob=1.0,
                         mode=("bilinear", "nearest"), padding_mode="zeros")
    return {
        "crop96": Compose([crop]),
        "flip": Compose([flip]),
        "rotate": Compose([rot]),
        "elastic": Compose([ela]),
        "pipeline": Compose([crop, flip, rot, ela]),
    }


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    torch.set_num_threads(os.cpu_count() or 1)
    monai.utils.set_determinism(seed=0)
    data = volume()
    out = {}
    for name, t in cases().items():
        t(dict(data))  # warm-up
        times = []
        for _ in range(reps):
            d = dict(data)
            t0 = time.perf_counter()
            t(d)
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    out["_info"] = {"monai": monai.__version__, "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "reps": reps}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
