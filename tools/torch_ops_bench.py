"""PyTorch CPU reference for `cargo xtask bench ops`: the same ops at the same sizes.

Prints one JSON object per line: {"op": name, "ms": median}. Run by xtask; also by hand:

    .venv/bin/python tools/torch_ops_bench.py --threads 2 --iters 10
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def median_ms(f, warm, iters):
    v = []
    for i in range(warm + iters):
        t0 = time.perf_counter()
        y = f()
        e = (time.perf_counter() - t0) * 1e3
        del y
        if i >= warm:
            v.append(e)
    return statistics.median(v)


def fwd_bwd(f, *inputs):
    """forward and backward of sum(f(*inputs) * w) for a fixed random w (seeded as y's gradient)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    w = torch.randn_like(f(*inputs))

    def run():
        y = f(*leaves)
        return torch.autograd.grad(y, leaves, grad_outputs=w)

    return run


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    out = []

    def emit(name, f):
        ms = median_ms(f, a.warmup, a.iters)
        print(json.dumps({"op": name, "ms": ms}), flush=True)

    x = torch.randn(4, 64, 128, 128)
    k = torch.randn(64, 64, 3, 3) * 0.05
    gy = torch.randn(4, 64, 128, 128)
    big = torch.randn(4, 16, 256, 256)
    small = torch.randn(4, 32, 128, 128)
    kt = torch.randn(32, 16, 2, 2)
    logits = torch.randn(4, 4, 256, 256)
    g16 = torch.rand(16) + 0.5
    b16 = torch.randn(16)
    rm, rv = torch.randn(16) * 0.1, torch.rand(16) + 0.5
    up_in = torch.randn(4, 16, 128, 128)
    psp = torch.randn(4, 64, 64, 64)
    g64 = torch.rand(64) + 0.5
    b64 = torch.randn(64)
    tok = torch.randn(4, 576, 768)
    g768 = torch.rand(768) + 0.5
    b768 = torch.randn(768)
    v3 = torch.randn(2, 16, 32, 64, 64)
    k3 = torch.randn(16, 16, 3, 3, 3) * 0.05
    v3s = torch.randn(2, 16, 16, 32, 32)

    def bn_train(t, g, b):
        return F.leaky_relu(F.batch_norm(t, None, None, g, b, training=True, eps=1e-5), 0.01)

    def bn_eval(t, g, b):
        return F.leaky_relu(F.batch_norm(t, rm, rv, g, b, training=False, eps=1e-5), 0.01)

    with torch.no_grad():
        emit("conv2d 3x3 fwd 4x64x128x128->64", lambda: F.conv2d(x, k, padding=1))
        emit("conv2d 3x3 input grad", lambda: torch.nn.grad.conv2d_input(x.shape, k, gy, padding=1))
        emit("conv2d 3x3 weight grad", lambda: torch.nn.grad.conv2d_weight(x, k.shape, gy, padding=1))
        emit("conv_transpose2d k2s2 4x32x128^2->16", lambda: F.conv_transpose2d(small, kt, stride=2))
        emit("conv3d 3x3x3 fwd 2x16x32x64x64->16", lambda: F.conv3d(v3, k3, padding=1))
        emit("leaky_relu 4x16x256x256", lambda: F.leaky_relu(big, 0.01))
        emit("bn train + leaky 4x16x256x256", lambda: bn_train(big, g16, b16))
        emit("bn eval + leaky 4x16x256x256", lambda: bn_eval(big, g16, b16))
        emit("max_pool2d 2 4x16x256x256", lambda: F.max_pool2d(big, 2))
        emit("max_pool3d 2 2x16x32x64x64", lambda: F.max_pool3d(v3, 2))
        emit("bilinear x2 4x16x128x128", lambda: F.interpolate(up_in, scale_factor=2, mode="bilinear", align_corners=False))
        emit("adaptive_avg_pool2d 4x64x64x64->6x6", lambda: F.adaptive_avg_pool2d(psp, 6))
        emit("group_norm 8 groups 4x64x64x64", lambda: F.group_norm(psp, 8, g64, b64, eps=1e-5))
        emit("layer_norm 4x576x768", lambda: F.layer_norm(tok, (768,), g768, b768, eps=1e-6))
        emit("trilinear x2 2x16x16x32x32", lambda: F.interpolate(v3s, scale_factor=2, mode="trilinear", align_corners=False))
        emit("log_softmax dim1 4x4x256x256", lambda: F.log_softmax(logits, 1))
        emit("softmax dim1 4x4x256x256", lambda: F.softmax(logits, 1))
    emit("fwd+bwd leaky_relu 4x16x256x256", fwd_bwd(lambda t: F.leaky_relu(t, 0.01), big))
    emit("fwd+bwd bn train + leaky 4x16x256x256", fwd_bwd(bn_train, big, g16, b16))
    emit("fwd+bwd max_pool2d 2 4x16x256x256", fwd_bwd(lambda t: F.max_pool2d(t, 2), big))
    emit("fwd+bwd bilinear x2 4x16x128x128", fwd_bwd(lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False), up_in))
    emit("fwd+bwd adaptive_avg_pool2d 4x64x64x64->6x6", fwd_bwd(lambda t: F.adaptive_avg_pool2d(t, 6), psp))
    emit("fwd+bwd group_norm 8 groups 4x64x64x64", fwd_bwd(lambda t, g, b: F.group_norm(t, 8, g, b, eps=1e-5), psp, g64, b64))
    emit("fwd+bwd layer_norm 4x576x768", fwd_bwd(lambda t, g, b: F.layer_norm(t, (768,), g, b, eps=1e-6), tok, g768, b768))
    emit("fwd+bwd log_softmax dim1 4x4x256x256", fwd_bwd(lambda t: F.log_softmax(t, 1), logits))
    adam_params = [torch.nn.Parameter(torch.randn(1024, 4096) * 0.1) for _ in range(4)]
    for p in adam_params:
        p.grad = 2 * p.detach().clone()
    adam = torch.optim.Adam(adam_params, lr=1e-4, weight_decay=1e-5)
    emit("adam step 4x1024x4096", adam.step)


if __name__ == "__main__":
    main()
