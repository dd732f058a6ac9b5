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
Safetensors files are written by the small writer in tools/fixture_utils.py
(no extra package).
"""
import os

from fixture_utils import (OUT, ensure, half, n_params, randomise, running_stats, save_json,
                           save_safetensors, state_dict_f16)

ensure("pymic")

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


# ---------------------------------------------------------------------------
# Reference architectures without a PyMIC version, transcribed in PyTorch from
# their public reference implementations (module names kept) with
# configurable feature sizes and class count:
#   R2U_Net / R2AttU_Net: github.com/LeeJunHyun/Image_Segmentation (network.py)
#   ResUnet: github.com/rishikksh20/ResUnet (core/res_unet.py)
#   UNet_3Plus: github.com/ZJUGiveLab/UNet-Version (models/UNet_3Plus.py)
# ---------------------------------------------------------------------------
import torch.nn as nn  # noqa: E402


class _UpConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.up = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(cin, cout, 3, 1, 1, bias=True),
                                nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.up(x)


class _Recurrent(nn.Module):
    def __init__(self, c, t=2):
        super().__init__()
        self.t = t
        self.conv = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=True), nn.BatchNorm2d(c), nn.ReLU(inplace=True))

    def forward(self, x):
        for i in range(self.t):
            if i == 0:
                x1 = self.conv(x)
            x1 = self.conv(x + x1)
        return x1


class _RRCNN(nn.Module):
    def __init__(self, cin, cout, t=2):
        super().__init__()
        self.RCNN = nn.Sequential(_Recurrent(cout, t), _Recurrent(cout, t))
        self.Conv_1x1 = nn.Conv2d(cin, cout, 1, 1, 0)

    def forward(self, x):
        x = self.Conv_1x1(x)
        return x + self.RCNN(x)


class _Att(nn.Module):
    def __init__(self, fg, fl, fint):
        super().__init__()
        self.W_g = nn.Sequential(nn.Conv2d(fg, fint, 1, 1, 0, bias=True), nn.BatchNorm2d(fint))
        self.W_x = nn.Sequential(nn.Conv2d(fl, fint, 1, 1, 0, bias=True), nn.BatchNorm2d(fint))
        self.psi = nn.Sequential(nn.Conv2d(fint, 1, 1, 1, 0, bias=True), nn.BatchNorm2d(1), nn.Sigmoid())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, g, x):
        return x * self.psi(self.relu(self.W_g(g) + self.W_x(x)))


class R2UNetRef(nn.Module):
    def __init__(self, params, attention=False):
        super().__init__()
        f, cin, k = params["feature_chns"], params["in_chns"], params["class_num"]
        self.Maxpool = nn.MaxPool2d(2, 2)
        self.RRCNN1 = _RRCNN(cin, f[0])
        self.RRCNN2 = _RRCNN(f[0], f[1])
        self.RRCNN3 = _RRCNN(f[1], f[2])
        self.RRCNN4 = _RRCNN(f[2], f[3])
        self.RRCNN5 = _RRCNN(f[3], f[4])
        self.attention = attention
        for lvl, (hi, lo) in zip([5, 4, 3, 2], [(f[4], f[3]), (f[3], f[2]), (f[2], f[1]), (f[1], f[0])]):
            setattr(self, f"Up{lvl}", _UpConv(hi, lo))
            if attention:
                setattr(self, f"Att{lvl}", _Att(lo, lo, lo // 2))
            setattr(self, f"Up_RRCNN{lvl}", _RRCNN(2 * lo, lo))
        self.Conv_1x1 = nn.Conv2d(f[0], k, 1, 1, 0)

    def forward(self, x):
        xs = [self.RRCNN1(x)]
        for i in range(2, 6):
            xs.append(getattr(self, f"RRCNN{i}")(self.Maxpool(xs[-1])))
        d = xs[4]
        for lvl in [5, 4, 3, 2]:
            d = getattr(self, f"Up{lvl}")(d)
            skip = xs[lvl - 2]
            if self.attention:
                skip = getattr(self, f"Att{lvl}")(g=d, x=skip)
            d = getattr(self, f"Up_RRCNN{lvl}")(torch.cat((skip, d), dim=1))
        return self.Conv_1x1(d)


def R2AttUNetRef(params):
    return R2UNetRef(params, attention=True)


class _ResidualConv(nn.Module):
    def __init__(self, cin, cout, stride, padding):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 3, stride=stride, padding=padding),
            nn.BatchNorm2d(cout), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.conv_skip = nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.conv_block(x) + self.conv_skip(x)


class _Upsample(nn.Module):
    def __init__(self, cin, cout, kernel, stride):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(cin, cout, kernel_size=kernel, stride=stride)

    def forward(self, x):
        return self.upsample(x)


class ResUNetRef(nn.Module):
    def __init__(self, params):
        super().__init__()
        f, cin, k = params["feature_chns"], params["in_chns"], params["class_num"]
        self.input_layer = nn.Sequential(nn.Conv2d(cin, f[0], 3, padding=1), nn.BatchNorm2d(f[0]), nn.ReLU(),
                                         nn.Conv2d(f[0], f[0], 3, padding=1))
        self.input_skip = nn.Sequential(nn.Conv2d(cin, f[0], 3, padding=1))
        self.residual_conv_1 = _ResidualConv(f[0], f[1], 2, 1)
        self.residual_conv_2 = _ResidualConv(f[1], f[2], 2, 1)
        self.bridge = _ResidualConv(f[2], f[3], 2, 1)
        self.upsample_1 = _Upsample(f[3], f[3], 2, 2)
        self.up_residual_conv1 = _ResidualConv(f[3] + f[2], f[2], 1, 1)
        self.upsample_2 = _Upsample(f[2], f[2], 2, 2)
        self.up_residual_conv2 = _ResidualConv(f[2] + f[1], f[1], 1, 1)
        self.upsample_3 = _Upsample(f[1], f[1], 2, 2)
        self.up_residual_conv3 = _ResidualConv(f[1] + f[0], f[0], 1, 1)
        self.output_layer = nn.Sequential(nn.Conv2d(f[0], k, 1, 1))  # logits (the reference adds a sigmoid)

    def forward(self, x):
        x1 = self.input_layer(x) + self.input_skip(x)
        x2 = self.residual_conv_1(x1)
        x3 = self.residual_conv_2(x2)
        x4 = self.bridge(x3)
        x6 = self.up_residual_conv1(torch.cat([self.upsample_1(x4), x3], dim=1))
        x8 = self.up_residual_conv2(torch.cat([self.upsample_2(x6), x2], dim=1))
        x10 = self.up_residual_conv3(torch.cat([self.upsample_3(x8), x1], dim=1))
        return self.output_layer(x10)



class UNet3PlusRef(nn.Module):
    """UNet 3+ after github.com/ZJUGiveLab/UNet-Version (models/UNet_3Plus.py),
    5 levels, module names kept."""

    def __init__(self, params):
        super().__init__()
        f, cin, k = params["feature_chns"], params["in_chns"], params["class_num"]
        cat, upc = f[0], f[0] * 5

        def block(a, b):
            m = nn.Module()
            m.conv1 = nn.Sequential(nn.Conv2d(a, b, 3, 1, 1), nn.BatchNorm2d(b), nn.ReLU(inplace=True))
            m.conv2 = nn.Sequential(nn.Conv2d(b, b, 3, 1, 1), nn.BatchNorm2d(b), nn.ReLU(inplace=True))
            return m

        chans = [cin] + list(f)
        for i in range(5):
            setattr(self, f"conv{i + 1}", block(chans[i], chans[i + 1]))
        for d in [4, 3, 2, 1]:
            for i in range(1, 6):
                if i < d:
                    name, c = f"h{i}_PT_hd{d}", f[i - 1]
                elif i == d:
                    name, c = f"h{d}_Cat_hd{d}", f[i - 1]
                else:
                    name, c = f"hd{i}_UT_hd{d}", (f[4] if i == 5 else upc)
                setattr(self, name + "_conv", nn.Conv2d(c, cat, 3, padding=1))
                setattr(self, name + "_bn", nn.BatchNorm2d(cat))
            setattr(self, f"conv{d}d_1", nn.Conv2d(upc, upc, 3, padding=1))
            setattr(self, f"bn{d}d_1", nn.BatchNorm2d(upc))
        self.outconv1 = nn.Conv2d(upc, k, 3, padding=1)

    def forward(self, x):
        h = []
        for i in range(5):
            inp = x if i == 0 else nn.functional.max_pool2d(h[-1], 2, 2)
            b = getattr(self, f"conv{i + 1}")
            h.append(b.conv2(b.conv1(inp)))
        hd = {5: h[4]}
        relu = nn.functional.relu
        for d in [4, 3, 2, 1]:
            parts = []
            for i in range(1, 6):
                if i < d:
                    s = 2 ** (d - i)
                    t = nn.functional.max_pool2d(h[i - 1], s, s, ceil_mode=True)
                    name = f"h{i}_PT_hd{d}"
                elif i == d:
                    t, name = h[i - 1], f"h{d}_Cat_hd{d}"
                else:
                    t = nn.functional.interpolate(hd[i], scale_factor=2 ** (i - d), mode="bilinear")
                    name = f"hd{i}_UT_hd{d}"
                parts.append(relu(getattr(self, name + "_bn")(getattr(self, name + "_conv")(t))))
            hd[d] = relu(getattr(self, f"bn{d}d_1")(getattr(self, f"conv{d}d_1")(torch.cat(parts, 1))))
        return self.outconv1(hd[1])


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
    ("attention_unet2d", AttentionUNet, {"dimension": 2, "in_chns": 1, "class_num": 2,
                                          "feature_chns": [2, 4, 4, 8, 8], "dropout": [0.0] * 5, "up_mode": 2},
     [2, 1, 16, 16]),
    ("unetpp2d", UNetpp, {"dimension": 2, "in_chns": 1, "class_num": 2,
                          "feature_chns": [2, 4, 4, 8, 8], "dropout": [0.0] * 5},
     [2, 1, 16, 16]),
    ("unet3d_transconv", UNet, {"dimension": 3, "in_chns": 1, "class_num": 1,
                                "feature_chns": [2, 2, 4, 4, 4], "dropout": [0.0] * 5, "up_mode": 0},
     [1, 1, 16, 16, 16]),
    ("attention_unet3d", AttentionUNet, {"dimension": 3, "in_chns": 1, "class_num": 1,
                                          "feature_chns": [2, 2, 4, 4, 4], "dropout": [0.0] * 5, "up_mode": 2},
     [1, 1, 16, 16, 16]),
    ("unet2d5", UNet2D5, {"in_chns": 1, "class_num": 1, "feature_chns": [2, 2, 4, 4, 4],
                          "dropout": [0.0] * 5, "conv_dims": [2, 2, 3, 3, 3], "up_mode": 2},
     [1, 1, 8, 16, 16]),
    ("unet_scse2d", UNet_ScSE, {"dimension": 2, "in_chns": 1, "class_num": 2,
                                "feature_chns": [2, 4, 4, 8, 8], "dropout": [0.0] * 5, "up_mode": 2},
     [2, 1, 16, 16]),
    ("coplenet2d", COPLENet, {"in_chns": 1, "class_num": 2,
                              "feature_chns": [2, 4, 8, 16, 32], "dropout": [0.0] * 5, "up_mode": 2},
     [2, 1, 16, 16]),
    ("r2unet2d", R2UNetRef, {"in_chns": 1, "class_num": 2, "feature_chns": [2, 4, 4, 8, 8]},
     [2, 1, 16, 16]),
    ("r2attunet2d", R2AttUNetRef, {"in_chns": 1, "class_num": 2, "feature_chns": [2, 4, 4, 8, 8]},
     [2, 1, 16, 16]),
    ("resunet2d", ResUNetRef, {"in_chns": 1, "class_num": 2, "feature_chns": [2, 4, 8, 8]},
     [2, 1, 16, 16]),
    ("unet3plus2d", UNet3PlusRef, {"in_chns": 1, "class_num": 2, "feature_chns": [2, 4, 4, 8, 8]},
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
    ("R2UNet", R2UNetRef, {"in_chns": 3, "class_num": 1, "feature_chns": [64, 128, 256, 512, 1024]}),
    ("R2AttentionUNet", R2AttUNetRef, {"in_chns": 3, "class_num": 1, "feature_chns": [64, 128, 256, 512, 1024]}),
    ("ResUNet", ResUNetRef, {"in_chns": 3, "class_num": 1, "feature_chns": [64, 128, 256, 512]}),
    ("UNet3Plus", UNet3PlusRef, {"in_chns": 3, "class_num": 1, "feature_chns": [64, 128, 256, 512, 1024]}),
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
        sd = state_dict_f16(net)
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
            io.update(running_stats(net))
        save_safetensors(os.path.join(OUT, f"{name}.weights.safetensors"), sd)
        save_safetensors(os.path.join(OUT, f"{name}.io.safetensors"), io)
        reference["cases"][name] = {"config": params, "input_shape": shape, "num_parameters": n_params(net),
                                    "num_tensors": len(sd)}
        print(name, n_params(net), "params", list(io["eval"].shape))
    for name, cls, params in DEFAULTS:
        net = quiet(cls, params)
        reference["defaults"][name] = {"config": params, "num_parameters": n_params(net)}
        print("default", name, n_params(net))
    save_json(os.path.join(OUT, "pymic_reference.json"), reference)


# The zoo configurations (configs/zoo/*.toml of the UNet family) for
# tools/torch_zoo_bench.py: built from the network table itself.
def _table(t, **extra):
    keys = ("in_chns", "class_num", "feature_chns", "dropout")
    return {**{k: t[k] for k in keys if k in t}, **extra}


ZOO_TABLE = {
    "UNet2D": lambda t: quiet(UNet, _table(t, dimension=2, up_mode=2)),
    "AttentionUNet2D": lambda t: quiet(AttentionUNet, _table(t, dimension=2, up_mode=2)),
    "UNet++": lambda t: quiet(UNetpp, _table(t, dimension=2)),
    "UNet_ScSE": lambda t: quiet(UNet_ScSE, _table(t, dimension=2, up_mode=2)),
    "COPLENet": lambda t: quiet(COPLENet, _table(t, up_mode=2)),
    "R2UNet": lambda t: R2UNetRef(_table(t)),
    "R2AttentionUNet": lambda t: R2AttUNetRef(_table(t)),
    "ResUNet": lambda t: ResUNetRef(_table(t)),
    "UNet3Plus": lambda t: UNet3PlusRef(_table(t)),
}


if __name__ == "__main__":
    main()
