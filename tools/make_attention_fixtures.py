#!/usr/bin/env python3
"""Reference fixtures for the attention-head networks on a dilated ResNet
(crates/medseg-nets/src/danet.rs, ocnet.rs, ocrnet.rs and their backbone
crates/medseg-nets/src/backbones/dilated_resnet.rs).

A PyTorch transcription of JMedSeg's Jittor models (github.com/THU-CVlab/JMedSeg):
  * model/backbone/resnet.py: the dilated Bottleneck ResNet (`ResNet`,
    `Bottleneck`, `resnet50` / `resnet101` with output stride 8 or 16): a
    three-convolution stem (`conv1.0..6`; the third convolution is followed
    by neither BatchNorm nor ReLU, as JMedSeg), 3x3 max pooling, `layer1..3`
    of Bottlenecks and `layer4`, a multi-grid unit of three Bottlenecks
    dilated 1, 2, 4 times the stage's dilation;
  * model/DANet.py: `DANet` / `DANetHead` / `PAM_Module` / `CAM_Module`
    (JMedSeg's CAM uses softmax(energy), not the authors' max-minus-energy);
  * model/OCNet.py: `OCNet` / `OCHead` / `OC_Module`;
  * model/OCRNet.py: `OCRNet` / `OCRHead`.
Module names are JMedSeg's except the layers producing class logits, named
so that the federated SegViz default head patterns (`*out_conv*`) find them:
DANet `head.conv8.1` -> `head.out_conv`, OCNet `head.conv_2.1` ->
`head.out_conv`, OCRNet `head.last_conv` -> `head.out_conv` and
`get_context.4` -> `context_out_conv` (their dropouts are separate modules).
Jittor's `nn.resize(..., mode='bilinear')` is F.interpolate bilinear without
aligned corners. Input channels are configurable (JMedSeg hard-codes 3) and
so are, for the tiny fixtures, the backbone's width and block counts.

Writes under crates/medseg-nets/tests/fixtures/:
  <net>_tiny.weights.safetensors   randomised state dict (F16-exact values)
  <net>_tiny.io.safetensors        `eval`, `train` (batch statistics, dropout
                                   0) and `eval_odd` logits, BatchNorm running
                                   statistics after the train pass
  attention_reference.json         configs, input shapes, parameter counts
                                   (tiny; JMedSeg's default: resnet101, output
                                   stride 16, 3 inputs, 2 classes)
`ZOO` (importable without side effects) builds the networks of
configs/zoo/{danet,ocnet,ocrnet}.toml.

Run from the repository root: .venv/bin/python tools/make_attention_fixtures.py
"""
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------
# model/backbone/resnet.py
# ---------------------------------------------------------------------------
class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, dilation=dilation,
                               padding=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        return self.relu(out + residual)


BLOCKS = {"resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3]}


class ResNet(nn.Module):
    def __init__(self, layers, output_stride, in_chns=3, width=64):
        super().__init__()
        w = width
        self.inplanes = 2 * w
        blocks = [1, 2, 4]
        if output_stride == 16:
            strides, dilations = [1, 2, 2, 1], [1, 1, 1, 2]
        elif output_stride == 8:
            strides, dilations = [1, 2, 1, 1], [1, 1, 2, 4]
        else:
            raise NotImplementedError
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_chns, w, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.Conv2d(w, w, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, kernel_size=3, stride=1, padding=1, bias=False))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(w, layers[0], strides[0], dilations[0])
        self.layer2 = self._make_layer(2 * w, layers[1], strides[1], dilations[1])
        self.layer3 = self._make_layer(4 * w, layers[2], strides[2], dilations[2])
        self.layer4 = self._make_MG_unit(8 * w, blocks, strides[3], dilations[3])

    def _downsample(self, planes, stride):
        if stride != 1 or self.inplanes != planes * 4:
            return nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, kernel_size=1, stride=stride, bias=False),
                                 nn.BatchNorm2d(planes * 4))
        return None

    def _make_layer(self, planes, blocks, stride=1, dilation=1):
        downsample = self._downsample(planes, stride)
        layers = [Bottleneck(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = planes * 4
        for _ in range(1, blocks):
            layers.append(Bottleneck(self.inplanes, planes, dilation=dilation))
        return nn.Sequential(*layers)

    def _make_MG_unit(self, planes, blocks, stride=1, dilation=1):
        downsample = self._downsample(planes, stride)
        layers = [Bottleneck(self.inplanes, planes, stride, dilation=blocks[0] * dilation, downsample=downsample)]
        self.inplanes = planes * 4
        for i in range(1, len(blocks)):
            layers.append(Bottleneck(self.inplanes, planes, stride=1, dilation=blocks[i] * dilation))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.conv1(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x_0 = x
        x_1 = self.layer2(x)
        x_2 = self.layer3(x_1)
        x_3 = self.layer4(x_2)
        return x_0, x_1, x_2, x_3


def backbone(cfg):
    blocks = list(cfg.get("backbone_blocks", BLOCKS[cfg.get("backbone", "resnet101")][:3])) + [3]
    return ResNet(blocks, cfg.get("output_stride", 16), cfg["in_chns"], cfg.get("backbone_width", 64))


def resize(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def conv_bn_relu(cin, cout, bias=False):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=bias), nn.BatchNorm2d(cout), nn.ReLU())


# ---------------------------------------------------------------------------
# model/DANet.py
# ---------------------------------------------------------------------------
class PAM_Module(nn.Module):
    def __init__(self, in_dim):
        super().__init__()
        self.query_conv = nn.Conv2d(in_dim, in_dim // 8, kernel_size=1)
        self.key_conv = nn.Conv2d(in_dim, in_dim // 8, kernel_size=1)
        self.value_conv = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.size()
        q = self.query_conv(x).reshape(b, -1, w * h).permute(0, 2, 1)
        k = self.key_conv(x).reshape(b, -1, w * h)
        attention = torch.softmax(torch.bmm(q, k), dim=-1)
        v = self.value_conv(x).reshape(b, -1, w * h)
        out = torch.bmm(v, attention.permute(0, 2, 1)).reshape(b, c, h, w)
        return self.gamma * out + x


class CAM_Module(nn.Module):
    def __init__(self, in_dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.size()
        q = x.reshape(b, c, -1)
        attention = torch.softmax(torch.bmm(q, q.permute(0, 2, 1)), dim=-1)
        out = torch.bmm(attention, q).reshape(b, c, h, w)
        return self.gamma * out + x


class DANetHead(nn.Module):
    def __init__(self, in_channels, out_channels, dropout):
        super().__init__()
        inter = in_channels // 4
        self.conv5a = conv_bn_relu(in_channels, inter)
        self.conv5c = conv_bn_relu(in_channels, inter)
        self.sa = PAM_Module(inter)
        self.sc = CAM_Module(inter)
        self.conv51 = conv_bn_relu(inter, inter)
        self.conv52 = conv_bn_relu(inter, inter)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = nn.Conv2d(inter, out_channels, 1)  # JMedSeg: conv8.1

    def forward(self, x):
        sa = self.conv51(self.sa(self.conv5a(x)))
        sc = self.conv52(self.sc(self.conv5c(x)))
        return self.out_conv(self.dropout(sa + sc))


class DANet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.backbone = backbone(cfg)
        self.head = DANetHead(32 * cfg.get("backbone_width", 64), cfg["class_num"], cfg.get("dropout", 0.1))

    def forward(self, x):
        _, _, _, f = self.backbone(x)
        return resize(self.head(f), x.shape[2:])


# ---------------------------------------------------------------------------
# model/OCNet.py
# ---------------------------------------------------------------------------
class OC_Module(nn.Module):
    def __init__(self, in_dim):
        super().__init__()
        self.query_conv = nn.Conv2d(in_dim, in_dim // 2, kernel_size=1)
        self.key_conv = nn.Conv2d(in_dim, in_dim // 2, kernel_size=1)
        self.value_conv = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.scale_conv = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        nn.init.zeros_(self.scale_conv.weight)

    def forward(self, x):
        b, c, h, w = x.size()
        q = self.query_conv(x).reshape(b, -1, w * h).permute(0, 2, 1)
        k = self.key_conv(x).reshape(b, -1, w * h)
        attention = torch.softmax(torch.bmm(q, k), dim=-1)
        v = self.value_conv(x).reshape(b, -1, w * h)
        out = torch.bmm(v, attention.permute(0, 2, 1)).reshape(b, c, h, w)
        return torch.cat([self.scale_conv(out), x], 1)


class OCHead(nn.Module):
    def __init__(self, in_channels, out_channels, dropout):
        super().__init__()
        inter = in_channels // 4
        self.conv_0 = conv_bn_relu(in_channels, inter)
        self.oc = OC_Module(inter)
        self.conv_1 = conv_bn_relu(2 * inter, inter)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = nn.Conv2d(inter, out_channels, 1)  # JMedSeg: conv_2.1

    def forward(self, x):
        return self.out_conv(self.dropout(self.conv_1(self.oc(self.conv_0(x)))))


class OCNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.backbone = backbone(cfg)
        self.head = OCHead(32 * cfg.get("backbone_width", 64), cfg["class_num"], cfg.get("dropout", 0.1))

    def forward(self, x):
        _, _, _, f = self.backbone(x)
        return resize(self.head(f), x.shape[2:])


# ---------------------------------------------------------------------------
# model/OCRNet.py
# ---------------------------------------------------------------------------
class OCRHead(nn.Module):
    def __init__(self, in_channels, n_cls):
        super().__init__()
        self.conv_1x1 = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        nn.init.zeros_(self.conv_1x1.weight)
        self.out_conv = nn.Conv2d(in_channels * 2, n_cls, kernel_size=3, padding=1)  # JMedSeg: last_conv

    def forward(self, context, feature):
        b, c, h, w = feature.shape
        origin = feature
        feature = feature.reshape(b, c, -1).permute(0, 2, 1)
        context = context.reshape(b, context.shape[1], -1)
        attention = torch.softmax(context, dim=2)
        ocr_context = torch.bmm(attention, feature).permute(0, 2, 1)
        relation = torch.bmm(feature, ocr_context).permute(0, 2, 1)
        attention = torch.softmax(relation, dim=2)
        result = torch.bmm(ocr_context, attention).reshape(b, c, h, w)
        result = torch.cat([self.conv_1x1(result), origin], dim=1)
        return self.out_conv(result)


class OCRNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        w = cfg.get("backbone_width", 64)
        ocr = cfg.get("ocr_channels", 512)
        self.backbone = backbone(cfg)
        self.head = OCRHead(ocr, cfg["class_num"])
        self.get_context = nn.Sequential(
            nn.Conv2d(16 * w, ocr, kernel_size=3, padding=1), nn.BatchNorm2d(ocr), nn.ReLU(),
            nn.Dropout(cfg.get("dropout", 0.05)))
        self.context_out_conv = nn.Conv2d(ocr, cfg["class_num"], kernel_size=1)  # JMedSeg: get_context.4
        self.conv_3x3 = conv_bn_relu(32 * w, ocr, bias=True)

    def forward(self, x):
        _, _, x_0, f = self.backbone(x)
        context = self.context_out_conv(self.get_context(x_0))
        out = self.head(context, self.conv_3x3(f))
        return resize(out, x.shape[2:])


NETS = {"DANet": DANet, "OCNet": OCNet, "OCRNet": OCRNet}

# configs/zoo/{danet,ocnet,ocrnet}.toml: JMedSeg's heads on a resnet50 backbone
# at output stride 16 (see the toml comments), 1 input channel, 4 classes.
ZOO = {
    name: (lambda cls: lambda in_chns, class_num: cls(
        {"in_chns": in_chns, "class_num": class_num, "backbone": "resnet50", "output_stride": 16}))(cls)
    for name, cls in NETS.items()
}

TINY_WIDTH = 4
TINY = {
    "DANet": {"in_chns": 2, "class_num": 3, "backbone": "resnet50", "output_stride": 16,
              "backbone_width": TINY_WIDTH, "backbone_blocks": [1, 1, 2], "dropout": 0.0},
    "OCNet": {"in_chns": 2, "class_num": 3, "backbone": "resnet50", "output_stride": 8,
              "backbone_width": TINY_WIDTH, "backbone_blocks": [2, 1, 1], "dropout": 0.0},
    "OCRNet": {"in_chns": 2, "class_num": 3, "backbone": "resnet50", "output_stride": 16,
               "backbone_width": TINY_WIDTH, "backbone_blocks": [1, 2, 1], "ocr_channels": 8,
               "dropout": 0.0},
}
TINY_SHAPE = [2, 2, 48, 48]
ODD_SHAPE = [1, 2, 37, 29]
DEFAULT = {"in_chns": 3, "class_num": 2}


def main():
    from fixture_utils import (OUT, calibrate, n_params, pattern, randomise, running_stats, save_json,
                               save_safetensors, state_dict_f16)
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2019)
    reference = {
        "torch_version": torch.__version__,
        "reference": "github.com/THU-CVlab/JMedSeg model/{DANet,OCNet,OCRNet}.py, model/backbone/resnet.py "
                     "(PyTorch transcription; logits)",
        "input": "((i * 7919) mod 1021 - 510) / 256",
    }
    for name, cls in NETS.items():
        default = cls(DEFAULT)
        bb = n_params(default.backbone)
        r50 = n_params(cls(dict(DEFAULT, backbone="resnet50")))
        cfg = TINY[name]
        net = cls(cfg)
        randomise(net, gen)
        x = torch.from_numpy(pattern(TINY_SHAPE))
        calibrate(net, x)
        sd = state_dict_f16(net)
        net.eval()
        with torch.no_grad():
            y = net(x)
            y_odd = net(torch.from_numpy(pattern(ODD_SHAPE)))
        io = {"eval": y.numpy(), "eval_odd": y_odd.numpy()}
        net.train()
        with torch.no_grad():
            yt = net(x)
        io["train"] = yt.numpy()
        io.update(running_stats(net))
        key = name.lower()
        save_safetensors(os.path.join(OUT, f"{key}_tiny.weights.safetensors"), sd)
        save_safetensors(os.path.join(OUT, f"{key}_tiny.io.safetensors"), io)
        reference[key] = {
            "tiny": {"config": cfg, "input_shape": TINY_SHAPE, "odd_input_shape": ODD_SHAPE,
                     "num_parameters": n_params(net),
                     "num_tensors": sum(not k.endswith("num_batches_tracked") for k in sd)},
            "default": {"config": DEFAULT, "num_parameters": n_params(default),
                        "num_parameters_backbone": bb, "num_parameters_resnet50": r50},
        }
        print(name, "tiny", n_params(net), "params; max |eval|", float(y.abs().max()), "max |train|",
              float(yt.abs().max()), "max |eval - train|", float((y - yt).abs().max()),
              "; default", n_params(default), "(backbone", bb, "), resnet50", r50)
    save_json(os.path.join(OUT, "attention_reference.json"), reference)


if __name__ == "__main__":
    main()
