#!/usr/bin/env python3
"""Fixture for medseg-nets' PyTorch checkpoint loader: a tiny PyMIC 0.6.2
UNet (2D) saved exactly as PyMIC's trainer saves its checkpoints
(pymic/net_run/agent_seg.py: torch.save of {'iteration', 'valid_pred',
'model_state_dict', 'optimizer_state_dict'}), and PyMIC's output on an input.

Writes under crates/medseg-nets/tests/fixtures/:
  pymic_unet2d_best.pt             the checkpoint (zip + pickle, torch.save)
  pymic_unet2d_state_dict.pt       the same weights, torch.save(net.state_dict())
  pymic_unet2d_best.io.safetensors `input` [1, 1, 32, 32] and `eval`, the
                                   eval-mode logits PyMIC's network gives
  pymic_unet2d_best.json           the network section of the config

Run with a Python that has torch, and pymic (0.6.2) installed:
    python tools/make_pymic_checkpoint.py
(pymic is pip-installed into the running interpreter when missing).
"""
import json
import os

from fixture_utils import OUT, ensure, randomise, save_safetensors

ensure("pymic")

import torch  # noqa: E402
from pymic.net.cnn.unet import UNet  # noqa: E402  (SegNetDict["UNet"] in PyMIC 0.6.2)
from pymic.loss.seg.ce import CrossEntropyLoss  # noqa: E402

# the [network] section of a PyMIC 0.6.2 config (net_type UNet, 2D)
PARAMS = {"net_type": "UNet", "dimension": 2, "in_chns": 1, "class_num": 2,
          "feature_chns": [2, 4, 4, 8, 8], "dropout": [0.0, 0.0, 0.0, 0.3, 0.5],
          "up_mode": 2, "multiscale_pred": False}


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(25)
    net = UNet(dict(PARAMS))
    randomise(net, gen)
    # one optimiser step, so that the checkpoint's optimizer state holds tensors
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5)
    net.train()
    x = torch.randn((2, 1, 32, 32), generator=gen)
    y = (torch.rand((2, 1, 32, 32), generator=gen) > 0.5).float()
    prob = torch.cat([1 - y, y], dim=1)
    loss = CrossEntropyLoss({"loss_softmax": True})({"prediction": net(x), "ground_truth": prob})
    opt.zero_grad()
    loss.backward()
    opt.step()
    # centre the class-1 margin on the test input, so that both classes are
    # predicted (a random network tends to predict one class everywhere)
    net.eval()
    xin = torch.randn((1, 1, 32, 32), generator=gen)
    with torch.no_grad():
        out = net(xin)
        m = (out[0, 1] - out[0, 0]).flatten().sort().values
        # the widest gap between the 40% and 60% quantiles: no pixel near a tie
        lo, hi = int(0.4 * len(m)), int(0.6 * len(m))
        k = lo + int((m[lo + 1:hi] - m[lo:hi - 1]).argmax())
        net.decoder.out_conv.bias[1] -= (m[k] + m[k + 1]) / 2
        # spread the logits, so that few pixels are near a tie
        net.decoder.out_conv.weight *= 50.0
        net.decoder.out_conv.bias *= 50.0
    # PyMIC's trainer: best checkpoint dict, saved with torch.save
    save_dict = {"iteration": 100, "valid_pred": 0.5,
                 "model_state_dict": net.state_dict(),
                 "optimizer_state_dict": opt.state_dict()}
    torch.save(save_dict, os.path.join(OUT, "pymic_unet2d_best.pt"))
    # a bare state dict, as torch.save(net.state_dict(), path) writes it
    torch.save(net.state_dict(), os.path.join(OUT, "pymic_unet2d_state_dict.pt"))
    with torch.no_grad():
        out = net(xin)
    print("class-1 pixels:", int((out[0, 1] > out[0, 0]).sum()),
          "smallest margin:", float((out[0, 1] - out[0, 0]).abs().min()))
    save_safetensors(os.path.join(OUT, "pymic_unet2d_best.io.safetensors"),
                     {"input": xin.numpy(), "eval": out.numpy()})
    with open(os.path.join(OUT, "pymic_unet2d_best.json"), "w") as f:
        json.dump(PARAMS, f, indent=1, sort_keys=True)
        f.write("\n")
    print("saved; logits", list(out.shape))


if __name__ == "__main__":
    main()
