"""Helpers shared by the medseg-nets fixture scripts (make_pymic_weights.py,
make_multiresunet_fixtures.py, make_denseunet_fixtures.py,
make_cenet_fixtures.py, make_segnet_fixtures.py, make_ternaus_fixtures.py):
package installation, the fixtures folder, a small safetensors writer (no
extra package), float16 rounding, parameter counting, randomisation of a
network's state, torchvision's VGG feature layout, the shared input
pattern and BatchNorm calibration.

The scripts import it as `from fixture_utils import ...` (Python puts the
running script's folder, tools/, first on sys.path). Importing it pip-installs
torch and numpy into the running interpreter when they are missing.
"""
import json
import os
import struct
import subprocess
import sys


def ensure(pkg, module=None):
    """pip-installs `pkg` into the running interpreter unless `module` (default
    `pkg`) can be imported."""
    try:
        __import__(module or pkg)
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", pkg])


ensure("torch")
ensure("numpy")

import numpy as np  # noqa: E402
import torch  # noqa: E402

# crates/medseg-nets/tests/fixtures, where every script writes.
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "medseg-nets", "tests", "fixtures")

DTYPES = {np.float16: "F16", np.float32: "F32", np.int64: "I64"}


def save_safetensors(path, tensors, metadata=None):
    """Writes `tensors` (name -> numpy array; float64 stored as F32) in the
    safetensors format, names sorted, to a temporary file renamed to `path`."""
    header = {}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        if a.dtype == np.float64:
            a = a.astype(np.float32)
        b = a.tobytes()
        header[name] = {"dtype": DTYPES[a.dtype.type], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def save_json(path, obj, trailing_newline=False):
    """Writes `obj` as indented JSON with sorted keys, through a temporary file."""
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        if trailing_newline:
            f.write("\n")
    os.replace(path + ".tmp", path)


def half(a):
    """float32 arrays holding float16-representable values, stored as F16
    (lossless; checked)."""
    if a.dtype == np.float32:
        h = a.astype(np.float16)
        assert np.array_equal(h.astype(np.float32), a)
        return h
    return a


def state_dict_f16(net):
    """The state dict as numpy arrays, float tensors as F16 (see `half`)."""
    return {k: half(v.detach().cpu().numpy().copy()) for k, v in net.state_dict().items()}


def running_stats(net):
    """BatchNorm running means and variances as `after_train.<name>` arrays."""
    return {"after_train." + k: v.detach().numpy().copy() for k, v in net.state_dict().items()
            if k.endswith("running_mean") or k.endswith("running_var")}


def n_params(net):
    """Number of trainable scalars (buffers excluded)."""
    return int(sum(p.numel() for p in net.parameters()))


def randomise(net, gen):
    """Draws every parameter and BatchNorm buffer from `gen` (weights scaled by
    1/sqrt(fan-in), BatchNorm gammas near 1, running variances in [0.6, 1.4]),
    then rounds every value to float16 so the fixtures can store them as F16
    losslessly (half the size); the networks still compute in float32."""
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) * 0.8 + 0.6)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.2)
            elif t.dim() > 1:
                fan = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=gen) / np.sqrt(fan))
            elif name.endswith("weight"):  # BatchNorm gamma
                t.copy_(1.0 + 0.3 * torch.randn(t.shape, generator=gen))
            else:
                t.copy_(0.3 * torch.randn(t.shape, generator=gen))
        for name, t in net.state_dict().items():
            if t.is_floating_point():
                t.copy_(t.half().float())


def vgg_features(in_chns, widths, convs, batch_norm):
    """torchvision's `vgg.make_layers` (the `features` of `vgg11()`,
    `vgg16_bn()`, ...) written out, with `in_chns` inputs and one width and
    convolution count per block: Conv2d(3x3, padding 1) [+ BatchNorm2d] +
    ReLU per convolution, MaxPool2d(2, 2) after every block; the module
    indices (state-dict names) are torchvision's."""
    import torch.nn as nn
    layers = []
    c = in_chns
    for w, n in zip(widths, convs):
        for _ in range(n):
            layers.append(nn.Conv2d(c, w, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.ReLU(inplace=True))
            c = w
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


# torchvision's documented parameter counts of vgg11 and vgg16_bn, less their
# classifier (Linear(25088, 4096), Linear(4096, 4096), Linear(4096, 1000)).
VGG_CLASSIFIER = (25088 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
VGG11_FEATURES = 132863336 - VGG_CLASSIFIER
VGG16_BN_FEATURES = 138365992 - VGG_CLASSIFIER


def pattern(shape):
    """Deterministic float16-exact input: ((i * 7919) mod 1021 - 510) / 256."""
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.int64)
    return (((i * 7919) % 1021 - 510) / 256.0).astype(np.float32).reshape(shape)


def calibrate(net, x):
    """Sets every BatchNorm's running statistics to those of a train pass on
    `x` flipped (then rounded to float16), so that eval-mode activations of a
    deep randomised network are neither dead nor exploding; the values then
    differ from (0, 1) and from the train pass of the tests."""
    import torch.nn as nn
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one pass gives its batch statistics
    net.train()
    with torch.no_grad():
        net(x.flip(-1))
    with torch.no_grad():
        for m in bns:
            m.momentum = 0.1
            m.running_mean.copy_(m.running_mean.half().float())
            m.running_var.copy_(m.running_var.half().float())
