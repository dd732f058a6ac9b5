"""PyTorch reference for `cargo xtask bench unet` and `bench unet3d`.

PyMIC 0.6.2's UNet (pymic.net.cnn.unet, 2D or 3D: ConvBlock = conv3x3 + BN +
LeakyReLU + dropout + conv3x3 + BN + LeakyReLU, max-pool down, up-sampling by
1x1 conv + bi/tri-linear (align_corners=True) or transposed conv k2 s2, 1x1
out_conv), transcribed with PyMIC's module names so that the initial weights
medseg wrote load by name. Loss: PyMIC's Dice (per class over the batch,
smoothing 1e-5) and cross-entropy, combined with the config's weights.
Optimiser: the config's `[training]` (medseg's `adam` adds L2 to the gradient,
as torch.optim.Adam's weight_decay; `adamw` is torch.optim.AdamW).

One measurement per process (the xtask runs it once per measurement and
layout); it prints protocol lines PARAMS, LOSS_EVAL, TIME <name> <ms>,
VMHWM_KB for the xtask to parse.

    python tools/torch_unet_bench.py --spec SPEC.json --weights W.safetensors [--channels-last]
"""
import argparse
import json
import statistics
import time
import tomllib

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file


def layers(dim):
    if dim == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.ConvTranspose2d, "bilinear"
    return nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, nn.ConvTranspose3d, "trilinear"


class ConvBlock(nn.Module):
    def __init__(self, dim, cin, cout, p):
        super().__init__()
        conv, bn, _, _, _ = layers(dim)
        self.conv_conv = nn.Sequential(
            conv(cin, cout, 3, padding=1), bn(cout), nn.LeakyReLU(), nn.Dropout(p),
            conv(cout, cout, 3, padding=1), bn(cout), nn.LeakyReLU())

    def forward(self, x):
        return self.conv_conv(x)


class DownBlock(nn.Module):
    def __init__(self, dim, cin, cout, p):
        super().__init__()
        self.maxpool_conv = nn.Sequential(layers(dim)[2](2), ConvBlock(dim, cin, cout, p))

    def forward(self, x):
        return self.maxpool_conv(x)


class UpBlock(nn.Module):
    def __init__(self, dim, c1, c2, cout, p, transconv):
        super().__init__()
        conv, _, _, tconv, mode = layers(dim)
        self.transconv = transconv
        if transconv:
            self.up = tconv(c1, c2, 2, stride=2)
        else:
            self.conv1x1 = conv(c1, c2, 1)
            self.up = nn.Upsample(scale_factor=2, mode=mode, align_corners=True)
        self.conv = ConvBlock(dim, c2 * 2, cout, p)

    def forward(self, x1, x2):
        x1 = self.up(x1) if self.transconv else self.up(self.conv1x1(x1))
        return self.conv(torch.cat([x2, x1], 1))


class Encoder(nn.Module):
    def __init__(self, dim, cin, ft, dp):
        super().__init__()
        self.in_conv = ConvBlock(dim, cin, ft[0], dp[0])
        for i in range(1, 5):
            setattr(self, f"down{i}", DownBlock(dim, ft[i - 1], ft[i], dp[i]))

    def forward(self, x):
        xs = [self.in_conv(x)]
        for i in range(1, 5):
            xs.append(getattr(self, f"down{i}")(xs[-1]))
        return xs


class Decoder(nn.Module):
    def __init__(self, dim, ft, dp, k, transconv):
        super().__init__()
        for i in range(1, 5):
            lev = 4 - i
            setattr(self, f"up{i}", UpBlock(dim, ft[lev + 1], ft[lev], ft[lev], dp[lev], transconv))
        self.out_conv = layers(dim)[0](ft[0], k, 1)

    def forward(self, xs):
        x = xs[4]
        for i in range(1, 5):
            x = getattr(self, f"up{i}")(x, xs[4 - i])
        return self.out_conv(x)


class UNet(nn.Module):
    def __init__(self, net):
        super().__init__()
        dim = 3 if net["name"] == "UNet3D" else 2
        up = str(net.get("up_mode", "bilinear")).lower()
        transconv = up in ("0", "transconv")
        if up not in ("0", "transconv", "2", "bilinear", "trilinear", "linear"):
            raise SystemExit(f"up_mode {up!r} not transcribed")
        ft, dp = net["feature_chns"], net.get("dropout", [0.0] * 5)
        self.encoder = Encoder(dim, net["in_chns"], ft, dp)
        self.decoder = Decoder(dim, ft, dp, net["class_num"], transconv)

    def forward(self, x):
        return self.decoder(self.encoder(x))


def dice_loss(logits, onehot):
    p = F.softmax(logits, 1)
    axes = [0] + list(range(2, logits.dim()))
    inter = (p * onehot).sum(axes)
    dice = (2 * inter + 1e-5) / (p.sum(axes) + onehot.sum(axes) + 1e-5)
    return 1 - dice.mean()


def ce_loss(logits, onehot):
    return -(F.log_softmax(logits, 1) * onehot).sum(1).mean()


def make_loss(spec):
    single = {"DiceLoss": dice_loss, "CrossEntropyLoss": ce_loss}
    if spec["name"] in single:
        return single[spec["name"]]
    if spec["name"] != "CombinedLoss":
        raise SystemExit(f"loss {spec['name']} not transcribed")
    terms = [(single[t["loss"]], t.get("weight", 1.0)) for t in spec["terms"]]
    if any(t.get("params") for t in spec["terms"]):
        raise SystemExit("loss parameters not transcribed")
    return lambda lg, oh: sum(w * f(lg, oh) for f, w in terms)


def make_opt(params, t):
    kind = t.get("optimizer", "adam").lower()
    lr, wd = t["lr"], t.get("weight_decay", 0.0)
    betas, eps = tuple(t.get("betas", (0.9, 0.999))), t.get("eps", 1e-8)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    raise SystemExit(f"optimizer {kind} not transcribed")


def vmhwm_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--channels-last", action="store_true")
    a = ap.parse_args()
    spec = json.load(open(a.spec))
    with open(spec["config"], "rb") as f:
        training = tomllib.load(f)["training"]
    torch.set_num_threads(spec["threads"])
    dev = torch.device(spec["device"])
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = UNet(spec["network"])
    state = load_file(a.weights)
    x, labels = state.pop("__x"), state.pop("__labels")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"weights do not match: missing {missing}, unexpected {unexpected}")
    k = spec["network"]["class_num"]
    onehot = F.one_hot(labels[:, 0].long(), k).movedim(-1, 1).float().contiguous()
    model, x, onehot = model.to(dev), x.to(dev), onehot.to(dev)
    if a.channels_last:
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        model = model.to(memory_format=fmt)
        x = x.contiguous(memory_format=fmt)
    print(f"PARAMS {sum(p.numel() for p in model.parameters())}")
    loss_fn = make_loss(training["loss"])
    warm, iters = spec["warmup"], spec["iters"]
    if spec["mode"] == "train":
        model.train()
        opt = make_opt(model.parameters(), training)
        t = []
        for i in range(warm + iters):
            sync()
            t0 = time.perf_counter()
            loss = loss_fn(model(x), onehot)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lv = loss.item()
            sync()
            e = (time.perf_counter() - t0) * 1e3
            if i >= warm:
                t.append(e)
            else:
                print(f"warmup {i}: loss {lv:.4f}, {e:.1f} ms")
        print(f"TIME train: full step {statistics.median(t):.3f}")
    else:
        model.eval()
        with torch.no_grad():
            print(f"LOSS_EVAL {loss_fn(model(x), onehot).item():.6f}")
            t = []
            for i in range(warm + iters):
                sync()
                t0 = time.perf_counter()
                y = model(x)
                sync()
                e = (time.perf_counter() - t0) * 1e3
                del y
                if i >= warm:
                    t.append(e)
        print(f"TIME infer: forward (eval) {statistics.median(t):.3f}")
    print(f"VMHWM_KB {vmhwm_kb()}")


if __name__ == "__main__":
    main()
