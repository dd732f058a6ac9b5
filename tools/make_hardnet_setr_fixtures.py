#!/usr/bin/env python3
"""Reference fixtures for the medseg-nets HarDNet-MSEG and SETR
(crates/medseg-nets/src/hardnet_mseg.rs, src/backbones/hardnet.rs,
src/setr.rs).

PyTorch transcriptions of JMedSeg's Jittor models (github.com/THU-CVlab/JMedSeg),
module names kept so that state-dict names match:

* HarDNet-MSEG (Huang et al., "HarDNet-MSEG: A Simple Encoder-Decoder Polyp
  Segmentation Neural Network that Achieves over 0.9 Mean Dice and 86 FPS",
  2021): JMedSeg model/HarDNet.py, class `HarDMSEG(channel=32, n_classes=2)`,
  itself a port of the authors' code (github.com/james128333/HarDNet-MSEG,
  lib/HarD_MSEG.py + lib/hardnet_68.py): a HarDNet-68 backbone (`hardnet.base`),
  three modified receptive-field blocks (`rfb2_1`, `rfb3_1`, `rfb4_1`) and the
  dense aggregation decoder (`agg1`), logits up-sampled x8. JMedSeg leaves out
  the authors' unused reverse-attention layers (`ra*`, `conv2..6`) and the
  classifier of HarDNet, so they are not counted.
* SETR (Zheng et al., "Rethinking Semantic Segmentation from a
  Sequence-to-Sequence Perspective with Transformers", CVPR 2021): JMedSeg
  model/transformer_seg.py + model/transformer_model.py, class `SETRModel`
  (defaults patch 32x32, hidden 1024, 8 layers, 16 heads, decoder
  [512, 256, 128, 64], sample_rate 4): a BERT-style post-norm transformer over
  flattened 32x32 patches, a linear layer re-shaping every token to a 2x2 map
  of hidden channels, and a progressive up-sampling decoder (4 x [3x3 conv,
  BatchNorm, ReLU, bilinear x2]) with a final 3x3 convolution.

Differences from JMedSeg (mirrored in the Rust networks):
  * `in_chns` inputs (JMedSeg's HarDNet has a fixed 3);
  * PyTorch's BatchNorm (the running variance is updated with the unbiased
    batch variance; Jittor's uses the biased one);
  * bilinear up-sampling with PyTorch's align_corners=False arithmetic;
  * SETR's position-embedding table is a trainable `nn.Embedding` (as the
    PyTorch code JMedSeg ported; JMedSeg's Jittor `Embedding` is stop_grad).

Writes under crates/medseg-nets/tests/fixtures/:
  hardnet_mseg_tiny.{weights,io}.safetensors, setr_tiny.{weights,io}.safetensors
  hardnet_setr_reference.json
The input is `pattern(shape)` (exact in float16), recomputed by the Rust tests.

`ZOO` builds the zoo configurations (configs/zoo/hardnetmseg.toml,
configs/zoo/setr.toml) for a PyTorch benchmark; importing this module has no
side effects.

Run from the repository root:
    .venv/bin/python tools/make_hardnet_setr_fixtures.py
"""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


# ---------------------------------------------------------------------------
# HarDNet-68 (JMedSeg model/HarDNet.py)
# ---------------------------------------------------------------------------
class ConvLayer(nn.Sequential):
    def __init__(self, in_channels, out_channels, kernel=3, stride=1, bias=False):
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel, stride=stride,
                                          padding=kernel // 2, bias=bias))
        self.add_module("norm", nn.BatchNorm2d(out_channels))
        self.add_module("relu", nn.ReLU6())


class HarDBlock(nn.Module):
    def get_link(self, layer, base_ch, growth_rate, grmul):
        if layer == 0:
            return base_ch, 0, []
        out_channels = growth_rate
        link = []
        for i in range(10):
            dv = 2 ** i
            if layer % dv == 0:
                link.append(layer - dv)
                if i > 0:
                    out_channels *= grmul
        out_channels = int(int(out_channels + 1) / 2) * 2
        in_channels = 0
        for i in link:
            ch, _, _ = self.get_link(i, base_ch, growth_rate, grmul)
            in_channels += ch
        return out_channels, in_channels, link

    def __init__(self, in_channels, growth_rate, grmul, n_layers):
        super().__init__()
        self.links = []
        layers_ = []
        self.out_channels = 0
        for i in range(n_layers):
            outch, inch, link = self.get_link(i + 1, in_channels, growth_rate, grmul)
            self.links.append(link)
            layers_.append(ConvLayer(inch, outch))
            if i % 2 == 0 or i == n_layers - 1:
                self.out_channels += outch
        self.layers = nn.ModuleList(layers_)

    def forward(self, x):
        layers_ = [x]
        for layer in range(len(self.layers)):
            tin = [layers_[i] for i in self.links[layer]]
            x = torch.cat(tin, 1) if len(tin) > 1 else tin[0]
            layers_.append(self.layers[layer](x))
        t = len(layers_)
        out_ = [layers_[i] for i in range(t) if i == t - 1 or i % 2 == 1]
        return torch.cat(out_, 1)


HARDNET68 = {"first_chns": [32, 64], "block_chns": [128, 256, 320, 640, 1024],
             "growth_rates": [14, 16, 20, 40, 160], "block_layers": [8, 16, 16, 16, 4], "grmul": 1.7}
DOWNSAMPLE = [1, 0, 1, 1, 0]


class HarDNet(nn.Module):
    def __init__(self, in_chns=3, first_chns=(32, 64), block_chns=(128, 256, 320, 640, 1024),
                 growth_rates=(14, 16, 20, 40, 160), block_layers=(8, 16, 16, 16, 4), grmul=1.7):
        super().__init__()
        self.base = nn.ModuleList([])
        self.base.append(ConvLayer(in_chns, first_chns[0], kernel=3, stride=2))
        self.base.append(ConvLayer(first_chns[0], first_chns[1], kernel=3))
        self.base.append(nn.MaxPool2d(3, stride=2, padding=1))
        ch = first_chns[1]
        for i in range(len(block_layers)):
            blk = HarDBlock(ch, growth_rates[i], grmul, block_layers[i])
            self.base.append(blk)
            self.base.append(ConvLayer(blk.out_channels, block_chns[i], kernel=1))
            ch = block_chns[i]
            if DOWNSAMPLE[i] == 1:
                self.base.append(nn.MaxPool2d(2, stride=2))

    def forward(self, x):
        out_branch = []
        for i in range(len(self.base)):
            x = self.base[i](x)
            if i in (4, 9, 12, 15):
                out_branch.append(x)
        return out_branch


class BasicConv2d(nn.Module):
    def __init__(self, in_planes, out_planes, kernel_size, stride=1, padding=0, dilation=1):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_planes)

    def forward(self, x):
        return self.bn(self.conv(x))  # no ReLU, as the reference


class RFB_modified(nn.Module):
    def __init__(self, in_channel, out_channel):
        super().__init__()
        c = out_channel
        self.branch0 = nn.Sequential(BasicConv2d(in_channel, c, 1))
        branches = []
        for k, d in ((3, 3), (5, 5), (7, 7)):
            branches.append(nn.Sequential(
                BasicConv2d(in_channel, c, 1),
                BasicConv2d(c, c, kernel_size=(1, k), padding=(0, k // 2)),
                BasicConv2d(c, c, kernel_size=(k, 1), padding=(k // 2, 0)),
                BasicConv2d(c, c, 3, padding=d, dilation=d)))
        self.branch1, self.branch2, self.branch3 = branches
        self.conv_cat = BasicConv2d(4 * c, c, 3, padding=1)
        self.conv_res = BasicConv2d(in_channel, c, 1)

    def forward(self, x):
        x_cat = self.conv_cat(torch.cat((self.branch0(x), self.branch1(x), self.branch2(x),
                                         self.branch3(x)), 1))
        return F.relu(x_cat + self.conv_res(x))


class aggregation(nn.Module):
    def __init__(self, channel, n_classes):
        super().__init__()
        c = channel
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.conv_upsample1 = BasicConv2d(c, c, 3, padding=1)
        self.conv_upsample2 = BasicConv2d(c, c, 3, padding=1)
        self.conv_upsample3 = BasicConv2d(c, c, 3, padding=1)
        self.conv_upsample4 = BasicConv2d(c, c, 3, padding=1)
        self.conv_upsample5 = BasicConv2d(2 * c, 2 * c, 3, padding=1)
        self.conv_concat2 = BasicConv2d(2 * c, 2 * c, 3, padding=1)
        self.conv_concat3 = BasicConv2d(3 * c, 3 * c, 3, padding=1)
        self.conv4 = BasicConv2d(3 * c, 3 * c, 3, padding=1)
        self.conv5 = nn.Conv2d(3 * c, n_classes, 1)

    def forward(self, x1, x2, x3):
        up = self.upsample
        x2_1 = self.conv_upsample1(up(x1)) * x2
        x3_1 = self.conv_upsample2(up(up(x1))) * self.conv_upsample3(up(x2)) * x3
        x2_2 = self.conv_concat2(torch.cat((x2_1, self.conv_upsample4(up(x1))), 1))
        x3_2 = self.conv_concat3(torch.cat((x3_1, self.conv_upsample5(up(x2_2))), 1))
        return self.conv5(self.conv4(x3_2))


class HarDMSEG(nn.Module):
    def __init__(self, in_chns=3, class_num=2, channel=32, **backbone):
        super().__init__()
        bb = dict(HARDNET68)
        bb.update(backbone)
        ch = bb["block_chns"]
        self.rfb2_1 = RFB_modified(ch[2], channel)
        self.rfb3_1 = RFB_modified(ch[3], channel)
        self.rfb4_1 = RFB_modified(ch[4], channel)
        self.agg1 = aggregation(channel, class_num)
        self.hardnet = HarDNet(in_chns, **bb)

    def forward(self, x):
        _, x2, x3, x4 = self.hardnet(x)
        ra5 = self.agg1(self.rfb4_1(x4), self.rfb3_1(x3), self.rfb2_1(x2))
        return F.interpolate(ra5, scale_factor=8, mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------
# SETR (JMedSeg model/transformer_seg.py, model/transformer_model.py)
# ---------------------------------------------------------------------------
class TransLayerNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-12):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(hidden_size))
        self.beta = nn.Parameter(torch.zeros(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x):
        u = x.mean(-1, keepdim=True)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        return self.gamma * ((x - u) / torch.sqrt(s + self.variance_epsilon)) + self.beta


def gelu(x):
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


class TransEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.position_embeddings = nn.Embedding(c["max_position_embeddings"], c["hidden_size"])
        self.LayerNorm = TransLayerNorm(c["hidden_size"])
        self.dropout = nn.Dropout(c["hidden_dropout_prob"])

    def forward(self, x):
        pos = torch.arange(x.shape[1]).unsqueeze(0).expand(x.shape[:2])
        return self.dropout(self.LayerNorm(x + self.position_embeddings(pos)))


class TransSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        h = c["hidden_size"]
        self.num_attention_heads = c["num_attention_heads"]
        self.attention_head_size = h // self.num_attention_heads
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.dropout = nn.Dropout(c["attention_probs_dropout_prob"])

    def split(self, x):
        return x.view(*x.shape[:-1], self.num_attention_heads, self.attention_head_size).permute(0, 2, 1, 3)

    def forward(self, x):
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
        p = self.dropout(torch.softmax(s, -1))
        y = torch.matmul(p, v).permute(0, 2, 1, 3).contiguous()
        return y.view(*y.shape[:-2], -1)


class TransSelfOutput(nn.Module):
    def __init__(self, c, cin):
        super().__init__()
        self.dense = nn.Linear(cin, c["hidden_size"])
        self.LayerNorm = TransLayerNorm(c["hidden_size"])
        self.dropout = nn.Dropout(c["hidden_dropout_prob"])

    def forward(self, x, res):
        return self.LayerNorm(self.dropout(self.dense(x)) + res)


class TransAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self = TransSelfAttention(c)
        self.output = TransSelfOutput(c, c["hidden_size"])

    def forward(self, x):
        return self.output(self.self(x), x)


class TransIntermediate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["intermediate_size"])

    def forward(self, x):
        return gelu(self.dense(x))


class TransLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = TransAttention(c)
        self.intermediate = TransIntermediate(c)
        self.output = TransSelfOutput(c, c["intermediate_size"])  # TransOutput

    def forward(self, x):
        a = self.attention(x)
        return self.output(self.intermediate(a), a)


class TransEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList([TransLayer(c) for _ in range(c["num_hidden_layers"])])

    def forward(self, x):
        for l in self.layer:
            x = l(x)
        return x


class InputDense2d(nn.Module):
    def __init__(self, c):
        super().__init__()
        p = c["patch_size"]
        self.dense = nn.Linear(p[0] * p[1] * c["in_channels"], c["hidden_size"])
        self.LayerNorm = TransLayerNorm(c["hidden_size"])

    def forward(self, x):
        return self.LayerNorm(gelu(self.dense(x)))


class TransModel2d(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = InputDense2d(c)
        self.embeddings = TransEmbeddings(c)
        self.encoder = TransEncoder(c)

    def forward(self, x):
        return self.encoder(self.embeddings(self.dense(x)))


class Encoder2D(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.bert_model = TransModel2d(c)
        sv = 2 ** c["sample_rate"]
        p = c["patch_size"]
        self.final_dense = nn.Linear(c["hidden_size"], p[0] * p[1] * c["hidden_size"] // sv ** 2)
        self.hh, self.ww = p[0] // sv, p[1] // sv

    def forward(self, x):
        b, c, h, w = x.shape
        p1, p2 = self.c["patch_size"]
        hh, ww = h // p1, w // p2
        x = x.reshape(b, c, hh, p1, ww, p2).permute(0, 2, 4, 3, 5, 1).reshape(b, hh * ww, p1 * p2 * c)
        x = self.final_dense(self.bert_model(x))
        hid = self.c["hidden_size"]
        x = x.reshape(b, hh, ww, self.hh, self.ww, hid).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, hid, hh * self.hh, ww * self.ww)


class Decoder2D(nn.Module):
    def __init__(self, in_channels, out_channels, features):
        super().__init__()
        c = in_channels
        for i, f in enumerate(features):
            setattr(self, f"decoder_{i + 1}", nn.Sequential(
                nn.Conv2d(c, f, 3, padding=1), nn.BatchNorm2d(f), nn.ReLU(),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)))
            c = f
        self.n = len(features)
        self.final_out = nn.Conv2d(features[-1], out_channels, 3, padding=1)

    def forward(self, x):
        for i in range(self.n):
            x = getattr(self, f"decoder_{i + 1}")(x)
        return self.final_out(x)


class SETRModel(nn.Module):
    def __init__(self, patch_size=(32, 32), in_channels=3, out_channels=1, hidden_size=1024,
                 num_hidden_layers=8, num_attention_heads=16, decode_features=(512, 256, 128, 64),
                 sample_rate=4, intermediate_size=1024, max_position_embeddings=512,
                 hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1):
        super().__init__()
        c = dict(patch_size=tuple(patch_size), in_channels=in_channels, hidden_size=hidden_size,
                 num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                 sample_rate=sample_rate, intermediate_size=intermediate_size,
                 max_position_embeddings=max_position_embeddings,
                 hidden_dropout_prob=hidden_dropout_prob,
                 attention_probs_dropout_prob=attention_probs_dropout_prob)
        self.encoder_2d = Encoder2D(c)
        self.decoder_2d = Decoder2D(hidden_size, out_channels, list(decode_features))

    def forward(self, x):
        return self.decoder_2d(self.encoder_2d(x))


def setr(cfg):
    """SETRModel from a medseg configuration (keys as src/setr.rs)."""
    keys = {"patch_size": "patch_size", "in_chns": "in_channels", "class_num": "out_channels",
            "hidden_size": "hidden_size", "num_hidden_layers": "num_hidden_layers",
            "num_attention_heads": "num_attention_heads", "decode_features": "decode_features",
            "sample_rate": "sample_rate", "intermediate_size": "intermediate_size",
            "max_position_embeddings": "max_position_embeddings", "dropout": "hidden_dropout_prob",
            "attention_dropout": "attention_probs_dropout_prob"}
    return SETRModel(**{keys[k]: v for k, v in cfg.items() if k in keys})


def hardmseg(cfg):
    """HarDMSEG from a medseg configuration (keys as src/hardnet_mseg.rs)."""
    return HarDMSEG(**{k: v for k, v in cfg.items() if k != "name"})


ZOO = {
    "HarDNetMSEG": lambda in_chns, class_num: HarDMSEG(in_chns=in_chns, class_num=class_num),
    "SETR": lambda in_chns, class_num: SETRModel(in_channels=in_chns, out_channels=class_num),
}


HARD_TINY = {"in_chns": 2, "class_num": 3, "channel": 6, "first_chns": [8, 12],
             "block_chns": [16, 16, 20, 24, 28], "growth_rates": [4, 4, 6, 6, 8],
             "block_layers": [2, 4, 3, 4, 2], "grmul": 1.7}
HARD_TINY_SHAPE = [1, 2, 64, 96]
HARD_DEFAULT = {"in_chns": 3, "class_num": 2}
SETR_TINY = {"in_chns": 2, "class_num": 3, "patch_size": [16, 16], "hidden_size": 16,
             "num_hidden_layers": 2, "num_attention_heads": 2, "decode_features": [8, 8, 6],
             "sample_rate": 3, "intermediate_size": 24, "max_position_embeddings": 16,
             "dropout": 0.0, "attention_dropout": 0.0}
SETR_TINY_SHAPE = [2, 2, 32, 48]
SETR_DEFAULT = {"in_chns": 3, "class_num": 1}


def main():
    from fixture_utils import (OUT, calibrate, n_params, pattern, randomise, running_stats,
                               save_json, save_safetensors, state_dict_f16)
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2468)
    ref = {"torch_version": torch.__version__}

    # HarDNet-MSEG
    default = hardmseg(HARD_DEFAULT)
    bb = n_params(default.hardnet)
    net = hardmseg(HARD_TINY)
    randomise(net, gen)
    x = torch.from_numpy(pattern(HARD_TINY_SHAPE))
    calibrate(net, x)
    sd = state_dict_f16(net)
    net.eval()
    with torch.no_grad():
        y = net(x)
        feats = net.hardnet(x)
    net.train()
    with torch.no_grad():
        yt = net(x)
    io = {"eval": y.numpy(), "train": yt.numpy()}
    io.update(running_stats(net))
    save_safetensors(os.path.join(OUT, "hardnet_mseg_tiny.weights.safetensors"), sd)
    save_safetensors(os.path.join(OUT, "hardnet_mseg_tiny.io.safetensors"), io)
    ref["hardnet_mseg"] = {
        "reference": "JMedSeg model/HarDNet.py HarDMSEG (after github.com/james128333/HarDNet-MSEG)",
        "tiny": {"config": HARD_TINY, "input_shape": HARD_TINY_SHAPE, "num_parameters": n_params(net),
                 "num_tensors": len(sd), "feature_shapes": [list(f.shape) for f in feats]},
        "default": {"config": HARD_DEFAULT, "num_parameters": n_params(default),
                    "num_parameters_hardnet68": bb},
    }
    print("HarDNet-MSEG tiny", n_params(net), "default", n_params(default), "backbone", bb,
          "eval max", float(y.abs().max()), "train max", float(yt.abs().max()))

    # SETR
    default = setr(SETR_DEFAULT)
    net = setr(SETR_TINY)
    randomise(net, gen)
    x = torch.from_numpy(pattern(SETR_TINY_SHAPE))
    calibrate(net, x)
    sd = state_dict_f16(net)
    net.eval()
    with torch.no_grad():
        y = net(x)
    net.train()
    with torch.no_grad():
        yt = net(x)
    io = {"eval": y.numpy(), "train": yt.numpy()}
    io.update(running_stats(net))
    save_safetensors(os.path.join(OUT, "setr_tiny.weights.safetensors"), sd)
    save_safetensors(os.path.join(OUT, "setr_tiny.io.safetensors"), io)
    ref["setr"] = {
        "reference": "JMedSeg model/transformer_seg.py SETRModel (+ transformer_model.py)",
        "tiny": {"config": SETR_TINY, "input_shape": SETR_TINY_SHAPE, "num_parameters": n_params(net),
                 "num_tensors": len(sd)},
        "default": {"config": SETR_DEFAULT, "num_parameters": n_params(default),
                    "num_parameters_position_embeddings": 512 * 1024},
    }
    print("SETR tiny", n_params(net), "default", n_params(default),
          "eval max", float(y.abs().max()), "train max", float(yt.abs().max()))
    save_json(os.path.join(OUT, "hardnet_setr_reference.json"), ref)


if __name__ == "__main__":
    main()
