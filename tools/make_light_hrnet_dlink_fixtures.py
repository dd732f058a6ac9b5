#!/usr/bin/env python3
"""Reference fixtures for JMedSeg's light networks, HRNet and D-LinkNet in
medseg-nets (crates/medseg-nets/src/onenet.rs, lightnet.rs, hrnet.rs,
dlinknet.rs).

PyTorch transcriptions of the reference code, module and parameter names kept
so that state dicts map 1:1 onto the Rust networks:
  * OneNet   JMedSeg (github.com/THU-CVlab/JMedSeg) model/OneNet.py, `OneNet`
  * LightNet JMedSeg model/LightNet.py, `LightNet`
  * HRNet    JMedSeg model/hrnet.py, `HRNet` (c = 16)
  * DLinkNet JMedSeg model/dlink_jittor.py, `DinkNet34` (the authors' code:
             github.com/zlckanata/DeepGlobe-Road-Extraction-Challenge,
             networks/dinknet.py), on torchvision's resnet34 layout
JMedSeg is written for Jittor; `nn.Conv`, `nn.ConvTranspose`, `nn.GroupNorm`,
`nn.BatchNorm` and `Var.roll` are PyTorch's `nn.Conv2d`, `nn.ConvTranspose2d`,
`nn.GroupNorm`, `nn.BatchNorm2d` and `torch.roll` here.

Differences from the references, all mirrored in the Rust networks (the
default configuration builds exactly the reference's layers):
  * OneNet and LightNet: the per-group width (`group_width`, 16 in the
    reference) scales every channel count, so that a tiny network can be
    tested; OneNet's dropout rate is a parameter (0.1; 0 in the fixture);
    LightNet takes `class_num` logits and, like the reference, sums its input
    channels to one grey channel;
  * HRNet: the stem width (`stem_chns`, 64 in the reference; the layer1
    bottlenecks have 4x as many outputs) is a parameter;
  * DLinkNet: no ImageNet weights, `in_chns` inputs instead of 3, the encoder
    widths and block counts configurable (defaults resnet34's), logits
    returned: the reference's final sigmoid is left out.

Writes under crates/medseg-nets/tests/fixtures/, per network `<net>` in
onenet, lightnet, hrnet, dlinknet:
  <net>_tiny.weights.safetensors  randomised state dict of a tiny network (F16)
  <net>_tiny.io.safetensors       `eval` (eval-mode logits), `train` (train-mode
                                  logits, batch statistics) and
                                  `after_train.<bn>.running_{mean,var}`
  <net>_reference.json            configs, input shape, parameter counts of the
                                  tiny and the default configuration
The input is `pattern(shape)` (exact in float16), recomputed by the Rust tests.

`ZOO` maps each registry name to a builder of the PyTorch network in the
configuration of configs/zoo/<name>.toml (default layout, 1 input channel,
4 classes), returning logits; importing this module runs nothing else.

Run from the repository root with the repository's virtual environment:
    .venv/bin/python tools/make_light_hrnet_dlink_fixtures.py
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------
# OneNet and LightNet (JMedSeg model/OneNet.py, model/LightNet.py)
# ---------------------------------------------------------------------------
class NormLayer(nn.Module):
    def __init__(self, num_features, num_groups):
        super().__init__()
        self.norm = nn.GroupNorm(num_groups=num_groups, num_channels=num_features)

    def forward(self, x):
        return self.norm(x)


class ShiftGroupConv(nn.Module):
    def __init__(self, in_group, out_group, groups, shift, dilation=1, kernel_size=3):
        super().__init__()
        self.shift = shift
        self.conv = nn.Conv2d(in_group * groups, out_group * groups, kernel_size=kernel_size,
                              padding=dilation * (kernel_size // 2), dilation=dilation, groups=groups, bias=False)
        self.norm = NormLayer(out_group * groups, groups)
        self.act = nn.ReLU()

    def forward(self, x):
        x = self.act(self.norm(self.conv(x)))
        return x.roll(shifts=self.shift, dims=1)


class In(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=4, stride=4)

    def forward(self, x):
        return self.conv(x)


class OutConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=4)

    def forward(self, x):
        return self.conv(x)


DILATIONS = [1] * 3 + [2] * 4 + [4] * 6 + [8, 16, 32]


class OneNet(nn.Module):
    """JMedSeg OneNet(n_channels=3, n_classes=2); w = 16 is the reference."""

    def __init__(self, n_channels=3, n_classes=2, w=16, dropout=0.1):
        super().__init__()
        self.embed = In(n_channels, 8 * w)
        # ShiftGroupConv(16, 32, g): shift = out_group // 2
        self.map = nn.Sequential(*[ShiftGroupConv(w, 2 * w, g, shift=w) for g in (8, 16, 32)])
        self.layers = nn.Sequential(*[ShiftGroupConv(w, w, 64, shift=w // 2, dilation=d) for d in DILATIONS])
        self.fuse = nn.Sequential(
            nn.Conv2d(8 * 64 * w, 16 * w, kernel_size=1, bias=False),
            NormLayer(16 * w, 16),
            nn.ReLU(),
            nn.Dropout(dropout),
            OutConv(16 * w, n_classes),
        )

    def forward(self, x):
        x = self.map(self.embed(x))
        xs = [self.layers[0](x)]
        for i in range(1, 16):
            xs.append(self.layers[i](xs[i - 1]))
        return self.fuse(torch.cat(xs[2:3] + xs[6:7] + xs[11:13] + xs[-4:], dim=1))


class Input(In):
    pass


class Output(OutConv):
    pass


class LightNet(nn.Module):
    """JMedSeg LightNet(n_classes=2); w = 16 is the reference."""

    def __init__(self, n_classes=2, w=16):
        super().__init__()
        s = w // 2
        self.embed = nn.Sequential(Input(1, 4 * w), *[ShiftGroupConv(w, 2 * w, g, shift=s) for g in (4, 8, 16, 32)])
        self.layers = nn.Sequential(*[ShiftGroupConv(w, w, 64, shift=s, dilation=d) for d in DILATIONS])
        self.fuse = nn.Sequential(*[ShiftGroupConv(w, w, 64, shift=s, kernel_size=1) for _ in range(7)])
        self.decode = nn.Sequential(
            ShiftGroupConv(2 * w, w, 32, shift=s, kernel_size=1),
            ShiftGroupConv(2 * w, w, 16, shift=s, kernel_size=1),
            Output(16 * w, n_classes),
        )

    def forward(self, x):
        x = self.embed(x.sum(dim=1, keepdim=True))
        xs = [self.layers[0](x)]
        for i in range(1, 16):
            xs.append(self.layers[i](xs[i - 1]))
        f = xs[2:3] + xs[6:7] + xs[11:13] + xs[-4:]
        fused = f[7]
        for i in range(6, -1, -1):
            fused = self.fuse[i](fused * f[i])
        return self.decode(fused)


# ---------------------------------------------------------------------------
# HRNet (JMedSeg model/hrnet.py)
# ---------------------------------------------------------------------------
class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = x if self.downsample is None else self.downsample(x)
        return F.relu(out + res)


class BasicBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + x)


class StageModule(nn.Module):
    def __init__(self, stage, output_branches, c):
        super().__init__()
        self.branches = nn.ModuleList([nn.Sequential(*[BasicBlock(c * 2 ** i) for _ in range(4)])
                                       for i in range(stage)])
        self.fuse_layers = nn.ModuleList()
        for i in range(output_branches):
            row = nn.ModuleList()
            for j in range(stage):
                if i == j:
                    row.append(nn.Sequential())
                elif i < j:
                    row.append(nn.Sequential(
                        nn.Conv2d(c * 2 ** j, c * 2 ** i, 1, bias=False),
                        nn.BatchNorm2d(c * 2 ** i),
                        nn.Upsample(scale_factor=2.0 ** (j - i), mode="nearest")))
                else:
                    ops = [nn.Sequential(nn.Conv2d(c * 2 ** j, c * 2 ** j, 3, 2, 1, bias=False),
                                         nn.BatchNorm2d(c * 2 ** j), nn.ReLU())
                           for _ in range(i - j - 1)]
                    ops.append(nn.Sequential(nn.Conv2d(c * 2 ** j, c * 2 ** i, 3, 2, 1, bias=False),
                                             nn.BatchNorm2d(c * 2 ** i)))
                    row.append(nn.Sequential(*ops))
            self.fuse_layers.append(row)

    def forward(self, x):
        x = [b(t) for b, t in zip(self.branches, x)]
        out = []
        for row in self.fuse_layers:
            y = row[0](x[0])
            for j in range(1, len(self.branches)):
                y = y + row[j](x[j])
            out.append(F.relu(y))
        return out


def conv_bn_relu(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class HRNet(nn.Module):
    """JMedSeg HRNet(c=16, in_ch=3, out_ch=2); stem = 64 is the reference."""

    def __init__(self, c=16, in_ch=3, out_ch=2, stem=64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.conv2 = nn.Conv2d(stem, stem, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem)
        down = nn.Sequential(nn.Conv2d(stem, 4 * stem, 1, bias=False), nn.BatchNorm2d(4 * stem))
        self.layer1 = nn.Sequential(Bottleneck(stem, stem, down),
                                    *[Bottleneck(4 * stem, stem) for _ in range(3)])
        self.transition1 = nn.ModuleList([conv_bn_relu(4 * stem, c, 1),
                                          nn.Sequential(conv_bn_relu(4 * stem, 2 * c, 2))])
        self.stage2 = nn.Sequential(StageModule(2, 2, c))
        self.transition2 = nn.ModuleList([nn.Sequential(), nn.Sequential(),
                                          nn.Sequential(conv_bn_relu(2 * c, 4 * c, 2))])
        self.stage3 = nn.Sequential(*[StageModule(3, 3, c) for _ in range(4)])
        self.transition3 = nn.ModuleList([nn.Sequential(), nn.Sequential(), nn.Sequential(),
                                          nn.Sequential(conv_bn_relu(4 * c, 8 * c, 2))])
        self.stage4 = nn.Sequential(StageModule(4, 4, c), StageModule(4, 4, c), StageModule(4, 1, c))
        self.final_layer = nn.Conv2d(c, out_ch, 1)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        x = [t(x) for t in self.transition1]
        x = self.stage2(x)
        x = [self.transition2[0](x[0]), self.transition2[1](x[1]), self.transition2[2](x[-1])]
        x = self.stage3(x)
        x = [self.transition3[0](x[0]), self.transition3[1](x[1]), self.transition3[2](x[2]),
             self.transition3[3](x[-1])]
        x = self.stage4(x)
        return self.final_layer(x[0])


# ---------------------------------------------------------------------------
# D-LinkNet 34 (JMedSeg model/dlink_jittor.py DinkNet34)
# ---------------------------------------------------------------------------
class TvBasicBlock(nn.Module):
    """torchvision's BasicBlock."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        idt = x if self.downsample is None else self.downsample(x)
        return self.relu(y + idt)


def make_layer(cin, cout, blocks, stride):
    return nn.Sequential(TvBasicBlock(cin, cout, stride), *[TvBasicBlock(cout, cout, 1) for _ in range(blocks - 1)])


class Dblock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dilate1 = nn.Conv2d(c, c, 3, dilation=1, padding=1)
        self.dilate2 = nn.Conv2d(c, c, 3, dilation=2, padding=2)
        self.dilate3 = nn.Conv2d(c, c, 3, dilation=4, padding=4)
        self.dilate4 = nn.Conv2d(c, c, 3, dilation=8, padding=8)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.data.zero_()

    def forward(self, x):
        d1 = F.relu(self.dilate1(x))
        d2 = F.relu(self.dilate2(d1))
        d3 = F.relu(self.dilate3(d2))
        d4 = F.relu(self.dilate4(d3))
        return x + d1 + d2 + d3 + d4


class DecoderBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        q = cin // 4
        self.conv1 = nn.Conv2d(cin, q, 1)
        self.norm1 = nn.BatchNorm2d(q)
        self.deconv2 = nn.ConvTranspose2d(q, q, 3, stride=2, padding=1, output_padding=1)
        self.norm2 = nn.BatchNorm2d(q)
        self.conv3 = nn.Conv2d(q, cout, 1)
        self.norm3 = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = F.relu(self.norm1(self.conv1(x)))
        x = F.relu(self.norm2(self.deconv2(x)))
        return F.relu(self.norm3(self.conv3(x)))


class DinkNet34(nn.Module):
    def __init__(self, in_chns=3, class_num=1, feature_chns=(64, 128, 256, 512), block_nums=(3, 4, 6, 3)):
        super().__init__()
        f = list(feature_chns)
        self.firstconv = nn.Conv2d(in_chns, f[0], 7, 2, 3, bias=False)
        self.firstbn = nn.BatchNorm2d(f[0])
        self.firstrelu = nn.ReLU(inplace=True)
        self.firstmaxpool = nn.MaxPool2d(3, 2, 1)
        self.encoder1 = make_layer(f[0], f[0], block_nums[0], 1)
        self.encoder2 = make_layer(f[0], f[1], block_nums[1], 2)
        self.encoder3 = make_layer(f[1], f[2], block_nums[2], 2)
        self.encoder4 = make_layer(f[2], f[3], block_nums[3], 2)
        self.dblock = Dblock(f[3])
        self.decoder4 = DecoderBlock(f[3], f[2])
        self.decoder3 = DecoderBlock(f[2], f[1])
        self.decoder2 = DecoderBlock(f[1], f[0])
        self.decoder1 = DecoderBlock(f[0], f[0])
        self.finaldeconv1 = nn.ConvTranspose2d(f[0], 32, 4, stride=2, padding=1)
        self.finalconv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.finalconv3 = nn.Conv2d(32, class_num, 3, padding=1)

    def forward(self, x):
        x = self.firstmaxpool(self.firstrelu(self.firstbn(self.firstconv(x))))
        e1 = self.encoder1(x)
        e2 = self.encoder2(e1)
        e3 = self.encoder3(e2)
        e4 = self.dblock(self.encoder4(e3))
        d4 = self.decoder4(e4) + e3
        d3 = self.decoder3(d4) + e2
        d2 = self.decoder2(d3) + e1
        d1 = self.decoder1(d2)
        out = F.relu(self.finaldeconv1(d1))
        out = F.relu(self.finalconv2(out))
        return self.finalconv3(out)  # logits: the reference applies a sigmoid here


# Registry name -> the PyTorch network of configs/zoo/<name>.toml.
ZOO = {
    "OneNet": lambda in_chns, class_num: OneNet(in_chns, class_num),
    "LightNet": lambda in_chns, class_num: LightNet(class_num),
    "HRNet": lambda in_chns, class_num: HRNet(16, in_chns, class_num),
    "DLinkNet": lambda in_chns, class_num: DinkNet34(in_chns, class_num),
}

RESNET34_BACKBONE = 21797672 - (512 * 1000 + 1000)  # torchvision resnet34 without its fc layer

# name: (tiny rust config, torch builder of a config, input shape, default config)
CASES = {
    "onenet": (
        {"in_chns": 2, "class_num": 3, "group_width": 2, "dropout": 0.0},
        lambda c: OneNet(c["in_chns"], c["class_num"], c.get("group_width", 16), c.get("dropout", 0.1)),
        [2, 2, 48, 48],
        {"in_chns": 3, "class_num": 2},
    ),
    "lightnet": (
        {"in_chns": 2, "class_num": 3, "group_width": 2},
        lambda c: LightNet(c["class_num"], c.get("group_width", 16)),
        [2, 2, 48, 48],
        {"in_chns": 3, "class_num": 2},
    ),
    "hrnet": (
        {"in_chns": 2, "class_num": 3, "width": 1, "stem_chns": 8},
        lambda c: HRNet(c.get("width", 16), c["in_chns"], c["class_num"], c.get("stem_chns", 64)),
        [2, 2, 32, 32],
        {"in_chns": 3, "class_num": 2},
    ),
    "dlinknet": (
        {"in_chns": 2, "class_num": 3, "feature_chns": [4, 8, 8, 16], "block_nums": [2, 1, 2, 1]},
        lambda c: DinkNet34(c["in_chns"], c["class_num"], c.get("feature_chns", (64, 128, 256, 512)),
                            c.get("block_nums", (3, 4, 6, 3))),
        [1, 2, 64, 64],
        {"in_chns": 3, "class_num": 1},
    ),
}


def main():
    from fixture_utils import (OUT, calibrate, n_params, pattern, randomise, running_stats, save_json,
                               save_safetensors, state_dict_f16)

    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    for name, (tiny, make, shape, default_cfg) in CASES.items():
        gen = torch.Generator().manual_seed(4321)
        default = make(default_cfg)
        net = make(tiny)
        randomise(net, gen)
        x = torch.from_numpy(pattern(shape))
        assert torch.equal(x.half().float(), x)
        has_bn = any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        if has_bn:
            calibrate(net, x)
        sd = state_dict_f16(net)
        net.eval()
        with torch.no_grad():
            y = net(x)
        io = {"eval": y.numpy()}
        net.train()
        with torch.no_grad():
            yt = net(x)
        io["train"] = yt.numpy()
        io.update(running_stats(net))
        save_safetensors(os.path.join(OUT, f"{name}_tiny.weights.safetensors"), sd)
        save_safetensors(os.path.join(OUT, f"{name}_tiny.io.safetensors"), io)
        ref = {
            "torch_version": torch.__version__,
            "tiny": {"config": tiny, "input_shape": shape, "input": "((i * 7919) mod 1021 - 510) / 256",
                     "num_parameters": n_params(net), "num_tensors": len(sd)},
            "default": {"config": default_cfg, "num_parameters": n_params(default)},
        }
        if name == "dlinknet":
            enc = sum(p.numel() for n, p in default.named_parameters()
                      if n.startswith(("firstconv", "firstbn", "encoder")))
            assert enc == RESNET34_BACKBONE, (enc, RESNET34_BACKBONE)
            ref["default"]["num_parameters_resnet34_encoder"] = enc
        save_json(os.path.join(OUT, f"{name}_reference.json"), ref)
        print(name, "tiny", n_params(net), "params, max |y|", float(y.abs().max()),
              "train-eval", float((yt - y).abs().max()), "default", n_params(default))


if __name__ == "__main__":
    main()
