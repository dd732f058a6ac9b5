#!/usr/bin/env python3
"""Reference fixtures for the medseg-nets SegNet (crates/medseg-nets/src/segnet.rs)
and its pooling with indices (crates/medseg-nets/src/pooling.rs).

A PyTorch transcription of SegNet (Badrinarayanan, Kendall & Cipolla,
"SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image
Segmentation", IEEE TPAMI 2017) in the layout of the authors' Caffe model
(segnet_train.prototxt), written here from that description with the module
names of the Rust network so that state dicts load by name:
  * `encoder`: torchvision's `vgg16_bn().features` layout (fixture_utils.
    vgg_features: 3x3 Conv2d + BatchNorm2d + ReLU units, blocks of
    [2, 2, 3, 3, 3] convolutions of [64, 128, 256, 512, 512] channels, a
    MaxPool2d(2, 2) after each block), whose poolings here keep their
    indices (F.max_pool2d(..., return_indices=True));
  * `decoders.0..4` (deepest first): F.max_unpool2d by the mirrored
    block's indices to its pre-pooling size, then the block's number of
    Conv2d + BatchNorm2d + ReLU units, the last narrowing to the next
    block's width; the finest stage has one unit fewer;
  * `classifier`: 3x3 Conv2d to class_num logits (no BatchNorm, no softmax).
Differences from the paper, mirrored in the Rust network: random weights
(no ImageNet VGG16), `in_chns` inputs, configurable widths and block lengths.

Writes under crates/medseg-nets/tests/fixtures/:
  segnet_tiny.weights.safetensors  randomised state dict of a tiny SegNet
                                   (float16-representable values as F16)
  segnet_tiny.io.safetensors       `eval`, `train` (logits for the tiny
                                   input), `eval_odd` (eval logits for a
                                   45x38 input), `after_train.<bn>.running_*`
                                   and the pooling cases `pool_x`,
                                   `pool_k2_val`, `pool_k2_idx`,
                                   `pool_k3s2_val`, `pool_k3s2_idx`,
                                   `unpool_k2` (a tie-heavy input)
  segnet_reference.json            configs, input shapes, parameter counts
The inputs are `pattern(shape)` (fixture_utils; exact in float16) and, for
pooling, `pool_x` itself.

Run with the repository's virtual environment:
    .venv/bin/python tools/make_segnet_fixtures.py
"""
import os

from fixture_utils import (OUT, VGG16_BN_FEATURES, calibrate, n_params, pattern, randomise,
                           running_stats, save_json, save_safetensors, state_dict_f16, vgg_features)

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class SegNetRef(nn.Module):
    def __init__(self, in_chns, class_num, widths=(64, 128, 256, 512, 512), convs=(2, 2, 3, 3, 3)):
        super().__init__()
        self.encoder = vgg_features(in_chns, widths, convs, batch_norm=True)
        decoders = []
        for block in reversed(range(5)):
            w = widths[block]
            units = convs[block] - (1 if block == 0 else 0)
            layers = []
            for j in range(units):
                cout = widths[block - 1] if (j == units - 1 and block > 0) else w
                layers += [nn.Conv2d(w, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            decoders.append(nn.Sequential(*layers))
        self.decoders = nn.ModuleList(decoders)
        self.classifier = nn.Conv2d(widths[0], class_num, 3, padding=1)

    def forward(self, x):
        pools = []
        for m in self.encoder:
            if isinstance(m, nn.MaxPool2d):
                size = x.shape[-2:]
                x, idx = F.max_pool2d(x, 2, 2, return_indices=True)
                pools.append((idx, size))
            else:
                x = m(x)
        for dec, (idx, size) in zip(self.decoders, reversed(pools)):
            x = F.max_unpool2d(x, idx, 2, 2, output_size=size)
            x = dec(x)
        return self.classifier(x)


TINY = {"in_chns": 2, "class_num": 3, "feature_chns": [4, 8, 8, 16, 16], "block_convs": [2, 1, 2, 1, 2]}
TINY_SHAPE = [1, 2, 64, 64]
ODD_SHAPE = [1, 2, 45, 38]
DEFAULT = {"in_chns": 3, "class_num": 2}


def build(cfg):
    return SegNetRef(cfg["in_chns"], cfg["class_num"], cfg.get("feature_chns", (64, 128, 256, 512, 512)),
                     cfg.get("block_convs", (2, 2, 3, 3, 3)))


def pooling_cases(gen):
    """A tie-heavy input (values in {0, 1, 2}) pooled by PyTorch."""
    x = torch.randint(0, 3, (2, 3, 7, 9), generator=gen).float()
    x[0, 0] = 1.0  # a plane of equal values: every window ties
    v2, i2 = F.max_pool2d(x, 2, 2, return_indices=True)
    v3, i3 = F.max_pool2d(x, 3, 2, return_indices=True)
    u2 = F.max_unpool2d(v2, i2, 2, 2, output_size=x.shape[-2:])
    return {"pool_x": x.numpy(), "pool_k2_val": v2.numpy(), "pool_k2_idx": i2.numpy(),
            "pool_k3s2_val": v3.numpy(), "pool_k3s2_idx": i3.numpy(), "unpool_k2": u2.numpy()}


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2017)

    default = build(DEFAULT)
    enc = sum(p.numel() for n, p in default.named_parameters() if n.startswith("encoder."))
    assert enc == VGG16_BN_FEATURES, (enc, VGG16_BN_FEATURES)

    net = build(TINY)
    randomise(net, gen)
    x = torch.from_numpy(pattern(TINY_SHAPE))
    calibrate(net, x)
    assert torch.equal(x.half().float(), x)
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
    io.update(pooling_cases(gen))
    save_safetensors(os.path.join(OUT, "segnet_tiny.weights.safetensors"), sd)
    save_safetensors(os.path.join(OUT, "segnet_tiny.io.safetensors"), io)
    reference = {
        "torch_version": torch.__version__,
        "reference": "Badrinarayanan et al. 2017, SegNet (Caffe segnet_train.prototxt layout), "
                     "encoder = torchvision vgg16_bn().features layout; logits",
        "tiny": {"config": TINY, "input_shape": TINY_SHAPE, "odd_input_shape": ODD_SHAPE,
                 "input": "((i * 7919) mod 1021 - 510) / 256",
                 "num_parameters": n_params(net), "num_tensors": len(sd)},
        "default": {"config": DEFAULT, "num_parameters": n_params(default),
                    "num_parameters_vgg16_bn_encoder": enc},
    }
    save_json(os.path.join(OUT, "segnet_reference.json"), reference)
    print("tiny", n_params(net), "params, output", list(y.shape), "max |eval|", float(y.abs().max()),
          "max |train|", float(yt.abs().max()), "max |eval - train|", float((y - yt).abs().max()))
    print("default", n_params(default), "params (encoder", enc, ")")


# The zoo configuration (configs/zoo/segnet.toml) for tools/torch_zoo_bench.py.
ZOO = {"SegNet": lambda in_chns, class_num: build({"in_chns": in_chns, "class_num": class_num})}


if __name__ == "__main__":
    main()
