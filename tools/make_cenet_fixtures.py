#!/usr/bin/env python3
"""Reference fixtures for the medseg-nets CE-Net (crates/medseg-nets/src/cenet.rs).

A PyTorch transcription of CE-Net (Gu et al., "CE-Net: Context Encoder Network
for 2D Medical Image Segmentation", IEEE TMI 2019) after the authors'
reference implementation, github.com/Guzaiwang/CE-Net, networks/cenet.py,
class CE_Net_ (written here from its description; module names kept so that
state-dict names match): a ResNet-34 encoder in torchvision's layout
(firstconv/firstbn/firstmaxpool, encoder1..4 = layer1..4 of BasicBlocks),
the dense atrous convolution block (dblock), the residual multi-kernel
pooling block (spp), four DecoderBlocks with additive skips and the final
transposed convolution and 3x3 convolutions. Differences from the reference,
all mirrored in the Rust network:
  * no pretrained weights (torchvision is not needed; BasicBlocks are
    written out below with torchvision's parameter names);
  * `in_chns` input channels instead of the fixed 3, and configurable
    encoder widths (`feature_chns`, default [64, 128, 256, 512]) and block
    counts (`block_nums`, default [3, 4, 6, 3]); the first decoder then
    takes feature_chns[3] + 4 channels (516 by default);
  * logits are returned: the reference's final sigmoid is left out.

Writes under crates/medseg-nets/tests/fixtures/:
  cenet_tiny.weights.safetensors  randomised state dict of a tiny CE-Net
                                  (float16-representable values stored as F16;
                                  num_batches_tracked as I64)
  cenet_tiny.io.safetensors       `eval` (eval-mode logits, full),
                                  `train_s2` (train-mode logits at even rows and
                                  columns, to keep the fixture small) and
                                  `after_train.<bn>.running_{mean,var}`
  cenet_reference.json            config, input shape, parameter counts of the
                                  tiny and of the default configuration
The input is not stored: it is `pattern(shape)` below (exact in float16),
which the Rust test recomputes.

Run with the repository's virtual environment:
    .venv/bin/python tools/make_cenet_fixtures.py
"""
import os

from fixture_utils import OUT, n_params, randomise, running_stats, save_json, save_safetensors, state_dict_f16

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------
# ResNet-34 pieces with torchvision's names
# ---------------------------------------------------------------------------
class BasicBlock(nn.Module):
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
    layers = [BasicBlock(cin, cout, stride)]
    layers += [BasicBlock(cout, cout, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------
# CE-Net blocks (reference module names)
# ---------------------------------------------------------------------------
class DACblock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dilate1 = nn.Conv2d(c, c, 3, dilation=1, padding=1)
        self.dilate2 = nn.Conv2d(c, c, 3, dilation=3, padding=3)
        self.dilate3 = nn.Conv2d(c, c, 3, dilation=5, padding=5)
        self.conv1x1 = nn.Conv2d(c, c, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.data.zero_()

    def forward(self, x):
        a = self.dilate1(x)
        b = self.dilate2(a)
        o1 = F.relu(a)
        o2 = F.relu(self.conv1x1(self.dilate2(x)))
        o3 = F.relu(self.conv1x1(b))
        o4 = F.relu(self.conv1x1(self.dilate3(b)))
        return x + o1 + o2 + o3 + o4


class SPPblock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.pools = [2, 3, 5, 6]
        self.conv = nn.Conv2d(c, 1, 1)

    def forward(self, x):
        h, w = x.shape[2:]
        ups = [F.interpolate(self.conv(F.max_pool2d(x, k, k)), size=(h, w), mode="bilinear", align_corners=False)
               for k in self.pools]
        return torch.cat(ups + [x], 1)


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


class CENetRef(nn.Module):
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
        self.dblock = DACblock(f[3])
        self.spp = SPPblock(f[3])
        self.decoder4 = DecoderBlock(f[3] + 4, f[2])
        self.decoder3 = DecoderBlock(f[2], f[1])
        self.decoder2 = DecoderBlock(f[1], f[0])
        self.decoder1 = DecoderBlock(f[0], f[0])
        self.finaldeconv1 = nn.ConvTranspose2d(f[0], 32, 4, 2, 1)
        self.finalconv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.finalconv3 = nn.Conv2d(32, class_num, 3, padding=1)

    def forward(self, x):
        x = self.firstmaxpool(self.firstrelu(self.firstbn(self.firstconv(x))))
        e1 = self.encoder1(x)
        e2 = self.encoder2(e1)
        e3 = self.encoder3(e2)
        e4 = self.spp(self.dblock(self.encoder4(e3)))
        d4 = self.decoder4(e4) + e3
        d3 = self.decoder3(d4) + e2
        d2 = self.decoder2(d3) + e1
        d1 = self.decoder1(d2)
        out = F.relu(self.finaldeconv1(d1))
        out = F.relu(self.finalconv2(out))
        return self.finalconv3(out)  # logits: the reference applies a sigmoid here


def pattern(shape):
    """Deterministic float16-exact input: ((i * 7919) mod 1021 - 510) / 256."""
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.int64)
    return (((i * 7919) % 1021 - 510) / 256.0).astype(np.float32).reshape(shape)


TINY = {"in_chns": 2, "class_num": 1, "feature_chns": [4, 8, 8, 16], "block_nums": [2, 1, 2, 1]}
TINY_SHAPE = [1, 2, 192, 192]
DEFAULT = {"in_chns": 3, "class_num": 1}
RESNET34_BACKBONE = 21797672 - (512 * 1000 + 1000)  # torchvision resnet34 without its fc layer


def calibrate(net, x):
    """Sets every BatchNorm's running statistics to those of a train pass on
    `x` (then rounded to float16), so that eval-mode activations are neither
    dead nor exploding in this deep randomised network and the eval output
    depends visibly on every block; the values then differ from (0, 1) and
    from the train pass of the test, whose update is checked too."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one pass gives its batch statistics
    net.train()
    with torch.no_grad():
        net(x.flip(-1))  # another input than the test's, so eval and train differ
    with torch.no_grad():
        for m in bns:
            m.momentum = 0.1
            m.running_mean.copy_(m.running_mean.half().float())
            m.running_var.copy_(m.running_var.half().float())


def build(cfg):
    return CENetRef(cfg["in_chns"], cfg["class_num"], cfg.get("feature_chns", (64, 128, 256, 512)),
                    cfg.get("block_nums", (3, 4, 6, 3)))


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(4321)

    default = build(DEFAULT)
    enc = sum(p.numel() for n, p in default.named_parameters()
              if n.startswith(("firstconv", "firstbn", "encoder")))
    assert enc == RESNET34_BACKBONE, (enc, RESNET34_BACKBONE)
    # the reference zeroes the DAC biases
    assert float(default.dblock.dilate2.bias.detach().abs().sum()) == 0.0

    net = build(TINY)
    randomise(net, gen)
    x = torch.from_numpy(pattern(TINY_SHAPE))
    calibrate(net, x)
    with torch.no_grad():  # logits of order 1, so that the absolute 1e-4 of the test is tight
        net.finalconv3.weight.mul_(8.0)
        net.finalconv3.bias.mul_(8.0)
    assert torch.equal(x.half().float(), x)
    sd = state_dict_f16(net)
    net.eval()
    with torch.no_grad():
        y = net(x)
    io = {"eval": y.numpy()}
    net.train()
    with torch.no_grad():
        yt = net(x)
    io["train_s2"] = np.ascontiguousarray(yt.numpy()[:, :, ::2, ::2])
    io.update(running_stats(net))
    save_safetensors(os.path.join(OUT, "cenet_tiny.weights.safetensors"), sd)
    save_safetensors(os.path.join(OUT, "cenet_tiny.io.safetensors"), io)
    reference = {
        "torch_version": torch.__version__,
        "reference": "github.com/Guzaiwang/CE-Net networks/cenet.py CE_Net_ (logits, no sigmoid)",
        "tiny": {"config": TINY, "input_shape": TINY_SHAPE, "input": "((i * 7919) mod 1021 - 510) / 256",
                 "num_parameters": n_params(net), "num_tensors": len(sd)},
        "default": {"config": DEFAULT, "num_parameters": n_params(default),
                    "num_parameters_resnet34_encoder": enc},
    }
    save_json(os.path.join(OUT, "cenet_reference.json"), reference)
    print("tiny", n_params(net), "params, output", list(y.shape))
    print("default", n_params(default), "params (encoder", enc, ")")


# The zoo configuration (configs/zoo/cenet.toml) for tools/torch_zoo_bench.py.
ZOO = {"CENet": lambda in_chns, class_num: build({"in_chns": in_chns, "class_num": class_num})}


if __name__ == "__main__":
    main()
