#!/usr/bin/env python3
"""Reference fixtures for medseg-nets' MultiResUNet.

A PyTorch transcription of the authors' reference implementation of
MultiResUNet (Ibtehaz & Rahman, Neural Networks 121, 2020;
github.com/nibtehaz/MultiResUNet, pytorch/MultiResUNet.py and
pytorch/MultiResUNet3D.py), written with the reference's module and
parameter names so that state dicts load by name:

  Conv2d_batchnorm / Conv3d_batchnorm  `conv1` (padding "same") then
                                       `batchnorm`, then ReLU or nothing
  Multiresblock   W = alpha * U; branch widths int(W*0.167), int(W*0.333),
                  int(W*0.5); `shortcut` (1x1 conv-BN), `conv_3x3`,
                  `conv_5x5`, `conv_7x7` (chained 3x3 conv-BN-ReLU),
                  `batch_norm1` on the concatenation, + shortcut,
                  `batch_norm2`, ReLU
  Respath         `shortcuts.i` (1x1 conv-BN), `convs.i` (3x3 conv-BN-ReLU),
                  then `bns.i` + ReLU, + shortcut, the SAME `bns.i` + ReLU
                  again (so its running statistics move twice per pass)
  MultiResUnet    `multiresblock1..L` with `pool1..L-1` (max pool 2) and
                  `respath1..L-1` (lengths L-1 .. 1), `upsample{L+1..2L-1}`
                  (transposed conv 2, stride 2, out channels U of the level)
                  concatenated before the skip, `multiresblock{L+1..2L-1}`,
                  `conv_final` (1x1 conv-BN, no activation)

Generalised only where the reference hard-codes: the level widths U
(reference 32 * [1, 2, 4, 8, 16]; any number L >= 2 of levels), the output
channels (`class_num`; the reference gives `num_classes + 1`) and alpha,
which here reaches the blocks too (the reference computes its channel
counts with its `alpha` but builds every block with the default 1.67, so
only alpha = 1.67 works there; with it both agree).

Writes under crates/medseg-nets/tests/fixtures/:
  multiresunet<case>.weights.safetensors  state dict (F16-representable)
  multiresunet<case>.io.safetensors       input, eval, train,
                                          after_train.<bn>.running_{mean,var}
                                          (and for 2d_alpha input_odd/eval_odd:
                                          13x11, up-sampled maps zero-padded
                                          at their end to the skip's size)
  multiresunet_reference.json             configs, input shapes, parameter
                                          counts (cases and defaults)

Run:  .venv/bin/python tools/make_multiresunet_fixtures.py
"""
import os

from fixture_utils import OUT, half, n_params, randomise, running_stats, save_json, save_safetensors, state_dict_f16

import torch
import torch.nn as nn
import torch.nn.functional as F


def layers(nd):
    if nd == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.ConvTranspose2d, nn.MaxPool2d
    return nn.Conv3d, nn.BatchNorm3d, nn.ConvTranspose3d, nn.MaxPool3d


def widths(u, alpha):
    """Branch widths of a MultiRes block of nominal width u (reference rounding)."""
    w = u * alpha
    return int(w * 0.167), int(w * 0.333), int(w * 0.5)


class ConvBN(nn.Module):
    """Conv{n}d_batchnorm: conv (padding 'same') then BN, then ReLU or nothing."""

    def __init__(self, nd, cin, cout, k, relu):
        super().__init__()
        conv, bn, _, _ = layers(nd)
        self.relu = relu
        self.conv1 = conv(cin, cout, k, stride=1, padding="same")
        self.batchnorm = bn(cout)

    def forward(self, x):
        y = self.batchnorm(self.conv1(x))
        return F.relu(y) if self.relu else y


class Multiresblock(nn.Module):
    def __init__(self, nd, cin, u, alpha):
        super().__init__()
        _, bn, _, _ = layers(nd)
        a, b, c = widths(u, alpha)
        out = a + b + c
        self.shortcut = ConvBN(nd, cin, out, 1, False)
        self.conv_3x3 = ConvBN(nd, cin, a, 3, True)
        self.conv_5x5 = ConvBN(nd, a, b, 3, True)
        self.conv_7x7 = ConvBN(nd, b, c, 3, True)
        self.batch_norm1 = bn(out)
        self.batch_norm2 = bn(out)

    def forward(self, x):
        s = self.shortcut(x)
        a = self.conv_3x3(x)
        b = self.conv_5x5(a)
        c = self.conv_7x7(b)
        y = self.batch_norm1(torch.cat([a, b, c], dim=1)) + s
        return F.relu(self.batch_norm2(y))


class Respath(nn.Module):
    def __init__(self, nd, c, length):
        super().__init__()
        _, bn, _, _ = layers(nd)
        self.shortcuts = nn.ModuleList([ConvBN(nd, c, c, 1, False) for _ in range(length)])
        self.convs = nn.ModuleList([ConvBN(nd, c, c, 3, True) for _ in range(length)])
        self.bns = nn.ModuleList([bn(c) for _ in range(length)])

    def forward(self, x):
        for sc, conv, bn in zip(self.shortcuts, self.convs, self.bns):
            s = sc(x)
            x = F.relu(bn(conv(x)))
            x = F.relu(bn(x + s))
        return x


class MultiResUnet(nn.Module):
    def __init__(self, in_chns, class_num, feature_chns=(32, 64, 128, 256, 512), alpha=1.67, dimension=2):
        super().__init__()
        nd = dimension
        _, _, convt, pool = layers(nd)
        ft = list(feature_chns)
        levels = len(ft)
        self.levels = levels
        outs = [sum(widths(u, alpha)) for u in ft]
        cin = in_chns
        for i in range(levels):
            setattr(self, f"multiresblock{i + 1}", Multiresblock(nd, cin, ft[i], alpha))
            if i < levels - 1:
                setattr(self, f"pool{i + 1}", pool(2))
                setattr(self, f"respath{i + 1}", Respath(nd, outs[i], levels - 1 - i))
            cin = outs[i]
        for k in range(levels - 1):
            lev = levels - 2 - k
            name = levels + 1 + k
            setattr(self, f"upsample{name}", convt(cin, ft[lev], 2, stride=2))
            setattr(self, f"multiresblock{name}", Multiresblock(nd, ft[lev] + outs[lev], ft[lev], alpha))
            cin = outs[lev]
        self.conv_final = ConvBN(nd, cin, class_num, 1, False)

    def forward(self, x, pad_to_skip=False):
        L = self.levels
        skips = []
        for i in range(L):
            m = getattr(self, f"multiresblock{i + 1}")(x)
            if i < L - 1:
                x = getattr(self, f"pool{i + 1}")(m)
                skips.append(getattr(self, f"respath{i + 1}")(m))
            else:
                x = m
        for k in range(L - 1):
            lev = L - 2 - k
            name = L + 1 + k
            up = getattr(self, f"upsample{name}")(x)
            if pad_to_skip:
                # medseg's extension for sizes not divisible by 2^(L-1):
                # zero-pad the up-sampled map at its end to the skip's size
                pads = []
                for a, b in zip(reversed(up.shape[2:]), reversed(skips[lev].shape[2:])):
                    pads += [0, b - a]
                up = F.pad(up, pads)
            x = getattr(self, f"multiresblock{name}")(torch.cat([up, skips[lev]], dim=1))
        return self.conv_final(x)


# name, config (medseg keys), input shape
CASES = [
    ("multiresunet2d", {"dimension": 2, "in_chns": 1, "class_num": 2,
                        "feature_chns": [4, 6, 8, 10, 12], "alpha": 1.67}, [2, 1, 16, 16]),
    ("multiresunet2d_alpha", {"dimension": 2, "in_chns": 2, "class_num": 3,
                              "feature_chns": [3, 5, 7], "alpha": 2.5}, [2, 2, 12, 8]),
    ("multiresunet3d", {"dimension": 3, "in_chns": 1, "class_num": 2,
                        "feature_chns": [4, 6, 8], "alpha": 1.67}, [2, 1, 4, 8, 8]),
]

# The reference's own configuration: 32 * [1, 2, 4, 8, 16], alpha 1.67;
# MultiResUnet(input_channels=1, num_classes=1) has num_classes + 1 = 2 outputs.
DEFAULTS = [
    ("MultiResUNet2D", {"dimension": 2, "in_chns": 1, "class_num": 2}),
    ("MultiResUNet2D_rgb", {"dimension": 2, "in_chns": 3, "class_num": 2}),
    ("MultiResUNet3D", {"dimension": 3, "in_chns": 1, "class_num": 2}),
]


def build(cfg):
    return MultiResUnet(cfg["in_chns"], cfg["class_num"], cfg.get("feature_chns", (32, 64, 128, 256, 512)),
                        cfg.get("alpha", 1.67), cfg.get("dimension", 2))


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(20200101)
    reference = {"reference": "github.com/nibtehaz/MultiResUNet pytorch/MultiResUNet.py, MultiResUNet3D.py",
                 "torch_version": torch.__version__, "cases": {}, "defaults": {}}
    for name, cfg, shape in CASES:
        net = build(cfg)
        randomise(net, gen)
        x = torch.randn(shape, generator=gen).half().float()
        sd = state_dict_f16(net)
        net.eval()
        with torch.no_grad():
            y = net(x)
        io = {"input": half(x.numpy()), "eval": y.numpy()}
        if name == "multiresunet2d_alpha":
            # odd sizes (not divisible by 4), eval mode with the initial
            # running statistics: up-sampled maps zero-padded at their end
            xo = torch.randn([1, shape[1], 13, 11], generator=gen).half().float()
            with torch.no_grad():
                io["eval_odd"] = net(xo, pad_to_skip=True).numpy()
            io["input_odd"] = half(xo.numpy())
        net.train()
        with torch.no_grad():
            yt = net(x)
        io["train"] = yt.numpy()
        io.update(running_stats(net))
        save_safetensors(os.path.join(OUT, f"{name}.weights.safetensors"), sd)
        save_safetensors(os.path.join(OUT, f"{name}.io.safetensors"), io)
        reference["cases"][name] = {"config": cfg, "input_shape": shape, "num_parameters": n_params(net),
                                    "num_tensors": len(sd)}
        print(name, n_params(net), "params", len(sd), "tensors", list(y.shape))
    for name, cfg in DEFAULTS:
        net = build(cfg)
        reference["defaults"][name] = {"config": cfg, "num_parameters": n_params(net),
                                       "num_tensors": len(net.state_dict())}
        print("default", name, n_params(net))
    save_json(os.path.join(OUT, "multiresunet_reference.json"), reference, trailing_newline=True)


# The zoo configuration (configs/zoo/multiresunet.toml) for tools/torch_zoo_bench.py.
ZOO = {"MultiResUNet": lambda in_chns, class_num: build({"in_chns": in_chns, "class_num": class_num})}


if __name__ == "__main__":
    main()
