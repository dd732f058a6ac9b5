#!/usr/bin/env python3
"""Reference fixtures for the medseg-nets TransUNet (crates/medseg-nets/src/transunet/)
and its ResNetV2 backbone (crates/medseg-nets/src/backbones/resnetv2.rs).

TransUNet (Chen et al., "TransUNet: Transformers Make Strong Encoders for
Medical Image Segmentation", 2021), transcribed below from the authors' code
(github Beckschen/TransUNet, networks/vit_seg_modeling.py,
networks/vit_seg_modeling_resnet_skip.py and networks/vit_seg_configs.py; the
same files are copied in JMedSeg model/TransUNet/) with the authors' module
and parameter names, so that state dicts load by name:
  * `transformer.embeddings.hybrid_model`: ResNetV2 (`root.conv` StdConv2d
    7x7/2, `root.gn` GroupNorm(32, eps 1e-6), ReLU, then MaxPool2d(3, 2) in
    the forward; `body.block1..3.unitN` pre-activation bottlenecks of
    weight-standardised convolutions and GroupNorms, `downsample` +
    `gn_proj` on the first unit of each block); skips zero-padded to H/4,
    H/8;
  * `transformer.embeddings.patch_embeddings` (a Conv2d of kernel and stride
    `img // 16 // grid` = 1 on the 1/16 map, or 16 on the image without the
    ResNet), `position_embeddings`, dropout;
  * `transformer.encoder.layer.N`: `attention_norm`, `attn.query/key/value/out`,
    `ffn_norm`, `ffn.fc1/fc2` (exact GELU), LayerNorm eps 1e-6;
    `transformer.encoder.encoder_norm`;
  * `decoder.conv_more` (3x3 Conv + BatchNorm + ReLU to 512 channels),
    `decoder.blocks.0..3` (bilinear x2 with aligned corners, concatenated
    skip, two Conv + BatchNorm + ReLU), `segmentation_head.0` (3x3 Conv);
  * a one-channel input is repeated to three channels.
Two knobs that the authors hard-code are arguments here, with the authors'
values as defaults, so that the fixtures can be tiny: the GroupNorm group
count (`gn_groups`, 32) and `head_channels` (512). ml_collections is
replaced by a small attribute dictionary (`Cfg`).

`python tools/make_transunet_fixtures.py --check-authors DIR` (DIR holding the
authors' vit_seg_modeling.py, vit_seg_modeling_resnet_skip.py and
vit_seg_configs.py) also imports the authors' modules (ml_collections and
scipy stubbed) and checks that their default R50-ViT-B_16 and ViT-B_16 have
this transcription's parameter names and shapes, and the same output for the
same weights.

Writes under crates/medseg-nets/tests/fixtures/:
  transunet_r50_tiny.weights.safetensors  randomised state dict of a tiny
                                          R50-ViT TransUNet (F16-exact values)
  transunet_r50_tiny.io.safetensors       `eval`, `train` logits for the input,
                                          `after_train.<bn>.running_*`,
                                          `feat.1`, `feat.3` (the ResNetV2's
                                          padded 1/4 skip and 1/16 output)
  transunet_vit_tiny.weights.safetensors  the same for a tiny pure-ViT
  transunet_vit_tiny.io.safetensors       TransUNet (no ResNet, n_skip 0)
  transunet_reference.json                configs, shapes, parameter counts
The inputs are `pattern(shape)` (fixture_utils; exact in float16).

Run from the repository root with the repository's virtual environment:
    .venv/bin/python tools/make_transunet_fixtures.py
"""
import copy
import math
import os
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn import Conv2d, Dropout, LayerNorm, Linear, Softmax
from torch.nn.modules.utils import _pair


class Cfg(dict):
    """The part of ml_collections.ConfigDict the model code uses: items as
    attributes, nested dicts as Cfg."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        for key, v in list(self.items()):
            if isinstance(v, dict) and not isinstance(v, Cfg):
                self[key] = Cfg(v)

    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError as e:
            raise AttributeError(k) from e

    def __setattr__(self, k, v):
        self[k] = Cfg(v) if isinstance(v, dict) and not isinstance(v, Cfg) else v


def get_b16_config():
    """vit_seg_configs.get_b16_config."""
    config = Cfg()
    config.patches = Cfg({"size": (16, 16)})
    config.hidden_size = 768
    config.transformer = Cfg()
    config.transformer.mlp_dim = 3072
    config.transformer.num_heads = 12
    config.transformer.num_layers = 12
    config.transformer.attention_dropout_rate = 0.0
    config.transformer.dropout_rate = 0.1
    config.classifier = "seg"
    config.representation_size = None
    config.resnet_pretrained_path = None
    config.patch_size = 16
    config.decoder_channels = (256, 128, 64, 16)
    config.n_classes = 2
    config.activation = "softmax"
    return config


def get_r50_b16_config():
    """vit_seg_configs.get_r50_b16_config."""
    config = get_b16_config()
    config.patches.grid = (16, 16)
    config.resnet = Cfg()
    config.resnet.num_layers = (3, 4, 9)
    config.resnet.width_factor = 1
    config.classifier = "seg"
    config.decoder_channels = (256, 128, 64, 16)
    config.skip_channels = [512, 256, 64, 16]
    config.n_classes = 2
    config.n_skip = 3
    config.activation = "softmax"
    return config


# ---------------------------------------------------------------------------
# vit_seg_modeling_resnet_skip.py
# ---------------------------------------------------------------------------

class StdConv2d(nn.Conv2d):

    def forward(self, x):
        w = self.weight
        v, m = torch.var_mean(w, dim=[1, 2, 3], keepdim=True, unbiased=False)
        w = (w - m) / torch.sqrt(v + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


def conv3x3(cin, cout, stride=1, groups=1, bias=False):
    return StdConv2d(cin, cout, kernel_size=3, stride=stride,
                     padding=1, bias=bias, groups=groups)


def conv1x1(cin, cout, stride=1, bias=False):
    return StdConv2d(cin, cout, kernel_size=1, stride=stride,
                     padding=0, bias=bias)


class PreActBottleneck(nn.Module):
    """Pre-activation (v2) bottleneck block."""

    def __init__(self, cin, cout=None, cmid=None, stride=1, gn_groups=32):
        super().__init__()
        cout = cout or cin
        cmid = cmid or cout // 4

        self.gn1 = nn.GroupNorm(gn_groups, cmid, eps=1e-6)
        self.conv1 = conv1x1(cin, cmid, bias=False)
        self.gn2 = nn.GroupNorm(gn_groups, cmid, eps=1e-6)
        self.conv2 = conv3x3(cmid, cmid, stride, bias=False)
        self.gn3 = nn.GroupNorm(gn_groups, cout, eps=1e-6)
        self.conv3 = conv1x1(cmid, cout, bias=False)
        self.relu = nn.ReLU(inplace=True)

        if (stride != 1 or cin != cout):
            self.downsample = conv1x1(cin, cout, stride, bias=False)
            self.gn_proj = nn.GroupNorm(cout, cout)

    def forward(self, x):
        residual = x
        if hasattr(self, 'downsample'):
            residual = self.downsample(x)
            residual = self.gn_proj(residual)
        y = self.relu(self.gn1(self.conv1(x)))
        y = self.relu(self.gn2(self.conv2(y)))
        y = self.gn3(self.conv3(y))
        y = self.relu(residual + y)
        return y


class ResNetV2(nn.Module):
    """Implementation of Pre-activation (v2) ResNet mode."""

    def __init__(self, block_units, width_factor, gn_groups=32):
        super().__init__()
        width = int(64 * width_factor)
        self.width = width
        g = gn_groups

        self.root = nn.Sequential(OrderedDict([
            ('conv', StdConv2d(3, width, kernel_size=7, stride=2, bias=False, padding=3)),
            ('gn', nn.GroupNorm(g, width, eps=1e-6)),
            ('relu', nn.ReLU(inplace=True)),
        ]))

        self.body = nn.Sequential(OrderedDict([
            ('block1', nn.Sequential(OrderedDict(
                [('unit1', PreActBottleneck(cin=width, cout=width * 4, cmid=width, gn_groups=g))] +
                [(f'unit{i:d}', PreActBottleneck(cin=width * 4, cout=width * 4, cmid=width, gn_groups=g))
                 for i in range(2, block_units[0] + 1)],
            ))),
            ('block2', nn.Sequential(OrderedDict(
                [('unit1', PreActBottleneck(cin=width * 4, cout=width * 8, cmid=width * 2, stride=2, gn_groups=g))] +
                [(f'unit{i:d}', PreActBottleneck(cin=width * 8, cout=width * 8, cmid=width * 2, gn_groups=g))
                 for i in range(2, block_units[1] + 1)],
            ))),
            ('block3', nn.Sequential(OrderedDict(
                [('unit1', PreActBottleneck(cin=width * 8, cout=width * 16, cmid=width * 4, stride=2, gn_groups=g))] +
                [(f'unit{i:d}', PreActBottleneck(cin=width * 16, cout=width * 16, cmid=width * 4, gn_groups=g))
                 for i in range(2, block_units[2] + 1)],
            ))),
        ]))

    def forward(self, x):
        features = []
        b, c, in_size, _ = x.size()
        x = self.root(x)
        features.append(x)
        x = nn.MaxPool2d(kernel_size=3, stride=2, padding=0)(x)
        for i in range(len(self.body) - 1):
            x = self.body[i](x)
            right_size = int(in_size / 4 / (i + 1))
            if x.size()[2] != right_size:
                pad = right_size - x.size()[2]
                assert pad < 3 and pad > 0, "x {} should {}".format(x.size(), right_size)
                feat = torch.zeros((b, x.size()[1], right_size, right_size), device=x.device)
                feat[:, :, 0:x.size()[2], 0:x.size()[3]] = x[:]
            else:
                feat = x
            features.append(feat)
        x = self.body[-1](x)
        return x, features[::-1]


# ---------------------------------------------------------------------------
# vit_seg_modeling.py
# ---------------------------------------------------------------------------

ACT2FN = {"gelu": torch.nn.functional.gelu, "relu": torch.nn.functional.relu}


class Attention(nn.Module):
    def __init__(self, config, vis):
        super(Attention, self).__init__()
        self.vis = vis
        self.num_attention_heads = config.transformer["num_heads"]
        self.attention_head_size = int(config.hidden_size / self.num_attention_heads)
        self.all_head_size = self.num_attention_heads * self.attention_head_size

        self.query = Linear(config.hidden_size, self.all_head_size)
        self.key = Linear(config.hidden_size, self.all_head_size)
        self.value = Linear(config.hidden_size, self.all_head_size)

        self.out = Linear(config.hidden_size, config.hidden_size)
        self.attn_dropout = Dropout(config.transformer["attention_dropout_rate"])
        self.proj_dropout = Dropout(config.transformer["attention_dropout_rate"])

        self.softmax = Softmax(dim=-1)

    def transpose_for_scores(self, x):
        new_x_shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
        x = x.view(*new_x_shape)
        return x.permute(0, 2, 1, 3)

    def forward(self, hidden_states):
        query_layer = self.transpose_for_scores(self.query(hidden_states))
        key_layer = self.transpose_for_scores(self.key(hidden_states))
        value_layer = self.transpose_for_scores(self.value(hidden_states))

        attention_scores = torch.matmul(query_layer, key_layer.transpose(-1, -2))
        attention_scores = attention_scores / math.sqrt(self.attention_head_size)
        attention_probs = self.softmax(attention_scores)
        weights = attention_probs if self.vis else None
        attention_probs = self.attn_dropout(attention_probs)

        context_layer = torch.matmul(attention_probs, value_layer)
        context_layer = context_layer.permute(0, 2, 1, 3).contiguous()
        new_context_layer_shape = context_layer.size()[:-2] + (self.all_head_size,)
        context_layer = context_layer.view(*new_context_layer_shape)
        attention_output = self.out(context_layer)
        attention_output = self.proj_dropout(attention_output)
        return attention_output, weights


class Mlp(nn.Module):
    def __init__(self, config):
        super(Mlp, self).__init__()
        self.fc1 = Linear(config.hidden_size, config.transformer["mlp_dim"])
        self.fc2 = Linear(config.transformer["mlp_dim"], config.hidden_size)
        self.act_fn = ACT2FN["gelu"]
        self.dropout = Dropout(config.transformer["dropout_rate"])
        nn.init.xavier_uniform_(self.fc1.weight)
        nn.init.xavier_uniform_(self.fc2.weight)
        nn.init.normal_(self.fc1.bias, std=1e-6)
        nn.init.normal_(self.fc2.bias, std=1e-6)

    def forward(self, x):
        x = self.fc1(x)
        x = self.act_fn(x)
        x = self.dropout(x)
        x = self.fc2(x)
        x = self.dropout(x)
        return x


class Embeddings(nn.Module):
    def __init__(self, config, img_size, in_channels=3):
        super(Embeddings, self).__init__()
        self.hybrid = None
        self.config = config
        img_size = _pair(img_size)

        if config.patches.get("grid") is not None:   # ResNet
            grid_size = config.patches["grid"]
            patch_size = (img_size[0] // 16 // grid_size[0], img_size[1] // 16 // grid_size[1])
            patch_size_real = (patch_size[0] * 16, patch_size[1] * 16)
            n_patches = (img_size[0] // patch_size_real[0]) * (img_size[1] // patch_size_real[1])
            self.hybrid = True
        else:
            patch_size = _pair(config.patches["size"])
            n_patches = (img_size[0] // patch_size[0]) * (img_size[1] // patch_size[1])
            self.hybrid = False

        if self.hybrid:
            self.hybrid_model = ResNetV2(block_units=config.resnet.num_layers,
                                         width_factor=config.resnet.width_factor,
                                         gn_groups=config.get("gn_groups", 32))
            in_channels = self.hybrid_model.width * 16
        self.patch_embeddings = Conv2d(in_channels=in_channels,
                                       out_channels=config.hidden_size,
                                       kernel_size=patch_size,
                                       stride=patch_size)
        self.position_embeddings = nn.Parameter(torch.zeros(1, n_patches, config.hidden_size))
        self.dropout = Dropout(config.transformer["dropout_rate"])

    def forward(self, x):
        if self.hybrid:
            x, features = self.hybrid_model(x)
        else:
            features = None
        x = self.patch_embeddings(x)
        x = x.flatten(2)
        x = x.transpose(-1, -2)
        embeddings = x + self.position_embeddings
        embeddings = self.dropout(embeddings)
        return embeddings, features


class Block(nn.Module):
    def __init__(self, config, vis):
        super(Block, self).__init__()
        self.hidden_size = config.hidden_size
        self.attention_norm = LayerNorm(config.hidden_size, eps=1e-6)
        self.ffn_norm = LayerNorm(config.hidden_size, eps=1e-6)
        self.ffn = Mlp(config)
        self.attn = Attention(config, vis)

    def forward(self, x):
        h = x
        x = self.attention_norm(x)
        x, weights = self.attn(x)
        x = x + h
        h = x
        x = self.ffn_norm(x)
        x = self.ffn(x)
        x = x + h
        return x, weights


class Encoder(nn.Module):
    def __init__(self, config, vis):
        super(Encoder, self).__init__()
        self.vis = vis
        self.layer = nn.ModuleList()
        self.encoder_norm = LayerNorm(config.hidden_size, eps=1e-6)
        for _ in range(config.transformer["num_layers"]):
            layer = Block(config, vis)
            self.layer.append(copy.deepcopy(layer))

    def forward(self, hidden_states):
        attn_weights = []
        for layer_block in self.layer:
            hidden_states, weights = layer_block(hidden_states)
            if self.vis:
                attn_weights.append(weights)
        encoded = self.encoder_norm(hidden_states)
        return encoded, attn_weights


class Transformer(nn.Module):
    def __init__(self, config, img_size, vis):
        super(Transformer, self).__init__()
        self.embeddings = Embeddings(config, img_size=img_size)
        self.encoder = Encoder(config, vis)

    def forward(self, input_ids):
        embedding_output, features = self.embeddings(input_ids)
        encoded, attn_weights = self.encoder(embedding_output)
        return encoded, attn_weights, features


class Conv2dReLU(nn.Sequential):
    def __init__(self, in_channels, out_channels, kernel_size, padding=0, stride=1, use_batchnorm=True):
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         bias=not (use_batchnorm))
        relu = nn.ReLU(inplace=True)
        bn = nn.BatchNorm2d(out_channels)
        super(Conv2dReLU, self).__init__(conv, bn, relu)


class DecoderBlock(nn.Module):
    def __init__(self, in_channels, out_channels, skip_channels=0, use_batchnorm=True):
        super().__init__()
        self.conv1 = Conv2dReLU(in_channels + skip_channels, out_channels, kernel_size=3, padding=1,
                                use_batchnorm=use_batchnorm)
        self.conv2 = Conv2dReLU(out_channels, out_channels, kernel_size=3, padding=1,
                                use_batchnorm=use_batchnorm)
        self.up = nn.UpsamplingBilinear2d(scale_factor=2)

    def forward(self, x, skip=None):
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        x = self.conv1(x)
        x = self.conv2(x)
        return x


class SegmentationHead(nn.Sequential):
    def __init__(self, in_channels, out_channels, kernel_size=3, upsampling=1):
        conv2d = nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, padding=kernel_size // 2)
        upsampling = nn.UpsamplingBilinear2d(scale_factor=upsampling) if upsampling > 1 else nn.Identity()
        super().__init__(conv2d, upsampling)


class DecoderCup(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        head_channels = config.get("head_channels", 512)
        self.conv_more = Conv2dReLU(config.hidden_size, head_channels, kernel_size=3, padding=1,
                                    use_batchnorm=True)
        decoder_channels = config.decoder_channels
        in_channels = [head_channels] + list(decoder_channels[:-1])
        out_channels = decoder_channels

        if self.config.n_skip != 0:
            skip_channels = self.config.skip_channels
            for i in range(4 - self.config.n_skip):
                skip_channels[3 - i] = 0
        else:
            skip_channels = [0, 0, 0, 0]

        blocks = [DecoderBlock(in_ch, out_ch, sk_ch)
                  for in_ch, out_ch, sk_ch in zip(in_channels, out_channels, skip_channels)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, hidden_states, features=None):
        B, n_patch, hidden = hidden_states.size()
        h, w = int(np.sqrt(n_patch)), int(np.sqrt(n_patch))
        x = hidden_states.permute(0, 2, 1)
        x = x.contiguous().view(B, hidden, h, w)
        x = self.conv_more(x)
        for i, decoder_block in enumerate(self.blocks):
            if features is not None:
                skip = features[i] if (i < self.config.n_skip) else None
            else:
                skip = None
            x = decoder_block(x, skip=skip)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, config, img_size=224, num_classes=21843, zero_head=False, vis=False):
        super(VisionTransformer, self).__init__()
        self.num_classes = num_classes
        self.zero_head = zero_head
        self.classifier = config.classifier
        self.transformer = Transformer(config, img_size, vis)
        self.decoder = DecoderCup(config)
        self.segmentation_head = SegmentationHead(in_channels=config['decoder_channels'][-1],
                                                  out_channels=config['n_classes'], kernel_size=3)
        self.config = config

    def forward(self, x):
        if x.size()[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x, attn_weights, features = self.transformer(x)
        x = self.decoder(x, features)
        logits = self.segmentation_head(x)
        return logits


# ---------------------------------------------------------------------------
# Configurations (train.py's way: n_classes, n_skip and the grid set from the
# command line; the grid is img_size / 16, so the patch embedding is 1x1)
# ---------------------------------------------------------------------------

def r50_config(img_size, class_num, n_skip=3):
    cfg = get_r50_b16_config()
    cfg.n_classes = class_num
    cfg.n_skip = n_skip
    cfg.patches.grid = (img_size // 16, img_size // 16)
    return cfg


def vit_config(class_num):
    cfg = get_b16_config()
    cfg.n_classes = class_num
    cfg.n_skip = 0
    return cfg


def build_r50(img_size, class_num, n_skip=3):
    return VisionTransformer(r50_config(img_size, class_num, n_skip), img_size=img_size,
                             num_classes=class_num)


def build_vit(img_size, class_num):
    return VisionTransformer(vit_config(class_num), img_size=img_size, num_classes=class_num)


def zoo_transunet(in_chns, class_num):
    """configs/zoo/transunet.toml: R50-ViT-B_16 at img_size 96 (6x6 tokens);
    a one-channel input is repeated to three channels (as the authors do)."""
    assert in_chns in (1, 3), "the authors' TransUNet takes 1 or 3 input channels"
    return build_r50(96, class_num)


ZOO = {"TransUNet": zoo_transunet}


# ---------------------------------------------------------------------------
# Tiny configurations of the fixtures (the Rust config keys alongside)
# ---------------------------------------------------------------------------

R50_TINY = {
    "in_chns": 1, "class_num": 3, "img_size": 64, "hybrid": True,
    "resnet_units": [1, 2, 1], "resnet_width": 8, "gn_groups": 4,
    "hidden_size": 32, "mlp_dim": 64, "num_heads": 4, "num_layers": 2,
    "head_channels": 16, "decoder_channels": [16, 16, 8, 8], "n_skip": 3,
    "dropout_rate": 0.0,
}
R50_SHAPE = [2, 1, 64, 64]

VIT_TINY = {
    "in_chns": 3, "class_num": 2, "img_size": 32, "hybrid": False,
    "hidden_size": 16, "mlp_dim": 32, "num_heads": 2, "num_layers": 2,
    "head_channels": 16, "decoder_channels": [16, 8, 8, 4],
    "dropout_rate": 0.0,
}
VIT_SHAPE = [2, 3, 32, 32]


def torch_config(t):
    """The authors' configuration object for a tiny configuration `t`."""
    if t["hybrid"]:
        cfg = r50_config(t["img_size"], t["class_num"], t["n_skip"])
        cfg.resnet.num_layers = tuple(t["resnet_units"])
        cfg.resnet.width_factor = t["resnet_width"] / 64
        cfg.gn_groups = t["gn_groups"]
        w = t["resnet_width"]
        cfg.skip_channels = [8 * w, 4 * w, w, 16]
    else:
        cfg = vit_config(t["class_num"])
    cfg.hidden_size = t["hidden_size"]
    cfg.transformer.mlp_dim = t["mlp_dim"]
    cfg.transformer.num_heads = t["num_heads"]
    cfg.transformer.num_layers = t["num_layers"]
    cfg.transformer.dropout_rate = t["dropout_rate"]
    cfg.head_channels = t["head_channels"]
    cfg.decoder_channels = tuple(t["decoder_channels"])
    return cfg


def check_authors(folder):
    """The authors' modules (imported from `folder` with ml_collections and
    scipy stubbed) against this transcription: names, shapes and outputs."""
    import importlib
    import types

    from fixture_utils import n_params, pattern

    mlc = types.ModuleType("ml_collections")
    mlc.ConfigDict = Cfg
    sys.modules.setdefault("ml_collections", mlc)
    if "scipy" not in sys.modules:
        scipy = types.ModuleType("scipy")
        scipy.ndimage = types.ModuleType("scipy.ndimage")
        sys.modules["scipy"] = scipy
        sys.modules["scipy.ndimage"] = scipy.ndimage
    pkg = types.ModuleType("authors")
    pkg.__path__ = [folder]
    sys.modules["authors"] = pkg
    m = importlib.import_module("authors.vit_seg_modeling")
    cases = []
    cfg = m.CONFIGS["R50-ViT-B_16"]
    cfg.n_classes, cfg.n_skip, cfg.patches.grid = 9, 3, (14, 14)
    cases.append((m.VisionTransformer(cfg, img_size=224, num_classes=9), build_r50(224, 9), [1, 1, 224, 224]))
    cfg = m.CONFIGS["ViT-B_16"]
    cfg.n_classes, cfg.n_skip = 9, 0
    cases.append((m.VisionTransformer(cfg, img_size=224, num_classes=9), build_vit(224, 9), [1, 3, 224, 224]))
    for theirs, ours, shape in cases:
        a, b = theirs.state_dict(), ours.state_dict()
        assert [(k, tuple(v.shape)) for k, v in a.items()] == [(k, tuple(v.shape)) for k, v in b.items()]
        ours.load_state_dict(a)
        theirs.eval()
        ours.eval()
        x = torch.from_numpy(pattern(shape))
        with torch.no_grad():
            d = float((theirs(x) - ours(x)).abs().max())
        assert d == 0.0, d
        print("authors' code: same", len(a), "tensors,", n_params(theirs), "parameters, same output")


def main():
    from fixture_utils import (OUT, calibrate, n_params, pattern, randomise, running_stats,
                               save_json, save_safetensors, state_dict_f16)
    if "--check-authors" in sys.argv:
        check_authors(sys.argv[sys.argv.index("--check-authors") + 1])

    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2021)
    reference = {
        "torch_version": torch.__version__,
        "reference": "Chen et al. 2021, TransUNet: the authors' networks/vit_seg_modeling.py and "
                     "vit_seg_modeling_resnet_skip.py (github Beckschen/TransUNet) transcribed; logits",
        "input": "((i * 7919) mod 1021 - 510) / 256",
    }
    for case, tiny, shape in [("transunet_r50_tiny", R50_TINY, R50_SHAPE),
                              ("transunet_vit_tiny", VIT_TINY, VIT_SHAPE)]:
        net = VisionTransformer(torch_config(tiny), img_size=tiny["img_size"], num_classes=tiny["class_num"])
        randomise(net, gen)
        x = torch.from_numpy(pattern(shape))
        calibrate(net, x)
        sd = state_dict_f16(net)
        net.eval()
        io = {}
        with torch.no_grad():
            y = net(x)
            if tiny["hybrid"]:
                xr = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
                last, feats = net.transformer.embeddings.hybrid_model(xr)
                # the zero-padded 1/4 skip and the 1/16 output (finest first: 0 root, 1 block1,
                # 2 block2, 3 block3)
                io["feat.1"] = feats[1].numpy()
                io["feat.3"] = last.numpy()
        io["eval"] = y.numpy()
        net.train()
        with torch.no_grad():
            yt = net(x)
        io["train"] = yt.numpy()
        io.update(running_stats(net))
        save_safetensors(os.path.join(OUT, f"{case}.weights.safetensors"), sd)
        save_safetensors(os.path.join(OUT, f"{case}.io.safetensors"), io)
        reference[case] = {"config": tiny, "input_shape": shape, "num_parameters": n_params(net),
                           "num_tensors": len(sd)}
        print(case, n_params(net), "params, output", list(y.shape), "max |eval|", float(y.abs().max()),
              "max |eval - train|", float((y - yt).abs().max()))

    defaults = {}
    for key, build, args in [
        ("r50_224_9", build_r50, (224, 9)),
        ("r50_224_2", build_r50, (224, 2)),
        ("r50_96_4", build_r50, (96, 4)),
        ("r50_224_9_skip0", lambda s, c: build_r50(s, c, 0), (224, 9)),
        ("vit_224_9", build_vit, (224, 9)),
    ]:
        net = build(*args)
        hybrid = net.transformer.embeddings.hybrid_model if key.startswith("r50") else None
        defaults[key] = {"img_size": args[0], "class_num": args[1], "num_parameters": n_params(net)}
        if hybrid is not None:
            defaults[key]["num_parameters_resnetv2"] = n_params(hybrid)
        print(key, defaults[key])
    reference["default"] = defaults
    save_json(os.path.join(OUT, "transunet_reference.json"), reference)


if __name__ == "__main__":
    main()
