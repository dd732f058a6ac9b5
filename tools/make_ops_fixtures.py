"""Reference fixtures for medseg-ops (pooling and up-sampling), computed with PyTorch.

Writes crates/medseg-ops/tests/fixtures/{pool3d,upsample,adaptive_pool}.json. Each case holds the
input `x`, a weight `w` of the output's shape, the output `y` and the gradient
`dx` of sum(y * w) with respect to x (all flattened, row-major, float32 values).

    .venv/bin/python tools/make_ops_fixtures.py
"""
import json
import os
import subprocess
import sys

try:
    import torch
except ImportError:  # install into the venv this script runs in
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "torch"])
    import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates", "medseg-ops", "tests", "fixtures")


def r(t):
    return [float(f"{v:.7g}") for v in t.detach().reshape(-1).tolist()]


def case(name, x, f, **meta):
    x = x.clone().requires_grad_(True)
    y = f(x)
    w = torch.randn_like(y)
    (y * w).sum().backward()
    d = dict(op=name, x_shape=list(x.shape), y_shape=list(y.shape), x=r(x), w=r(w), y=r(y), dx=r(x.grad))
    d.update(meta)
    return d


def main():
    torch.manual_seed(7)
    os.makedirs(OUT, exist_ok=True)
    pool = []
    # distinct values so that the max is unique in every window
    for shape, k, s in [((1, 2, 5, 6, 7), (2, 2, 2), (2, 2, 2)), ((2, 1, 4, 5, 6), (3, 2, 3), (1, 2, 2)), ((1, 2, 3, 7, 5), (1, 3, 2), (1, 2, 1))]:
        n = 1
        for v in shape:
            n *= v
        x = (torch.randperm(n).float() * 0.01 - n * 0.005).reshape(shape)
        pool.append(case("max_pool3d", x, lambda t, k=k, s=s: F.max_pool3d(t, k, s), kernel=list(k), stride=list(s)))
        pool.append(case("avg_pool3d", torch.randn(shape), lambda t, k=k, s=s: F.avg_pool3d(t, k, s), kernel=list(k), stride=list(s)))
    with open(os.path.join(OUT, "pool3d.json"), "w") as fh:
        json.dump(pool, fh)

    up = []
    for shape, size in [((1, 1, 3, 4, 5), (5, 6, 7)), ((1, 1, 4, 5, 3), (2, 3, 7)), ((2, 1, 2, 3, 2), (3, 5, 4))]:
        for ac in (False, True):
            up.append(case("trilinear", torch.randn(shape), lambda t, size=size, ac=ac: F.interpolate(t, size=size, mode="trilinear", align_corners=ac), size=list(size), align_corners=ac))
        up.append(case("nearest3d", torch.randn(shape), lambda t, size=size: F.interpolate(t, size=size, mode="nearest"), size=list(size)))
    for shape, size in [((1, 2, 5, 7), (9, 11)), ((1, 2, 6, 4), (3, 10)), ((1, 1, 3, 3), (1, 5)), ((1, 2, 4, 4), (8, 8))]:
        for ac in (False, True):
            up.append(case("bilinear", torch.randn(shape), lambda t, size=size, ac=ac: F.interpolate(t, size=size, mode="bilinear", align_corners=ac), size=list(size), align_corners=ac))
        up.append(case("nearest2d", torch.randn(shape), lambda t, size=size: F.interpolate(t, size=size, mode="nearest"), size=list(size)))
    with open(os.path.join(OUT, "upsample.json"), "w") as fh:
        json.dump(up, fh)
    adaptive()
    print("wrote", OUT)


def adaptive():
    """Adaptive average pooling, 2D and 3D, to sizes that divide the input,
    that do not (overlapping bins) and that exceed it (repeated inputs)."""
    torch.manual_seed(11)
    cases = []
    for shape, size in [((2, 3, 7, 9), (3, 4)), ((1, 2, 6, 6), (1, 1)), ((1, 1, 5, 3), (7, 6)), ((1, 2, 12, 10), (6, 3))]:
        cases.append(case("adaptive_avg_pool2d", torch.randn(shape), lambda t, size=size: F.adaptive_avg_pool2d(t, size), size=list(size)))
    for shape, size in [((1, 2, 5, 6, 7), (2, 3, 4)), ((2, 1, 3, 4, 4), (3, 1, 6))]:
        cases.append(case("adaptive_avg_pool3d", torch.randn(shape), lambda t, size=size: F.adaptive_avg_pool3d(t, size), size=list(size)))
    with open(os.path.join(OUT, "adaptive_pool.json"), "w") as fh:
        json.dump(cases, fh)


if __name__ == "__main__":
    main()
