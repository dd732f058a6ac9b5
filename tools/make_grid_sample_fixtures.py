"""Reference fixtures for medseg-ops' affine_grid / grid_sample, computed with PyTorch.

Writes crates/medseg-ops/tests/fixtures/grid_sample.json: a list of cases, each
with `align_corners`, the input `x` (`x_shape`), the affine `theta`
(`theta_shape`), `size` (the output size given to affine_grid), the
affine grid `grid_affine`, the grid actually sampled `grid` (`grid_shape`: the
affine grid with a few points moved out of range, or a random grid), a weight
`w` of the output's shape, the output `y` of F.grid_sample(x, grid,
mode="bilinear", padding_mode="zeros"), and the gradients of sum(y * w) with
respect to x (`dx`) and grid (`dgrid`); cases built from theta alone
(`from_theta`) also hold the gradient with respect to theta (`dtheta`). All
arrays are flattened row-major float32 values.

    python3 -m venv .venv && .venv/bin/python tools/make_grid_sample_fixtures.py

(fixture_utils pip-installs torch and numpy into the venv when they are missing.)
"""
import json
import os

from fixture_utils import torch

import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates", "medseg-ops", "tests", "fixtures")


def r(t):
    return [float(f"{v:.8g}") for v in t.detach().reshape(-1).tolist()]


def near_identity(n, s, gen):
    eye = torch.eye(s, s + 1).expand(n, s, s + 1)
    return eye + 0.15 * torch.randn(n, s, s + 1, generator=gen)


def case(x, theta, size, ac, gen, moves=(), grid=None):
    """One case: grid = affine_grid(theta) with the points in `moves`
    ((index tuple, coordinates)) replaced, or `grid` when given."""
    theta = theta.clone().requires_grad_(True)
    ga = F.affine_grid(theta, size, align_corners=ac)
    from_theta = grid is None and not moves
    if grid is None:
        g = ga.detach().clone()
        for idx, v in moves:
            g[idx] = torch.tensor(v)
    else:
        g = grid.clone()
    g = g.requires_grad_(True)
    xg = x.clone().requires_grad_(True)
    y = F.grid_sample(xg, g, mode="bilinear", padding_mode="zeros", align_corners=ac)
    w = torch.randn(y.shape, generator=gen)
    (y * w).sum().backward()
    d = dict(
        align_corners=ac,
        x_shape=list(x.shape), x=r(x),
        theta_shape=list(theta.shape), theta=r(theta), size=list(size),
        grid_affine=r(ga),
        grid_shape=list(g.shape), grid=r(g),
        y_shape=list(y.shape), y=r(y), w=r(w),
        dx=r(xg.grad), dgrid=r(g.grad),
        from_theta=from_theta,
    )
    if from_theta:
        # the same loss through affine_grid: gradient with respect to theta
        theta2 = theta.detach().clone().requires_grad_(True)
        y2 = F.grid_sample(x, F.affine_grid(theta2, size, align_corners=ac), mode="bilinear",
                           padding_mode="zeros", align_corners=ac)
        (y2 * w).sum().backward()
        d["dtheta"] = r(theta2.grad)
    return d


def main():
    gen = torch.Generator().manual_seed(20)
    os.makedirs(OUT, exist_ok=True)
    cases = []
    # 2D: N=2, C=2, 5x6 input, 4x3 output grid
    x = torch.randn(2, 2, 5, 6, generator=gen)
    size = (2, 2, 4, 3)
    for ac in (False, True):
        theta = near_identity(2, 2, gen)
        cases.append(case(x, theta, size, ac, gen))
        moves = [((0, 0, 0), (1.3, -1.2)), ((1, 3, 2), (-1.05, 0.4)), ((0, 2, 1), (2.5, 0.1)),
                 ((1, 1, 0), (0.97, 1.02)), ((1, 0, 1), (-1.1, -1.07))]
        cases.append(case(x, theta, size, ac, gen, moves=moves))
        grid = torch.rand(2, 4, 3, 2, generator=gen) * 2.6 - 1.3
        cases.append(case(x, theta, size, ac, gen, grid=grid))
    # 3D: N=1, C=2, 3x4x5 input, 2x3x4 output grid
    x3 = torch.randn(1, 2, 3, 4, 5, generator=gen)
    size3 = (1, 2, 2, 3, 4)
    for ac in (False, True):
        theta = near_identity(1, 3, gen)
        cases.append(case(x3, theta, size3, ac, gen))
        grid = torch.rand(1, 2, 3, 4, 3, generator=gen) * 2.6 - 1.3
        cases.append(case(x3, theta, size3, ac, gen, grid=grid))
    path = os.path.join(OUT, "grid_sample.json")
    with open(path + ".tmp", "w") as fh:  # compact: about 60 KB
        json.dump(cases, fh, separators=(",", ":"))
        fh.write("\n")
    os.replace(path + ".tmp", path)
    print("wrote", path, f"({len(cases)} cases, torch {torch.__version__})")


if __name__ == "__main__":
    main()
