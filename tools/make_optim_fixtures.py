"""Reference trajectories of PyTorch's optimisers and LR schedulers.

Writes crates/medseg-learners/tests/fixtures/optim.json, which the Rust tests
of medseg-learners compare against. Run with the project's venv:
    .venv/bin/python tools/make_optim_fixtures.py
"""
import json
import math
import pathlib

import torch

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/medseg-learners/tests/fixtures/optim.json"

a = torch.tensor([0.5, 1.0, 2.0, -0.3, 0.1], dtype=torch.float64)
b = torch.tensor([0.1, -0.2, 0.3, 0.4, -0.5], dtype=torch.float64)
p0 = [1.0, -2.0, 0.5, 3.0, -1.5]


def loss_fn(p):
    # smooth, non-separable enough to exercise every state
    return (a * p * p).sum() + (b * p).sum() + 0.1 * (p[0] * p[1]) + 0.05 * torch.sin(p).sum()


cases = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.0, weight_decay=0.0),
    "sgd_momentum_wd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-2),
    "sgd_nesterov": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda ps: torch.optim.Adam(ps, lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),
    "adam_wd": lambda ps: torch.optim.Adam(ps, lr=0.1, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
}
out = {"p0": p0, "a": a.tolist(), "b": b.tolist(), "steps": 8, "optimizers": {}}
for name, make in cases.items():
    p = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    opt = make([p])
    traj = []
    for _ in range(8):
        opt.zero_grad()
        loss_fn(p).backward()
        opt.step()
        traj.append(p.detach().tolist())
    out["optimizers"][name] = traj

# LR schedulers, lr after each of 30 steps, base lr 0.1
def sched(make, n=30):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1)
    s = make(opt)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
    return lrs

out["schedules"] = {
    "step": sched(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5)),
    "multistep": sched(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[5, 12, 20], gamma=0.3)),
    "cosine": sched(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=30, eta_min=0.001)),
    "poly": sched(lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=30, power=0.9)),
}
OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(json.dumps(out, indent=1))
print("wrote", OUT)
