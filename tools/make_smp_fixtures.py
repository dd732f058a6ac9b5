"""Fixtures for tests/pspnet.rs and tests/deeplabv3plus.rs: PSPNet and
DeepLabV3+ built by segmentation_models_pytorch (smp) itself, so module and
parameter names are smp's.

smp is installed without its optional dependencies:
    .venv/bin/pip install --no-deps segmentation-models-pytorch
Those it imports but these networks do not use (PIL, tqdm, timm,
huggingface_hub) are stubbed below. torchvision is replaced by a
transcription of its `models.resnet` (ResNet, BasicBlock; stage widths made
configurable for the tiny fixtures); smp's encoder (`ResNetEncoder`,
`set_in_channels`, `make_dilated`), decoders and heads run unchanged.

Writes into crates/medseg-nets/tests/fixtures:
  pspnet_tiny.{weights,io}.safetensors, deeplabv3plus_tiny.{weights,io}.safetensors
      weights (F16-exact values), `eval` and `train` outputs, BatchNorm
      running statistics after the train pass (`after_train.<bn>.running_*`)
  smp_reference.json   configs, input shapes, parameter counts (tiny and
                       default; PSPNet: smp's total and the part its output
                       depends on)
The input is `pattern(shape)` (exact in float16), recomputed by the tests.

Run: .venv/bin/python tools/make_smp_fixtures.py
"""
import importlib.abc
import importlib.machinery
import os
import sys
import types

from fixture_utils import OUT, n_params, randomise, running_stats, save_json, save_safetensors, state_dict_f16

import numpy as np
import torch
import torch.nn as nn


# ---------------------------------------------------------------------------
# torchvision.models.resnet (transcription; widths configurable)
# ---------------------------------------------------------------------------
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        idt = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            idt = self.downsample(x)
        return self.relu(out + idt)


class Bottleneck(nn.Module):  # imported by smp, unused here
    expansion = 4


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000, widths=(64, 128, 256, 512)):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], 2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], 2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)


# ---------------------------------------------------------------------------
# stubs for smp's optional imports
# ---------------------------------------------------------------------------
class _Any(type):
    def __getattr__(cls, name):
        return _Dummy


class _Dummy(metaclass=_Any):
    def __new__(cls, *a, **k):
        return object.__new__(cls)

    def __init_subclass__(cls, *a, **k):
        pass

    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        return _Dummy


class _Mod(types.ModuleType):
    __path__ = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Dummy


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    STUB = ("PIL", "tqdm", "timm", "huggingface_hub", "torchvision")

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in self.STUB:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        m = _Mod(spec.name)
        if spec.name == "torchvision.models.resnet":
            m.ResNet, m.BasicBlock, m.Bottleneck = ResNet, BasicBlock, Bottleneck
        return m

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _Finder())
import segmentation_models_pytorch as smp  # noqa: E402
from segmentation_models_pytorch.encoders import encoders as SMP_ENCODERS  # noqa: E402
from segmentation_models_pytorch.encoders.resnet import ResNetEncoder  # noqa: E402

TINY_WIDTHS = [4, 8, 8, 16]
TINY_BLOCKS = [2, 1, 2, 1]
SMP_ENCODERS["tiny_resnet"] = {
    "encoder": ResNetEncoder,
    "pretrained_settings": {},
    "params": {"out_channels": [3] + [TINY_WIDTHS[0]] + TINY_WIDTHS, "block": BasicBlock,
               "layers": TINY_BLOCKS, "widths": TINY_WIDTHS},
}


def pattern(shape):
    """Deterministic float16-exact input: ((i * 7919) mod 1021 - 510) / 256."""
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.int64)
    return (((i * 7919) % 1021 - 510) / 256.0).astype(np.float32).reshape(shape)


def calibrate(net, x):
    """Running statistics of a train pass on another input (rounded to
    float16), so that eval-mode activations are neither dead nor exploding."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    with torch.no_grad():
        net(x.flip(-1))
        for m in bns:
            m.momentum = 0.1
            m.running_mean.copy_(m.running_mean.half().float())
            m.running_var.copy_(m.running_var.half().float())


def used_names(net, x):
    """Names of the parameters the output depends on (non-zero gradient path)."""
    net.zero_grad()
    net.train()
    net(x).sum().backward()
    return {n for n, p in net.named_parameters() if p.grad is not None}


def make_case(name, net, shape, drop_prefixes=()):
    gen = torch.Generator().manual_seed(4321)
    randomise(net, gen)
    x = torch.from_numpy(pattern(shape))
    calibrate(net, x)
    with torch.no_grad():  # logits of order 1
        head = net.segmentation_head[0]
        head.weight.mul_(4.0)
        head.bias.mul_(4.0)
    sd = {k: v for k, v in state_dict_f16(net).items()
          if not k.startswith(drop_prefixes) and not k.endswith("num_batches_tracked")}
    net.eval()
    with torch.no_grad():
        y = net(x)
    io = {"eval": y.numpy()}
    net.train()
    with torch.no_grad():
        io["train"] = net(x).numpy()
    io.update({k: v for k, v in running_stats(net).items() if not k[len("after_train."):].startswith(drop_prefixes)})
    save_safetensors(os.path.join(OUT, f"{name}_tiny.weights.safetensors"), sd)
    save_safetensors(os.path.join(OUT, f"{name}_tiny.io.safetensors"), io)
    print(name, "tiny: max |eval|", float(y.abs().max()), "max |eval - train|",
          float((y - torch.from_numpy(io["train"])).abs().max()), "tensors", len(sd))
    return sd


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    ref = {"torch_version": torch.__version__, "smp_version": smp.__version__,
           "input": "((i * 7919) mod 1021 - 510) / 256"}

    # ---- PSPNet ----
    d = smp.PSPNet(encoder_name="resnet34", encoder_weights=None, in_channels=3, classes=1)
    x = torch.from_numpy(pattern([2, 3, 64, 64]))
    used = used_names(d, x)
    total = n_params(d)
    n_used = sum(p.numel() for n, p in d.named_parameters() if n in used)
    unused = sorted({n.split(".")[1] for n, _ in d.named_parameters() if n not in used})
    assert unused == ["layer3", "layer4"], unused
    ref["pspnet"] = {"default": {"config": {"in_chns": 3, "class_num": 1}, "num_parameters_smp_total": total,
                                 "num_parameters": n_used, "unused_in_smp": ["encoder.layer3", "encoder.layer4"]}}
    tiny = {"in_chns": 2, "class_num": 2, "encoder_channels": TINY_WIDTHS, "encoder_blocks": TINY_BLOCKS,
            "psp_out_channels": 8, "psp_dropout": 0.0}
    net = smp.PSPNet(encoder_name="tiny_resnet", encoder_weights=None, in_channels=2, classes=2,
                     psp_out_channels=8, psp_dropout=0.0)
    shape = [2, 2, 64, 48]
    sd = make_case("pspnet", net, shape, drop_prefixes=("encoder.layer3", "encoder.layer4"))
    n_tiny = sum(p.numel() for n, p in net.named_parameters() if n in sd)
    ref["pspnet"]["tiny"] = {"config": tiny, "input_shape": shape, "num_parameters": n_tiny, "num_tensors": len(sd)}

    # ---- DeepLabV3+ ----
    d = smp.DeepLabV3Plus(encoder_name="resnet34", encoder_weights=None, in_channels=3, classes=1)
    ref["deeplabv3plus"] = {"default": {"config": {"in_chns": 3, "class_num": 1}, "num_parameters": n_params(d)}}
    assert d.encoder.layer4[0].conv1.dilation == (2, 2) and d.encoder.layer4[0].conv1.stride == (1, 1)
    for os_, rates, sep in [(16, [1, 2, 3], True), (8, [2, 1, 3], False)]:
        tiny = {"in_chns": 2, "class_num": 2, "encoder_channels": TINY_WIDTHS, "encoder_blocks": TINY_BLOCKS,
                "encoder_output_stride": os_, "decoder_channels": 8, "decoder_atrous_rates": rates,
                "decoder_aspp_separable": sep, "decoder_aspp_dropout": 0.0}
        net = smp.DeepLabV3Plus(encoder_name="tiny_resnet", encoder_weights=None, in_channels=2, classes=2,
                                encoder_output_stride=os_, decoder_channels=8, decoder_atrous_rates=rates,
                                decoder_aspp_separable=sep, decoder_aspp_dropout=0.0)
        shape = [2, 2, 64, 48]
        case = "deeplabv3plus" if os_ == 16 else "deeplabv3plus_os8"
        sd = make_case(case, net, shape)
        ref["deeplabv3plus"]["tiny" if os_ == 16 else "tiny_os8"] = {
            "config": tiny, "input_shape": shape, "num_parameters": n_params(net), "num_tensors": len(sd)}
    save_json(os.path.join(OUT, "smp_reference.json"), ref)
    print(ref["pspnet"]["default"], ref["deeplabv3plus"]["default"])


# The zoo configurations (configs/zoo/pspnet.toml, deeplabv3plus.toml) for
# tools/torch_zoo_bench.py: smp's models with the ResNet-34 encoder.
ZOO = {
    "PSPNet": lambda in_chns, class_num: smp.PSPNet(encoder_name="resnet34", encoder_weights=None,
                                                    in_channels=in_chns, classes=class_num),
    "DeepLabV3Plus": lambda in_chns, class_num: smp.DeepLabV3Plus(encoder_name="resnet34", encoder_weights=None,
                                                                  in_channels=in_chns, classes=class_num),
}


if __name__ == "__main__":
    main()
