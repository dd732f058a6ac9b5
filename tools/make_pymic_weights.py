#!/usr/bin/env python3
"""Reference fixtures for medseg-nets: PyMIC networks, their weights and outputs.

Builds PyMIC 0.6.2's UNet (2D and 3D), AttentionUNet and UNet++ with tiny
feature sizes, randomises every parameter and BatchNorm buffer, and writes
under crates/medseg-nets/tests/fixtures/:

  <case>.weights.safetensors  the state dict, PyMIC's parameter names
                              (num_batches_tracked included, as int64);
                              values are float16-representable and stored
                              as F16 to halve the size (exact in float32)
  <case>.io.safetensors       `input`, `eval` (eval-mode logits),
                              `eval_deep{i}` (deep-supervision outputs),
                              `train` (train-mode logits, dropout 0) and
                              `after_train.<bn name>.running_{mean,var}`
                              (running statistics after that train pass;
                              2D cases only)
  pymic_reference.json        the cases' configs and parameter counts, plus
                              the parameter counts of PyMIC's default configs

Run with the repository's virtual environment:
    .venv/bin/python tools/make_pymic_weights.py
It pip-installs pymic and torch into the running interpreter when missing.
Safetensors files are written by a small writer below (no extra package).
"""
import json
import os
import struct
import subprocess
import sys


def ensure(pkg, module=None):
    try:
        __import__(module or pkg)
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", pkg])


ensure("torch")
ensure("pymic")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from pymic.net.cnn.unet import UNet  # noqa: E402
from pymic.net.cnn import unet_attention  # noqa: E402
from pymic.net.cnn.unet_pp import UNetpp  # noqa: E402
from pymic.net.cnn.unet2d5 import UNet2D5  # noqa: E402
from pymic.net.cnn.unet_scse import UNet_ScSE  # noqa: E402
from pymic.net.cnn.coplenet2d import COPLENet  # noqa: E402

# PyMIC 0.6.2's DecoderWithAttention reads self.norm_type, which its parent
# never sets; give the class the value the parent uses (batch norm).
unet_attention.DecoderWithAttention.norm_type = "batch_norm"
AttentionUNet = unet_attention.AttentionUNet

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "medseg-nets", "tests", "fixtures")

DTYPES = {np.float16: "F16", np.float32: "F32", np.int64: "I64"}


def save_safetensors(path, tensors, metadata=None):
    header = {}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        if a.dtype == np.float64:
            a = a.astype(np.float32)
        dt = DTYPES[a.dtype.type]
        b = a.tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def half(a):
    """float32 arrays holding float16-representable values, stored as F16."""
    if a.dtype == np.float32:
        h = a.astype(np.float16)
        assert np.array_equal(h.astype(np.float32), a)
        return h
    return a


def n_params(net):
    return int(sum(p.numel() for p in net.parameters()))


def randomise(net, gen):
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) * 0.8 + 0.6)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.2)
            elif t.dim() > 1:
                fan = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=gen) / np.sqrt(fan))
            elif name.endswith("weight"):  # BatchNorm gamma
                t.copy_(1.0 + 0.3 * torch.randn(t.shape, generator=gen))
            else:
                t.copy_(0.3 * torch.randn(t.shape, generator=gen))
        # Round every value to float16 so the fixtures can store them as F16
        # losslessly (half the size); the networks still compute in float32.
        for name, t in net.state_dict().items():
            if t.is_floating_point():
                t.copy_(t.half().float())


def quiet(builder, params):
    # PyMIC prints its parameters; keep stdout readable.
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return builder(dict(params))


CASES = [
    ("unet2d_bilinear", UNet, {"dimension": 2, "in_chns": 1, "class_num": 2,
                               "feature_chns": [2, 4, 4, 8, 8], "dropout": [0.0] * 5, "up_mode": 2},
     [2, 1, 16, 16]),
    ("unet2d_transconv_deep", UNet, {"dimension": 2, "in_chns": 2, "class_num": 3,
                                     "feature_chns": [2, 4, 4, 8, 8], "dropout": [0.0] * 5, "up_mode": 0,
                                     "multiscale_pred": True},
     [2, 2, 16, 16]),
    ("unet2d_nearest", UNet, {"dimension": 2, "in_chns": 1, "class_num": 2,
                              "feature_chns": [2, 4, 4, 8, 8], "dropout": [0.0] * 5, "up_mode": 1},
     [2, 1, 16, 16]),
    ("attention_unet2d", AttentionUNet, {"dimension": 2, "in_chns": 1, "class_num": 2,
                                          "feature_chns": [2, 4, 4, 8, 8], "dropout": [0.0] * 5, "up_mode": 2},
     [2, 1, 16, 16]),
    ("unetpp2d", UNetpp, {"dimension": 2, "in_chns": 1, "class_num": 2,
                          "feature_chns": [2, 4, 4, 8, 8], "dropout": [0.0] * 5},
     [2, 1, 16, 16]),
    ("unet3d_transconv", UNet, {"dimension": 3, "in_chns": 1, "class_num": 2,
                                "feature_chns": [2, 2, 4, 4, 4], "dropout": [0.0] * 5, "up_mode": 0},
     [1, 1, 16, 16, 16]),
    ("attention_unet3d", AttentionUNet, {"dimension": 3, "in_chns": 1, "class_num": 2,
                                          "feature_chns": [2, 2, 4, 4, 4], "dropout": [0.0] * 5, "up_mode": 2},
     [1, 1, 16, 16, 16]),
    ("unet2d5", UNet2D5, {"in_chns": 1, "class_num": 2, "feature_chns": [2, 2, 4, 4, 4],
                          "dropout": [0.0] * 5, "conv_dims": [2, 2, 3, 3, 3], "up_mode": 2},
     [1, 1, 8, 16, 16]),
    ("unet_scse2d", UNet_ScSE, {"dimension": 2, "in_chns": 1, "class_num": 2,
                                "feature_chns": [2, 4, 4, 8, 8], "dropout": [0.0] * 5, "up_mode": 2},
     [2, 1, 16, 16]),
    ("coplenet2d", COPLENet, {"in_chns": 1, "class_num": 2,
                              "feature_chns": [2, 4, 8, 16, 32], "dropout": [0.0] * 5, "up_mode": 2},
     [2, 1, 16, 16]),
]

DEFAULTS = [
    ("UNet", UNet, {"dimension": 2, "in_chns": 1, "class_num": 2}),
    ("UNet3D", UNet, {"dimension": 3, "in_chns": 1, "class_num": 2}),
    ("UNet_transconv", UNet, {"dimension": 2, "in_chns": 1, "class_num": 2, "up_mode": 0}),
    ("AttentionUNet", AttentionUNet, {"dimension": 2, "in_chns": 1, "class_num": 2}),
    ("UNetpp", UNetpp, {"dimension": 2, "in_chns": 1, "class_num": 2}),
    ("UNetpp3D", UNetpp, {"dimension": 3, "in_chns": 1, "class_num": 2}),
    ("UNet2D5", UNet2D5, {"in_chns": 1, "class_num": 2}),
    ("UNet_ScSE", UNet_ScSE, {"dimension": 2, "in_chns": 1, "class_num": 2}),
    ("COPLENet", COPLENet, {"in_chns": 1, "class_num": 2, "feature_chns": [32, 64, 128, 256, 512],
                            "dropout": [0.0, 0.0, 0.2, 0.3, 0.4]}),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    reference = {"pymic_version": __import__("pymic").__version__ if hasattr(__import__("pymic"), "__version__") else "0.6.2",
                 "torch_version": torch.__version__, "cases": {}, "defaults": {}}
    for name, cls, params, shape in CASES:
        net = quiet(cls, params)
        randomise(net, gen)
        x = torch.randn(shape, generator=gen).half().float()
        sd = {k: half(v.detach().cpu().numpy().copy()) for k, v in net.state_dict().items()}
        net.eval()
        with torch.no_grad():
            y = net(x)
        io = {"input": half(x.numpy())}
        if isinstance(y, (list, tuple)):
            io["eval"] = y[0].numpy()
            for i, t in enumerate(y[1:]):
                io[f"eval_deep{i}"] = t.numpy()
        else:
            io["eval"] = y.numpy()
        if len(shape) == 4 or name == "unet2d5":  # other 3D cases: bottleneck too small for batch stats
            net.train()
            with torch.no_grad():
                yt = net(x)
            io["train"] = (yt[0] if isinstance(yt, (list, tuple)) else yt).numpy()
            for k, v in net.state_dict().items():
                if k.endswith("running_mean") or k.endswith("running_var"):
                    io["after_train." + k] = v.detach().numpy().copy()
        save_safetensors(os.path.join(OUT, f"{name}.weights.safetensors"), sd)
        save_safetensors(os.path.join(OUT, f"{name}.io.safetensors"), io)
        reference["cases"][name] = {"config": params, "input_shape": shape, "num_parameters": n_params(net),
                                    "num_tensors": len(sd)}
        print(name, n_params(net), "params", list(io["eval"].shape))
    for name, cls, params in DEFAULTS:
        net = quiet(cls, params)
        reference["defaults"][name] = {"config": params, "num_parameters": n_params(net)}
        print("default", name, n_params(net))
    with open(os.path.join(OUT, "pymic_reference.json"), "w") as f:
        json.dump(reference, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
