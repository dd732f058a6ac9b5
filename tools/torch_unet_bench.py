"""PyTorch reference for `cargo xtask bench unet`: the same UNet (16-32-64-128-256,
conv3x3+BN+LeakyReLU x2, max-pool, transposed-conv up), CE + soft Dice, AdamW, fp32,
on the CPU or a CUDA device (synchronised before every timer read).

python tools/torch_unet_bench.py unet [--threads 2] [--iters 10] [--warmup 2] [--mode all|infer|train]
                                      [--batch 4] [--size 256] [--device cpu|cuda|cuda:N] [--channels-last]
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBnAct(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.01))


class Block(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(ConvBnAct(cin, cout), ConvBnAct(cout, cout))


class UNet(nn.Module):
    def __init__(self, in_ch=1, classes=4, base=16):
        super().__init__()
        feats = [base << i for i in range(5)]
        self.enc = nn.ModuleList()
        cin = in_ch
        for f in feats:
            self.enc.append(Block(cin, f))
            cin = f
        self.ups = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in reversed(range(4)):
            self.ups.append(nn.ConvTranspose2d(feats[i + 1], feats[i], 2, stride=2))
            self.dec.append(Block(2 * feats[i], feats[i]))
        self.head = nn.Conv2d(feats[0], classes, 1)

    def forward(self, x):
        skips = []
        h = x
        for i, blk in enumerate(self.enc):
            if i > 0:
                h = F.max_pool2d(h, 2)
            h = blk(h)
            if i < 4:
                skips.append(h)
        for up, blk in zip(self.ups, self.dec):
            h = blk(torch.cat([skips.pop(), up(h)], 1))
        return self.head(h)


def seg_loss(logits, target, onehot):
    logp = F.log_softmax(logits, 1)
    ce = -logp.gather(1, target).mean()
    p = logp.exp()
    inter = (p * onehot).sum((0, 2, 3))
    denom = p.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = (2 * inter + 1e-5) / (denom + 1e-5)
    return ce + (1 - dice.mean())


def report(name, v):
    print(f"{name:<40} median {statistics.median(v):9.2f} ms   min {min(v):9.2f}   max {max(v):9.2f}   (n={len(v)})", flush=True)
    return statistics.median(v)


SYNC = lambda: None  # replaced by torch.cuda.synchronize on a CUDA device


def ms(t0):
    SYNC()
    return (time.perf_counter() - t0) * 1e3


def bench_unet(a):
    b, s, classes = a.batch, a.size, 4
    torch.manual_seed(0)
    dev = torch.device(a.device)
    model = UNet(1, classes, 16).to(dev)
    x = torch.randn(b, 1, s, s).to(dev)
    labels = torch.randint(0, classes, (b, 1, s, s)).to(dev)
    onehot = F.one_hot(labels[:, 0], classes).permute(0, 3, 1, 2).float().contiguous()
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = x.contiguous(memory_format=fmt)
    nparams = sum(p.numel() for p in model.parameters())
    nbuf = sum(p.numel() for p in model.buffers())
    print(f"torch {torch.__version__} device={a.device} tf32={getattr(a, 'tf32', False)} threads={torch.get_num_threads()} channels_last={a.channels_last} params={nparams} buffers={nbuf}")

    if a.mode in ("all", "train"):
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        tf, tb, to, tt = [], [], [], []
        for it in range(a.warmup + a.iters):
            SYNC()
            t0 = time.perf_counter()
            logits = model(x)
            loss = seg_loss(logits, labels, onehot)
            lv = loss.item()
            f = ms(t0)
            t1 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            bw = ms(t1)
            t2 = time.perf_counter()
            opt.step()
            o = ms(t2)
            tot = ms(t0)
            if it >= a.warmup:
                tf.append(f); tb.append(bw); to.append(o); tt.append(tot)
            else:
                print(f"  warmup {it}: loss={lv:.4f} total {tot:.1f} ms")
        report("train: forward(train BN)+loss", tf)
        report("train: backward", tb)
        report("train: AdamW step", to)
        report("train: full step", tt)

    if a.mode in ("all", "infer"):
        model.eval()
        for ctx_name, ctx in (("no_grad", torch.no_grad), ("inference_mode", torch.inference_mode)):
            t = []
            with ctx():
                for it in range(a.warmup + a.iters):
                    SYNC()
                    t0 = time.perf_counter()
                    y = model(x)
                    e = ms(t0)
                    del y
                    if it >= a.warmup:
                        t.append(e)
            report(f"infer: forward (eval BN, {ctx_name})", t)
        # grad-tracking eval forward, comparable to candle's Var-backed forward
        t = []
        for it in range(a.warmup + a.iters):
            SYNC()
            t0 = time.perf_counter()
            y = model(x)
            e = ms(t0)
            del y
            if it >= a.warmup:
                t.append(e)
        report("infer: forward (eval BN, grad enabled)", t)


def main():
    global SYNC
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["unet"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--mode", default="all")
    p.add_argument("--device", default="cpu")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--tf32", action="store_true", help="allow TF32 in CUDA convolutions and matmuls (PyTorch's default for cuDNN convolutions)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.device.startswith("cuda"):
        # strict fp32 as medseg unless --tf32
        torch.backends.cuda.matmul.allow_tf32 = a.tf32
        torch.backends.cudnn.allow_tf32 = a.tf32
        torch.backends.cudnn.benchmark = True
        dev = torch.device(a.device)
        SYNC = lambda: torch.cuda.synchronize(dev)
    bench_unet(a)


if __name__ == "__main__":
    main()
