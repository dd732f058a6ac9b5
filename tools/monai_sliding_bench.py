"""MONAI reference for `cargo xtask bench sliding`: sliding-window inference of
a whole 3D volume with MONAI's `sliding_window_inference` (mode="gaussian",
the spec's overlap, sigma_scale and window batch) over PyMIC's UNet3D
(transcribed in tools/torch_unet_bench.py) with the initial weights medseg
wrote; the predictor returns softmax probabilities, as medseg's Predictor
averages probabilities. Prints TIME, PROB_MEANS (per-class means of the
probabilities) and VMHWM_KB for the xtask to parse.

    python tools/monai_sliding_bench.py --spec SPEC.json --weights W.safetensors
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_unet_bench import UNet, vmhwm_kb  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--weights", required=True)
    a = ap.parse_args()
    spec = json.load(open(a.spec))
    case = spec["case"]
    torch.set_num_threads(case["threads"])
    dev = torch.device(case["device"])
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    model = UNet(case["network"])
    state = load_file(a.weights)
    x = state.pop("__x")
    state.pop("__labels")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"weights do not match: missing {missing}, unexpected {unexpected}")
    model = model.to(dev).eval()
    x = x.to(dev)

    def predictor(w):
        return F.softmax(model(w), 1)

    t, means = [], []
    with torch.no_grad():
        for i in range(case["warmup"] + case["iters"]):
            sync()
            t0 = time.perf_counter()
            p = sliding_window_inference(
                x, roi_size=spec["window"], sw_batch_size=spec["sw_batch"], predictor=predictor,
                overlap=spec["overlap"], mode="gaussian", sigma_scale=spec["sigma_scale"])
            sync()
            e = (time.perf_counter() - t0) * 1e3
            if i >= case["warmup"]:
                t.append(e)
            means = p[0].flatten(1).mean(1).tolist()
            del p
    print(f"TIME infer: sliding window {statistics.median(t):.3f}")
    print("PROB_MEANS " + " ".join(f"{v:.6f}" for v in means))
    print(f"VMHWM_KB {vmhwm_kb()}")


if __name__ == "__main__":
    main()
