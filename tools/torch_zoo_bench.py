"""PyTorch side of `cargo xtask experiment zoo`: times one network of
configs/zoo/ in PyTorch (NCHW), the same measurement as medseg's
`bench unet-child` (train step: forward, the config's Dice + CE, backward,
the config's optimiser; inference: eval forward), batch and size from the
spec the xtask wrote.

The network is the reference a fixture script builds: every
tools/make_*_fixtures.py (and make_pymic_weights.py) may define
  ZOO = {"<registry name>": lambda in_chns, class_num: nn.Module}
  ZOO_TABLE = {"<registry name>": lambda network_table: nn.Module}
(at module level, all other work under `if __name__ == "__main__":`), built
in the configuration of configs/zoo/<name>.toml. Weights are PyTorch's own
initialisation: times do not depend on the values. The loss and optimiser
are those of tools/torch_unet_bench.py.

Prints REFERENCE <script: first docstring line> (or NO_REFERENCE <why>),
then the protocol lines PARAMS, TIME <name> <ms>, VMHWM_KB.

    python tools/torch_zoo_bench.py --spec SPEC.json
"""
import argparse
import importlib
import io
import contextlib
import json
import statistics
import sys
import time
import tomllib
from pathlib import Path

import torch
import torch.nn.functional as F

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

from torch_unet_bench import make_loss, make_opt, vmhwm_kb  # noqa: E402


def find_model(net):
    """(model, reference) for the network table `net`, or (None, why)."""
    name = net["name"]
    scripts = sorted(TOOLS.glob("make_*_fixtures.py")) + [TOOLS / "make_pymic_weights.py"]
    for path in scripts:
        text = path.read_text()
        if "ZOO" not in text or f'"{name}"' not in text:
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            mod = importlib.import_module(path.stem)
        doc = (mod.__doc__ or "").strip().splitlines()
        ref = f"{path.name}: {doc[0] if doc else ''}".strip()
        table = getattr(mod, "ZOO_TABLE", {})
        if name in table:
            with contextlib.redirect_stdout(io.StringIO()):
                return table[name](net), ref
        zoo = getattr(mod, "ZOO", {})
        if name in zoo:
            with contextlib.redirect_stdout(io.StringIO()):
                return zoo[name](net["in_chns"], net["class_num"]), ref
    return None, f"no tools/ script defines ZOO[{name!r}]"


def logits(y):
    """The logits of a forward's result (the first of a tuple or list, the
    `out` of a dict)."""
    while isinstance(y, (list, tuple)):
        y = y[0]
    if isinstance(y, dict):
        y = y["out"]
    return y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    a = ap.parse_args()
    spec = json.load(open(a.spec))
    with open(spec["config"], "rb") as f:
        training = tomllib.load(f)["training"]
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    model, ref = find_model(spec["network"])
    if model is None:
        print(f"NO_REFERENCE {ref}")
        return
    print(f"REFERENCE {ref}")
    shape = spec["shape"]
    k = spec["network"]["class_num"]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen)
    labels = torch.randint(0, k, [shape[0]] + shape[2:], generator=gen)
    onehot = F.one_hot(labels, k).movedim(-1, 1).float().contiguous()
    print(f"PARAMS {sum(p.numel() for p in model.parameters() if p.requires_grad)}")
    loss_fn = make_loss(training["loss"])
    warm, iters = spec["warmup"], spec["iters"]
    if spec["mode"] == "train":
        model.train()
        opt = make_opt([p for p in model.parameters() if p.requires_grad], training)
        t = []
        for i in range(warm + iters):
            t0 = time.perf_counter()
            loss = loss_fn(logits(model(x)), onehot)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
            e = (time.perf_counter() - t0) * 1e3
            if i >= warm:
                t.append(e)
        print(f"TIME train: full step {statistics.median(t):.3f}")
    else:
        model.eval()
        with torch.no_grad():
            t = []
            for i in range(warm + iters):
                t0 = time.perf_counter()
                y = logits(model(x))
                e = (time.perf_counter() - t0) * 1e3
                assert list(y.shape) == [shape[0], k] + shape[2:], list(y.shape)
                del y
                if i >= warm:
                    t.append(e)
        print(f"TIME infer: forward (eval) {statistics.median(t):.3f}")
    print(f"VMHWM_KB {vmhwm_kb()}")


if __name__ == "__main__":
    main()
