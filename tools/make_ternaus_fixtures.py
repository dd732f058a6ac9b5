#!/usr/bin/env python3
"""Reference fixtures for the medseg-nets TernausUNet (crates/medseg-nets/src/ternaus.rs).

TernausNet (Iglovikov & Shvets, "TernausNet: U-Net with VGG11 Encoder
Pre-Trained on ImageNet for Image Segmentation", 2018) after the authors'
code, ternausnet/models.py, class UNet11 (written here from its description,
module names kept so that state-dict names match):
  * `encoder` = torchvision's `vgg11().features` (fixture_utils.vgg_features:
    8 Conv2d 3x3 + ReLU of widths 64, 128, 256, 256, 512, 512, 512, 512, a
    MaxPool2d(2, 2) after each block), aliased by the reference as conv1,
    conv2, conv3s, conv3, conv4s, conv4, conv5s, conv5;
  * `center`, `dec5`..`dec2`: DecoderBlock = Sequential(ConvRelu(in, mid),
    ConvTranspose2d(mid, out, 3, stride 2, padding 1, output_padding 1),
    ReLU), module names `block.0.conv`, `block.1`;
  * `dec1` = ConvRelu(num_filters * 3, num_filters), `final` = 1x1 Conv2d.
`UNet11` below is that class with its channel formulas (num_filters based,
fixed VGG11 widths); `TernausRef` is the same network with the concatenated
widths computed from configurable encoder widths (what the Rust network
does); at the defaults both have the same state-dict names and shapes, which
is checked. Differences from the reference, mirrored in the Rust network: no
ImageNet weights, `in_chns` inputs instead of 3, `class_num` outputs instead
of 1. The reference's state dict lists the encoder twice (`encoder.0.weight`
and its alias `conv1.weight`, ...); the fixture keeps the `encoder.*` names.

Writes under crates/medseg-nets/tests/fixtures/:
  ternaus_tiny.weights.safetensors  randomised state dict of a tiny network
                                    (float16-representable values as F16)
  ternaus_tiny.io.safetensors       `eval` logits for the tiny input
  ternaus_reference.json            configs, input shape, parameter counts
The input is `pattern(shape)` (fixture_utils; exact in float16).

Run with the repository's virtual environment:
    .venv/bin/python tools/make_ternaus_fixtures.py
"""
import os

from fixture_utils import (OUT, VGG11_FEATURES, n_params, pattern, randomise, save_json, save_safetensors,
                           state_dict_f16, vgg_features)

import torch
import torch.nn as nn

VGG11_CONVS = (1, 1, 2, 2, 2)
VGG_WIDTHS = (64, 128, 256, 512, 512)
ALIASES = ("conv1.", "conv2.", "conv3s.", "conv3.", "conv4s.", "conv4.", "conv5s.", "conv5.", "relu.")


def conv3x3(in_, out):
    return nn.Conv2d(in_, out, 3, padding=1)


class ConvRelu(nn.Module):
    def __init__(self, in_, out):
        super().__init__()
        self.conv = conv3x3(in_, out)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.activation(self.conv(x))


class DecoderBlock(nn.Module):
    def __init__(self, in_channels, middle_channels, out_channels):
        super().__init__()
        self.block = nn.Sequential(
            ConvRelu(in_channels, middle_channels),
            nn.ConvTranspose2d(middle_channels, out_channels, kernel_size=3, stride=2, padding=1,
                               output_padding=1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.block(x)


class UNet11(nn.Module):
    """The reference class (in_chns and class_num substituted for 3 and 1)."""

    def __init__(self, in_chns=3, class_num=1, num_filters=32):
        super().__init__()
        self.pool = nn.MaxPool2d(2, 2)
        self.encoder = vgg_features(in_chns, VGG_WIDTHS, VGG11_CONVS, batch_norm=False)
        self.relu = self.encoder[1]
        self.conv1 = self.encoder[0]
        self.conv2 = self.encoder[3]
        self.conv3s = self.encoder[6]
        self.conv3 = self.encoder[8]
        self.conv4s = self.encoder[11]
        self.conv4 = self.encoder[13]
        self.conv5s = self.encoder[16]
        self.conv5 = self.encoder[18]
        self.center = DecoderBlock(num_filters * 8 * 2, num_filters * 8 * 2, num_filters * 8)
        self.dec5 = DecoderBlock(num_filters * (16 + 8), num_filters * 8 * 2, num_filters * 8)
        self.dec4 = DecoderBlock(num_filters * (16 + 8), num_filters * 8 * 2, num_filters * 4)
        self.dec3 = DecoderBlock(num_filters * (8 + 4), num_filters * 4 * 2, num_filters * 2)
        self.dec2 = DecoderBlock(num_filters * (4 + 2), num_filters * 2 * 2, num_filters)
        self.dec1 = ConvRelu(num_filters * (2 + 1), num_filters)
        self.final = nn.Conv2d(num_filters, class_num, kernel_size=1)

    def forward(self, x):
        conv1 = self.relu(self.conv1(x))
        conv2 = self.relu(self.conv2(self.pool(conv1)))
        conv3s = self.relu(self.conv3s(self.pool(conv2)))
        conv3 = self.relu(self.conv3(conv3s))
        conv4s = self.relu(self.conv4s(self.pool(conv3)))
        conv4 = self.relu(self.conv4(conv4s))
        conv5s = self.relu(self.conv5s(self.pool(conv4)))
        conv5 = self.relu(self.conv5(conv5s))
        center = self.center(self.pool(conv5))
        dec5 = self.dec5(torch.cat([center, conv5], 1))
        dec4 = self.dec4(torch.cat([dec5, conv4], 1))
        dec3 = self.dec3(torch.cat([dec4, conv3], 1))
        dec2 = self.dec2(torch.cat([dec3, conv2], 1))
        dec1 = self.dec1(torch.cat([dec2, conv1], 1))
        return self.final(dec1)


class TernausRef(UNet11):
    """UNet11 with the concatenated widths taken from `widths`."""

    def __init__(self, in_chns, class_num, widths=VGG_WIDTHS, num_filters=32):
        nn.Module.__init__(self)
        nf = num_filters
        f = list(widths)
        self.pool = nn.MaxPool2d(2, 2)
        self.encoder = vgg_features(in_chns, f, VGG11_CONVS, batch_norm=False)
        self.relu = self.encoder[1]
        for name, i in zip(("conv1", "conv2", "conv3s", "conv3", "conv4s", "conv4", "conv5s", "conv5"),
                           (0, 3, 6, 8, 11, 13, 16, 18)):
            setattr(self, name, self.encoder[i])
        self.center = DecoderBlock(f[4], nf * 16, nf * 8)
        self.dec5 = DecoderBlock(nf * 8 + f[4], nf * 16, nf * 8)
        self.dec4 = DecoderBlock(nf * 8 + f[3], nf * 16, nf * 4)
        self.dec3 = DecoderBlock(nf * 4 + f[2], nf * 8, nf * 2)
        self.dec2 = DecoderBlock(nf * 2 + f[1], nf * 4, nf)
        self.dec1 = ConvRelu(nf + f[0], nf)
        self.final = nn.Conv2d(nf, class_num, kernel_size=1)


def state_dict_unaliased(net):
    """The state dict without the reference's encoder aliases."""
    return {k: v for k, v in state_dict_f16(net).items() if not k.startswith(ALIASES)}


TINY = {"in_chns": 2, "class_num": 2, "feature_chns": [4, 8, 8, 16, 16], "num_filters": 3}
TINY_SHAPE = [1, 2, 64, 64]
DEFAULT = {"in_chns": 3, "class_num": 1}


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1801)

    reference = UNet11()
    enc = sum(p.numel() for n, p in reference.named_parameters() if n.startswith("encoder."))
    assert enc == VGG11_FEATURES, (enc, VGG11_FEATURES)
    mine = TernausRef(3, 1)
    shapes = lambda net: {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.startswith(ALIASES)}
    assert shapes(reference) == shapes(mine)
    assert n_params(reference) == n_params(mine)
    # the aliases are the encoder's convolutions
    assert reference.conv5.weight is reference.encoder[18].weight

    net = TernausRef(TINY["in_chns"], TINY["class_num"], TINY["feature_chns"], TINY["num_filters"])
    randomise(net, gen)
    x = torch.from_numpy(pattern(TINY_SHAPE))
    sd = state_dict_unaliased(net)
    net.eval()
    with torch.no_grad():
        y = net(x)
    io = {"eval": y.numpy()}
    save_safetensors(os.path.join(OUT, "ternaus_tiny.weights.safetensors"), sd)
    save_safetensors(os.path.join(OUT, "ternaus_tiny.io.safetensors"), io)
    ref = {
        "torch_version": torch.__version__,
        "reference": "Iglovikov & Shvets 2018, ternausnet/models.py UNet11 (encoder = torchvision "
                     "vgg11().features layout; in_chns inputs, class_num outputs)",
        "tiny": {"config": TINY, "input_shape": TINY_SHAPE, "input": "((i * 7919) mod 1021 - 510) / 256",
                 "num_parameters": n_params(net), "num_tensors": len(sd)},
        "default": {"config": DEFAULT, "num_parameters": n_params(reference),
                    "num_parameters_vgg11_encoder": enc},
    }
    save_json(os.path.join(OUT, "ternaus_reference.json"), ref)
    print("tiny", n_params(net), "params, output", list(y.shape), "max |eval|", float(y.abs().max()))
    print("default", n_params(reference), "params (encoder", enc, ")")


# The zoo configuration (configs/zoo/ternausunet.toml) for tools/torch_zoo_bench.py.
ZOO = {"TernausUNet": lambda in_chns, class_num: TernausRef(in_chns, class_num)}


if __name__ == "__main__":
    main()
