#!/usr/bin/env python3
"""Reference fixtures for EANet (crates/medseg-nets/src/eanet.rs and the
EANet flavour of crates/medseg-nets/src/backbones/dilated_resnet.rs).

A PyTorch transcription of JMedSeg's Jittor model/EANet.py
(github.com/THU-CVlab/JMedSeg):
  * `NormLayer`: GroupNorm with 1, 4, 8, 16 or 32 groups for fewer than 64,
    at least 64, 128, 256 or 512 channels (parameters under `.norm.`);
  * its own copy of the dilated Bottleneck ResNet (`resnet101`, output
    stride 16 only): NormLayer in place of BatchNorm, the three-convolution
    stem followed by `bn1` and ReLU, 2x2 max pooling (`argmax_pool(x, 2,
    2)`), the first Bottleneck of every stage undilated (`layer4`: 1, 4, 8);
  * `EANet`: `fc0` (ConvBNReLU 3x3 2048 -> 512), `head` (`External_attention`:
    1x1 conv, Conv1d to 64 memory units, softmax over positions, division by
    the sum over units, Conv1d back, 1x1 conv + NormLayer, residual, ReLU),
    `fc1` (DeconvBNReLU 3x3 stride 2 to 256, dropout 0.1), `fc2` (2x2
    transposed convolution, stride 2) and a bilinear resize to the input
    (Jittor's `nn.resize`: no aligned corners).
The classifier `fc2` is named `out_conv` here (as in medseg, so that the
federated SegViz head pattern `*out_conv*` finds it). Input channels are
configurable (JMedSeg hard-codes 3) and so are, for the tiny fixture, the
backbone's width and block counts. `Cluster_attention`, unused by EANet, is
left out.

Writes under crates/medseg-nets/tests/fixtures/:
  eanet_tiny.weights.safetensors   randomised state dict (F16-exact values)
  eanet_tiny.io.safetensors        `eval`, `train` (dropout 0) and
                                   `eval_odd` logits
  eanet_reference.json             configs, input shapes, parameter counts
                                   (tiny; JMedSeg's default: resnet101, 3
                                   inputs, 2 classes: 53,835,714, the count
                                   of EANet.py itself run in Jittor 1.3.11;
                                   the comment in EANet.py says 53,242,818,
                                   which lacks exactly the attention head and
                                   the NormLayers of fc0 and fc1)
`ZOO` (importable without side effects) builds configs/zoo/eanet.toml.

Run from the repository root: .venv/bin/python tools/make_eanet_fixtures.py
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F


class NormLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        g = 32 if c >= 512 else 16 if c >= 256 else 8 if c >= 128 else 4 if c >= 64 else 1
        self.norm = nn.GroupNorm(g, c)

    def forward(self, x):
        return self.norm(x)


class Bottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = NormLayer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, dilation=dilation, padding=dilation,
                               bias=False)
        self.bn2 = NormLayer(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = NormLayer(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


BLOCKS = {"resnet50": [3, 4, 6], "resnet101": [3, 4, 23]}


class ResNet(nn.Module):
    def __init__(self, layers, in_chns=3, width=64):
        super().__init__()
        w = width
        self.inplanes = 2 * w
        strides, dilations = [1, 2, 2, 1], [1, 1, 1, 2]  # output stride 16
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_chns, w, 3, stride=2, padding=1, bias=False), NormLayer(w), nn.ReLU(),
            nn.Conv2d(w, w, 3, stride=1, padding=1, bias=False), NormLayer(w), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=1, padding=1, bias=False))
        self.bn1 = NormLayer(2 * w)
        self.layer1 = self._make_layer(w, layers[0], strides[0], dilations[0])
        self.layer2 = self._make_layer(2 * w, layers[1], strides[1], dilations[1])
        self.layer3 = self._make_layer(4 * w, layers[2], strides[2], dilations[2])
        self.layer4 = self._make_MG_unit(8 * w, [1, 2, 4], strides[3], dilations[3])

    def _downsample(self, planes, stride):
        if stride != 1 or self.inplanes != planes * 4:
            return nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                                 NormLayer(planes * 4))
        return None

    def _make_layer(self, planes, blocks, stride, dilation):
        layers = [Bottleneck(self.inplanes, planes, stride, 1, self._downsample(planes, stride))]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _make_MG_unit(self, planes, blocks, stride, dilation):
        layers = [Bottleneck(self.inplanes, planes, stride, 1, self._downsample(planes, stride))]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes, 1, blocks[i] * dilation) for i in range(1, len(blocks))]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 2, 2)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class ConvBNReLU(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = NormLayer(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class DeconvBNReLU(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=False)
        self.bn = NormLayer(cout)

    def forward(self, x):
        return F.relu(self.bn(self.deconv(x)))


class ExternalAttention(nn.Module):
    def __init__(self, c, k=64):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 1)
        self.k = k
        self.linear_0 = nn.Conv1d(c, k, 1, bias=False)
        self.linear_1 = nn.Conv1d(k, c, 1, bias=False)
        self.conv2 = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), NormLayer(c))

    def forward(self, x):
        idn = x
        x = self.conv1(x)
        b, c, h, w = x.shape
        attn = self.linear_0(x.view(b, c, h * w))
        attn = F.softmax(attn, dim=-1)
        attn = attn / (1e-9 + attn.sum(dim=1, keepdim=True))
        x = self.linear_1(attn).view(b, c, h, w)
        return F.relu(self.conv2(x) + idn)


class EANet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        w = cfg.get("backbone_width", 64)
        blocks = cfg.get("backbone_blocks", BLOCKS[cfg.get("backbone", "resnet101")])
        self.backbone = ResNet(blocks, cfg["in_chns"], w)
        self.fc0 = ConvBNReLU(32 * w, 8 * w)
        self.head = ExternalAttention(8 * w, cfg.get("memory_units", 64))
        self.fc1 = nn.Sequential(DeconvBNReLU(8 * w, 4 * w), nn.Dropout(cfg.get("dropout", 0.1)))
        self.out_conv = nn.ConvTranspose2d(4 * w, cfg["class_num"], 2, stride=2)

    def forward(self, x):
        y = self.out_conv(self.fc1(self.head(self.fc0(self.backbone(x)))))
        return F.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=False)


# configs/zoo/eanet.toml: JMedSeg's EANet on the resnet50 depth (see the
# toml's comment), 1 input channel, 4 classes.
ZOO = {"EANet": lambda in_chns, class_num: EANet({"in_chns": in_chns, "class_num": class_num,
                                                   "backbone": "resnet50"})}

# width 8 puts 64, 128 and 256 channels in the tiny net, so that NormLayer's
# 4, 8 and 16 groups are all exercised
TINY = {"in_chns": 2, "class_num": 3, "backbone": "resnet50", "output_stride": 16, "backbone_width": 8,
        "backbone_blocks": [1, 2, 1], "memory_units": 16, "dropout": 0.0}
TINY_SHAPE = [2, 2, 48, 48]
ODD_SHAPE = [1, 2, 37, 29]
DEFAULT = {"in_chns": 3, "class_num": 2}


def main():
    from fixture_utils import (OUT, n_params, pattern, randomise, save_json, save_safetensors,
                               state_dict_f16)
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2021)
    default = EANet(DEFAULT)
    net = EANet(TINY)
    randomise(net, gen)
    sd = state_dict_f16(net)
    x = torch.from_numpy(pattern(TINY_SHAPE))
    net.eval()
    with torch.no_grad():
        y = net(x)
        y_odd = net(torch.from_numpy(pattern(ODD_SHAPE)))
    net.train()
    with torch.no_grad():
        yt = net(x)
    io = {"eval": y.numpy(), "eval_odd": y_odd.numpy(), "train": yt.numpy()}
    save_safetensors(os.path.join(OUT, "eanet_tiny.weights.safetensors"), sd)
    save_safetensors(os.path.join(OUT, "eanet_tiny.io.safetensors"), io)
    reference = {
        "torch_version": torch.__version__,
        "reference": "github.com/THU-CVlab/JMedSeg model/EANet.py (PyTorch transcription; logits)",
        "input": "((i * 7919) mod 1021 - 510) / 256",
        "tiny": {"config": TINY, "input_shape": TINY_SHAPE, "odd_input_shape": ODD_SHAPE,
                 "num_parameters": n_params(net), "num_tensors": len(sd)},
        "default": {"config": DEFAULT, "num_parameters": n_params(default),
                    "num_parameters_backbone": n_params(default.backbone),
                    "num_parameters_resnet50": n_params(EANet(dict(DEFAULT, backbone="resnet50")))},
    }
    save_json(os.path.join(OUT, "eanet_reference.json"), reference)
    print("EANet tiny", n_params(net), "params; max |eval|", float(y.abs().max()), "max |train - eval|",
          float((yt - y).abs().max()), "; default", n_params(default))


if __name__ == "__main__":
    main()
