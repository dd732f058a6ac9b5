"""Reference fixtures for medseg-transforms' screen-photo transforms.

Writes crates/medseg-transforms/tests/fixtures/photo_colour.json,
photo_perspective.json and photo_jpeg.json:

- colour: torchvision's functional `adjust_brightness`, `adjust_contrast`,
  `adjust_saturation` and `adjust_hue` with fixed factors on a small random
  RGB picture and a grey one (float32 tensors in [0, 1]);
- perspective: torchvision's `_get_perspective_coeffs(startpoints,
  endpoints)` and `F.perspective` (bilinear and nearest, fill none / 0.3)
  with fixed corner points on small pictures;
- jpeg: Pillow's JPEG encode then decode at quality 10, 50 and 90 of small
  8-bit grey and RGB pictures (default settings: 4:2:0 chroma for RGB), with
  the quantisation tables Pillow wrote (in natural, row-major order).

All arrays are flattened row-major. Run with the repository's venv:

    /work/main/.venv/bin/pip install torchvision pillow   # once
    /work/main/.venv/bin/python tools/make_photo_fixtures.py
"""
import io
import json
import os

import numpy as np
import PIL
import torch
import torchvision
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms.functional import _get_perspective_coeffs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates", "medseg-transforms", "tests", "fixtures")

# The standard luminance table (ITU T.81 table K.1), natural order.
LUMA_50 = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
]


def flat(t):
    return [float(f"{v:.8g}") for v in np.asarray(t, dtype=np.float64).reshape(-1).tolist()]


def colour_fixtures():
    gen = torch.Generator().manual_seed(20)
    rgb = torch.rand(3, 6, 7, generator=gen)
    # a few saturated and grey pixels, where hue conversions have edge cases
    rgb[:, 0, 0] = torch.tensor([1.0, 0.0, 0.0])
    rgb[:, 0, 1] = torch.tensor([0.4, 0.4, 0.4])
    rgb[:, 0, 2] = torch.tensor([0.0, 0.7, 0.7])
    grey = torch.rand(1, 6, 7, generator=gen)
    cases = []
    ops = [
        ("brightness", F.adjust_brightness, [0.6, 1.4]),
        ("contrast", F.adjust_contrast, [0.5, 1.7]),
        ("saturation", F.adjust_saturation, [0.3, 1.8]),
        ("hue", F.adjust_hue, [-0.3, 0.15, 0.5]),
    ]
    for name, fn, factors in ops:
        for f in factors:
            for kind, img in (("rgb", rgb), ("grey", grey)):
                cases.append(dict(op=name, factor=f, kind=kind, shape=list(img.shape),
                                  input=flat(img), output=flat(fn(img, f))))
    return dict(torchvision=torchvision.__version__, cases=cases)


def perspective_fixtures():
    gen = torch.Generator().manual_seed(21)
    cases = []
    for shape, end in (
        ((1, 12, 16), [[2, 1], [14, 0], [13, 10], [1, 11]]),
        ((3, 10, 9), [[0, 2], [7, 0], [8, 9], [2, 7]]),
    ):
        c, h, w = shape
        yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                                torch.arange(w, dtype=torch.float32), indexing="ij")
        img = torch.stack([torch.sin(0.5 * xx + 0.3 * k) * torch.cos(0.4 * yy) + 0.1 * k
                           for k in range(c)]) + 0.2 * torch.rand(shape, generator=gen)
        start = [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]
        coeffs = _get_perspective_coeffs(start, end)
        # the same system in float64, without torchvision's rounding to float32
        a = np.zeros((8, 8))
        b = np.zeros(8)
        for i, (p1, p2) in enumerate(zip(end, start)):
            a[2 * i] = [p1[0], p1[1], 1, 0, 0, 0, -p2[0] * p1[0], -p2[0] * p1[1]]
            a[2 * i + 1] = [0, 0, 0, p1[0], p1[1], 1, -p2[1] * p1[0], -p2[1] * p1[1]]
            b[2 * i: 2 * i + 2] = p2
        coeffs64 = np.linalg.solve(a, b)
        outs = []
        for interp, mode in (("linear", F.InterpolationMode.BILINEAR),
                             ("nearest", F.InterpolationMode.NEAREST)):
            for fill in (None, 0.3):
                out = F.perspective(img, start, end, interpolation=mode,
                                    fill=None if fill is None else [fill])
                outs.append(dict(interp=interp, fill=0.0 if fill is None else fill,
                                 output=flat(out)))
        cases.append(dict(shape=list(shape), startpoints=start, endpoints=end,
                          coeffs_f32=coeffs, coeffs_f64=flat(coeffs64),
                          input=flat(img), outputs=outs))
    return dict(torchvision=torchvision.__version__, cases=cases)


def picture(h, w, c, seed):
    """A smooth 8-bit picture with a bright disk, an edge and a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for k in range(c):
        v = 60 + 90 * np.sin(xx / (3.0 + k)) * np.cos(yy / 5.0) + 40 * k
        v += 80 * (((yy - h / 2) ** 2 + (xx - w / 3) ** 2) < (min(h, w) / 4) ** 2)
        v += 50 * (xx > 2 * w / 3)
        v += rng.normal(0, 6, size=(h, w))
        chans.append(v)
    return np.clip(np.rint(np.stack(chans)), 0, 255).astype(np.uint8)


def jpeg_fixtures():
    cases = []
    for kind, (h, w), seed in (("grey", (24, 32), 1), ("grey", (21, 27), 2),
                               ("rgb", (24, 32), 3), ("rgb", (19, 21), 4)):
        c = 3 if kind == "rgb" else 1
        arr = picture(h, w, c, seed)
        img = Image.fromarray(arr[0] if c == 1 else np.moveaxis(arr, 0, -1),
                              mode="L" if c == 1 else "RGB")
        for q in (10, 50, 90):
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=q)
            buf.seek(0)
            dec = Image.open(buf)
            tables = {}
            for k, t in dec.quantization.items():
                t = list(t)
                # Pillow reports the tables in natural order; check on the
                # quality-50 luminance table, which is the standard one
                if q == 50 and k == 0 and t != LUMA_50:
                    raise SystemExit("unexpected order of Pillow's quantisation table")
                tables[str(k)] = t
            out = np.asarray(dec.convert("L" if c == 1 else "RGB"), dtype=np.uint8)
            out = out[None] if c == 1 else np.moveaxis(out, -1, 0)
            cases.append(dict(kind=kind, quality=q, shape=[c, h, w],
                              input=arr.reshape(-1).tolist(), output=out.reshape(-1).tolist(),
                              tables=tables,
                              bytes=len(buf.getvalue())))
    return dict(pillow=PIL.__version__, cases=cases)


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in (("photo_colour.json", colour_fixtures()),
                       ("photo_perspective.json", perspective_fixtures()),
                       ("photo_jpeg.json", jpeg_fixtures())):
        path = os.path.join(OUT, name)
        with open(path, "w") as f:
            json.dump(data, f, separators=(",", ":"))
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
