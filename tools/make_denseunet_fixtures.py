#!/usr/bin/env python3
"""Reference fixtures for medseg-nets' DenseUNet (crates/medseg-nets/src/denseunet.rs).

The network is the 2D DenseUNet of H-DenseUNet (Li et al., IEEE TMI 2018).
Below is a PyTorch transcription of its PyTorch port by the same group,
`DenseUnet_2d` in `models/network.py` with `UnetBlock_` / `UnetBlock` from
`models/layers.py` of the TCSM repository (xmengli/TCSM), which in turn
transcribes the Keras `DenseUNet` of xmengli/H-DenseUNet (`denseunet.py`).
The encoder `rn` is torchvision's DenseNet `features` module; it is written
out here (torchvision is not needed) with torchvision's module names, and
made configurable (growth rate, block config, init features, bn_size) as
torchvision's `DenseNet` is; the decoder channels are configurable too. The
reference's `SaveFeatures` forward hooks on `rn[2]`, `rn[4]`, `rn[6]`,
`rn[8]` (stem ReLU, dense blocks 1-3) are kept.

Writes under crates/medseg-nets/tests/fixtures/:

  denseunet_tiny.weights.safetensors  the state dict of a tiny configuration
                                      (float16-representable values stored
                                      as F16, num_batches_tracked as I64)
  denseunet_tiny.io.safetensors       `input`, `eval` (eval-mode logits),
                                      `train` (train-mode logits, dropout
                                      off) and `after_train.<bn>.running_*`
  denseunet_reference.json            the tiny config, input shape, parameter
                                      counts, and the parameter count of the
                                      default (DenseNet-161) configuration

Run with the repository's virtual environment:
    .venv/bin/python tools/make_denseunet_fixtures.py
"""
import os
from collections import OrderedDict

from fixture_utils import OUT, half, n_params, randomise, running_stats, save_json, save_safetensors, state_dict_f16

import torch
import torch.nn as nn
import torch.nn.functional as F


# --- torchvision DenseNet `features`, transcribed ----------------------------

class DenseLayer(nn.Module):
    def __init__(self, cin, growth_rate, bn_size, drop_rate):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth_rate, kernel_size=1, stride=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, stride=1, padding=1,
                               bias=False)
        self.drop_rate = float(drop_rate)

    def forward(self, inputs):
        x = torch.cat(inputs, 1)
        y = self.conv1(self.relu1(self.norm1(x)))
        y = self.conv2(self.relu2(self.norm2(y)))
        if self.drop_rate > 0:
            y = F.dropout(y, p=self.drop_rate, training=self.training)
        return y


class DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers, cin, bn_size, growth_rate, drop_rate):
        super().__init__()
        for i in range(num_layers):
            self.add_module("denselayer%d" % (i + 1),
                            DenseLayer(cin + i * growth_rate, growth_rate, bn_size, drop_rate))

    def forward(self, x):
        feats = [x]
        for _, layer in self.items():
            feats.append(layer(feats))
        return torch.cat(feats, 1)


class Transition(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(cin, cout, kernel_size=1, stride=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


def densenet_features(in_chns, growth_rate, block_config, num_init_features, bn_size, drop_rate):
    """torchvision.models.DenseNet(...).features (in_chns input channels)."""
    f = nn.Sequential(OrderedDict([
        ("conv0", nn.Conv2d(in_chns, num_init_features, kernel_size=7, stride=2, padding=3, bias=False)),
        ("norm0", nn.BatchNorm2d(num_init_features)),
        ("relu0", nn.ReLU(inplace=True)),
        ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
    ]))
    c = num_init_features
    for i, n in enumerate(block_config):
        f.add_module("denseblock%d" % (i + 1), DenseBlock(n, c, bn_size, growth_rate, drop_rate))
        c += n * growth_rate
        if i != len(block_config) - 1:
            f.add_module("transition%d" % (i + 1), Transition(c, c // 2))
            c = c // 2
    f.add_module("norm5", nn.BatchNorm2d(c))
    return f


# --- TCSM models/layers.py --------------------------------------------------

class SaveFeatures:
    features = None

    def __init__(self, m):
        self.hook = m.register_forward_hook(self.hook_fn)

    def hook_fn(self, module, input, output):
        self.features = output

    def remove(self):
        self.hook.remove()


class UnetBlock_(nn.Module):
    """Up-sample x2 (bilinear, aligned corners), add the 1x1-projected skip, 3x3 conv-BN-ReLU."""

    def __init__(self, up_in1, up_in2, up_out):
        super().__init__()
        self.x_conv = nn.Conv2d(up_in1, up_out, kernel_size=3, padding=1)
        self.x_conv_ = nn.Conv2d(up_in2, up_in1, kernel_size=1, padding=0)
        self.bn = nn.BatchNorm2d(up_out)

    def forward(self, up_p, x_p):
        up_p = F.interpolate(up_p, scale_factor=2, mode="bilinear", align_corners=True)
        x_p = self.x_conv_(x_p)
        return F.relu(self.bn(self.x_conv(torch.add(up_p, x_p))))


class UnetBlock(nn.Module):
    """Up-sample x2 (bilinear, aligned corners), add the skip, 3x3 conv-BN-ReLU."""

    def __init__(self, up_in1, up_out):
        super().__init__()
        self.x_conv = nn.Conv2d(up_in1, up_out, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(up_out)

    def forward(self, up_p, x_p):
        up_p = F.interpolate(up_p, scale_factor=2, mode="bilinear", align_corners=True)
        return F.relu(self.bn(self.x_conv(torch.add(up_p, x_p))))


# --- TCSM models/network.py DenseUnet_2d (configurable) ---------------------

class DenseUnet_2d(nn.Module):
    def __init__(self, in_chns=3, class_num=2, growth_rate=48, block_config=(6, 12, 36, 24),
                 num_init_features=96, bn_size=4, decoder_chns=(768, 384, 96, 96, 64), drop_rate=0.0,
                 dropout=0.3):
        super().__init__()
        self.rn = densenet_features(in_chns, growth_rate, block_config, num_init_features, bn_size, drop_rate)
        self.sfs = [SaveFeatures(self.rn[2])]
        self.sfs.append(SaveFeatures(self.rn[4]))
        self.sfs.append(SaveFeatures(self.rn[6]))
        self.sfs.append(SaveFeatures(self.rn[8]))
        c3 = self.rn[8].denselayer1.norm1.num_features + len(self.rn[8]) * growth_rate
        c4 = self.rn.norm5.num_features
        d = decoder_chns
        self.up1 = UnetBlock_(c4, c3, d[0])
        self.up2 = UnetBlock(d[0], d[1])
        self.up3 = UnetBlock(d[1], d[2])
        self.up4 = UnetBlock(d[2], d[3])
        self.bn1 = nn.BatchNorm2d(d[4])
        self.conv1 = nn.Conv2d(d[3], d[4], kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(d[4], class_num, kernel_size=1, padding=0)
        self.p = dropout

    def forward(self, x, dropout=True):
        x = F.relu(self.rn(x))
        x = self.up1(x, self.sfs[3].features)
        x = self.up2(x, self.sfs[2].features)
        x = self.up3(x, self.sfs[1].features)
        x = self.up4(x, self.sfs[0].features)
        x_fea = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        x_fea = self.conv1(x_fea)
        if dropout:
            x_fea = F.dropout2d(x_fea, p=self.p)
        x_fea = F.relu(self.bn1(x_fea))
        return self.conv2(x_fea)


TINY = {"in_chns": 2, "class_num": 2, "growth_rate": 2, "block_config": [1, 2, 2, 1],
        "num_init_features": 4, "bn_size": 2, "decoder_chns": [7, 6, 4, 4, 3]}
TINY_SHAPE = [2, 2, 64, 32]
DEFAULT = {"in_chns": 3, "class_num": 2}


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(4321)

    # Default configuration: DenseNet-161 encoder. torchvision documents
    # 28,681,000 parameters for densenet161, of which the classifier
    # (2208 x 1000 + 1000) is not part of `features`.
    full = DenseUnet_2d(**DEFAULT)
    enc = n_params(full.rn)
    assert enc == 28_681_000 - (2208 * 1000 + 1000), enc
    x = torch.zeros(1, 3, 64, 64)
    full.eval()
    with torch.no_grad():
        assert list(full(x, dropout=False).shape) == [1, 2, 64, 64]

    net = DenseUnet_2d(**TINY, dropout=0.0)
    randomise(net, gen)
    sd = state_dict_f16(net)
    x = torch.randn(TINY_SHAPE, generator=gen).half().float()
    io = {"input": half(x.numpy())}
    net.eval()
    with torch.no_grad():
        io["eval"] = net(x, dropout=False).numpy()
    net.train()
    with torch.no_grad():
        io["train"] = net(x, dropout=False).numpy()
    io.update(running_stats(net))
    save_safetensors(os.path.join(OUT, "denseunet_tiny.weights.safetensors"), sd)
    save_safetensors(os.path.join(OUT, "denseunet_tiny.io.safetensors"), io)
    reference = {
        "reference": "xmengli/TCSM models/network.py DenseUnet_2d (PyTorch port of H-DenseUNet's 2D DenseUNet)",
        "torch_version": torch.__version__,
        "tiny": {"config": TINY, "input_shape": TINY_SHAPE, "num_parameters": n_params(net),
                 "num_tensors": len(sd)},
        "default": {"config": DEFAULT, "num_parameters": n_params(full), "encoder_parameters": enc},
    }
    save_json(os.path.join(OUT, "denseunet_reference.json"), reference)
    print("tiny", n_params(net), "params", list(io["eval"].shape))
    print("default", n_params(full), "params (encoder", enc, ")")


# The zoo configuration (configs/zoo/denseunet.toml) for tools/torch_zoo_bench.py.
ZOO = {"DenseUNet": lambda in_chns, class_num: DenseUnet_2d(in_chns=in_chns, class_num=class_num)}


if __name__ == "__main__":
    main()
