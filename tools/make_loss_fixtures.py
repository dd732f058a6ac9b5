#!/usr/bin/env python3
"""Reference loss values for medseg-losses, from MONAI, PyMIC and PyTorch.

Writes crates/medseg-losses/tests/fixtures/losses.json: a few small input sets
(random logits, class maps, soft maps, weights, images) and, per case, the loss
name and medseg parameters together with the value computed by the reference
library in float64. Inputs are rounded to 4 decimals so the JSON stays small;
the references are computed from the rounded values.

Usage (from the repository root): .venv/bin/python tools/make_loss_fixtures.py
Installs monai and pymic into the running interpreter's environment if missing.
"""
import json
import os
import subprocess
import sys

def ensure(pkg, mod):
    try:
        __import__(mod)
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", pkg])

ensure("torch", "torch")
ensure("monai", "monai")
ensure("pymic", "pymic")

import numpy as np
import torch
import torch.nn.functional as F
import monai.losses as ml
from pymic.loss.seg.ce import CrossEntropyLoss, GeneralizedCELoss
from pymic.loss.seg.dice import DiceLoss, FocalDiceLoss, NoiseRobustDiceLoss
from pymic.loss.seg.exp_log import ExpLogLoss
from pymic.loss.seg.mse import MSELoss, MAELoss
from pymic.loss.seg.slsr import SLSRLoss
from pymic.loss.seg.ssl import EntropyLoss
from pymic.loss.seg.mumford_shah import MumfordShahLoss
from pymic.loss.seg.gatedcrf import GatedCRFLoss
from pymic.loss.seg.util import get_soft_label

torch.set_default_dtype(torch.float64)
rng = np.random.default_rng(20261121)
OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "medseg-losses", "tests", "fixtures")
IGNORE = 255


def r4(a):
    return np.round(np.asarray(a, dtype=np.float64), 4)


def make_set(shape, img_scale=1):
    n, c = shape[0], shape[1]
    sp = shape[2:]
    logits = r4(rng.normal(0.0, 2.0, size=shape))
    labels = rng.integers(0, c, size=(n, 1) + sp)
    # make the last class absent from image 0 (exercises Generalized Dice's inf weights)
    labels[0][labels[0] == c - 1] = 0
    ign = labels.copy()
    ign[rng.random(ign.shape) < 0.3] = IGNORE
    soft = rng.random(shape) + 0.05
    soft = r4(soft / soft.sum(axis=1, keepdims=True))
    pw = r4(rng.random((n, 1) + sp))
    isp = tuple(s * img_scale for s in sp)
    image = r4(rng.random((n, 2) + isp))
    teacher = r4(rng.normal(0.0, 2.0, size=shape))
    noisy = (rng.random((n, 1) + sp) < 0.4).astype(np.float64)
    valid = (rng.random((n, 1) + sp) < 0.8).astype(np.float64)
    return dict(shape=list(shape), logits=logits, labels=labels, ignore_labels=ign, soft=soft,
                pixel_weight=pw, image_shape=list((n, 2) + isp), image=image, teacher=teacher,
                noisy_mask=noisy, valid_mask=valid)


SETS = {
    "2d": make_set((2, 3, 5, 6)),
    "3d": make_set((2, 3, 3, 4, 5)),
    "crf": make_set((2, 3, 7, 8), img_scale=2),
}


def T(a):
    return torch.tensor(np.asarray(a), dtype=torch.float64)


def onehot(s):
    return get_soft_label(torch.tensor(s["labels"]), s["shape"][1], "double")


def pymic(cls, params, s, target="onehot", **extra):
    d = {"prediction": T(s["logits"]), "ground_truth": onehot(s) if target == "onehot" else T(s["soft"])}
    d.update(extra)
    return float(cls(params)(d))


cases = []


def case(name, set_name, loss, params, reference, value, target="labels", extra=None):
    c = dict(name=name, set=set_name, loss=loss, params=params, reference=reference,
             target=target, value=float(value))
    if extra:
        c.update(extra)
    cases.append(c)


for sn in ["2d", "3d"]:
    s = SETS[sn]
    x = T(s["logits"])
    lab = torch.tensor(s["labels"])
    ign = torch.tensor(s["ignore_labels"])
    C = s["shape"][1]
    # --- cross-entropy
    case("ce", sn, "CrossEntropyLoss", {}, "pymic", pymic(CrossEntropyLoss, {}, s))
    case("ce_soft", sn, "CrossEntropyLoss", {}, "pymic", pymic(CrossEntropyLoss, {}, s, target="soft"), target="soft")
    case("ce_pixw", sn, "CrossEntropyLoss", {}, "pymic",
         pymic(CrossEntropyLoss, {}, s, pixel_weight=T(s["pixel_weight"])), extra={"pixel_weight": True})
    cw = [0.2, 1.0, 2.5]
    case("ce_clsw", sn, "CrossEntropyLoss", {"class_weight": cw}, "pymic",
         pymic(CrossEntropyLoss, {}, s, class_weight=T(cw)))
    case("ce_ignore", sn, "CrossEntropyLoss", {}, "torch",
         F.cross_entropy(x, ign[:, 0].long(), ignore_index=IGNORE), target="ignore")
    case("ce_smooth", sn, "CrossEntropyLoss", {"label_smoothing": 0.1}, "torch",
         F.cross_entropy(x, lab[:, 0].long(), label_smoothing=0.1))
    # --- Dice family (PyMIC: batch dice)
    case("dice_pymic", sn, "DiceLoss", {}, "pymic", pymic(DiceLoss, {}, s))
    case("dice_pymic_pixw", sn, "DiceLoss", {}, "pymic",
         pymic(DiceLoss, {}, s, pixel_weight=T(s["pixel_weight"])), extra={"pixel_weight": True})
    case("dice_pymic_clsw", sn, "DiceLoss", {"class_weight": cw}, "pymic",
         pymic(DiceLoss, {}, s, class_weight=T(cw)))
    case("dice_pymic_soft", sn, "DiceLoss", {}, "pymic", pymic(DiceLoss, {}, s, target="soft"), target="soft")
    # --- MONAI Dice variants
    def monai(cls, **kw):
        return float(cls(softmax=True, to_onehot_y=True, **kw)(x, lab))
    case("dice_monai", sn, "DiceLoss", {"batch": False}, "monai", monai(ml.DiceLoss))
    case("dice_monai_sq", sn, "DiceLoss", {"batch": False, "squared_pred": True}, "monai",
         monai(ml.DiceLoss, squared_pred=True))
    case("jaccard_monai", sn, "JaccardLoss", {"batch": False}, "monai", monai(ml.DiceLoss, jaccard=True))
    case("dice_monai_nobg_batch", sn, "DiceLoss",
         {"batch": True, "include_background": False, "smooth_nr": 0.0, "smooth_dr": 1e-6}, "monai",
         monai(ml.DiceLoss, include_background=False, batch=True, smooth_nr=0.0, smooth_dr=1e-6))
    case("dice_monai_ignore", sn, "DiceLoss", {"batch": False}, "monai",
         float(ml.DiceLoss(softmax=True, to_onehot_y=True, ignore_index=IGNORE)(x, ign)), target="ignore")
    case("gdl_monai", sn, "GeneralizedDiceLoss", {}, "monai", monai(ml.GeneralizedDiceLoss))
    case("gdl_monai_batch_simple", sn, "GeneralizedDiceLoss", {"batch": True, "w_type": "simple"}, "monai",
         monai(ml.GeneralizedDiceLoss, batch=True, w_type="simple"))
    case("tversky_monai", sn, "TverskyLoss", {"alpha": 0.3, "beta": 0.7}, "monai",
         monai(ml.TverskyLoss, alpha=0.3, beta=0.7))
    case("tversky_monai_batch", sn, "TverskyLoss", {"alpha": 0.7, "beta": 0.3, "batch": True}, "monai",
         monai(ml.TverskyLoss, alpha=0.7, beta=0.3, batch=True))
    # --- focal (MONAI, softmax)
    def mfocal(**kw):
        return float(ml.FocalLoss(to_onehot_y=True, use_softmax=True, **kw)(x, lab))
    case("focal_monai", sn, "FocalLoss", {"gamma": 2.0}, "monai", mfocal(gamma=2.0))
    case("focal_monai_alpha", sn, "FocalLoss", {"gamma": 1.5, "alpha": 0.25}, "monai", mfocal(gamma=1.5, alpha=0.25))
    case("focal_monai_weight", sn, "FocalLoss", {"gamma": 2.0, "class_weight": cw}, "monai",
         mfocal(gamma=2.0, weight=cw))
    # --- PyMIC others
    case("focaldice", sn, "FocalDiceLoss", {"beta": 2.0}, "pymic",
         pymic(FocalDiceLoss, {"focaldiceloss_beta": 2.0}, s))
    case("explog", sn, "ExpLogLoss", {"w_dice": 0.4, "gamma": 0.3}, "pymic",
         pymic(ExpLogLoss, {"explogloss_w_dice": 0.4, "explogloss_gamma": 0.3}, s))
    case("mse", sn, "MSELoss", {}, "pymic", pymic(MSELoss, {}, s))
    case("mse_soft", sn, "MSELoss", {}, "pymic", pymic(MSELoss, {}, s, target="soft"), target="soft")
    case("mae", sn, "MAELoss", {}, "pymic", pymic(MAELoss, {}, s))
    case("gce", sn, "GeneralizedCELoss", {"q": 0.5}, "pymic", pymic(GeneralizedCELoss, {"loss_gce_q": 0.5}, s))
    case("gce_pixw", sn, "GeneralizedCELoss", {"q": 0.7}, "pymic",
         pymic(GeneralizedCELoss, {"loss_gce_q": 0.7}, s, pixel_weight=T(s["pixel_weight"])),
         extra={"pixel_weight": True})
    case("nrdice", sn, "NoiseRobustDiceLoss", {"gamma": 1.5}, "pymic",
         pymic(NoiseRobustDiceLoss, {"noiserobustdiceloss_gamma": 1.5}, s))
    case("slsr", sn, "SLSRLoss", {"epsilon": 0.25}, "pymic",
         pymic(SLSRLoss, {"slsrloss_epsilon": 0.25}, s, pixel_weight=T(s["noisy_mask"])),
         extra={"noisy_mask": True})
    case("entropy", sn, "EntropyLoss", {}, "pymic",
         float(EntropyLoss({})({"prediction": x})), target="none")
    # total variation: the classic anisotropic definition (see the Rust docs)
    p = torch.softmax(x, 1)
    tv = sum(torch.diff(p, dim=a).abs().mean() for a in range(2, p.dim()))
    case("tv", sn, "TotalVariationLoss", {}, "torch", tv, target="none")
    ms_img = T(s["image"])
    for pen in ["l1", "l2"]:
        v = MumfordShahLoss({"MumfordShahLoss_penalty": pen, "MumfordShahLoss_lambda": 0.7})(
            {"prediction": x, "image": ms_img})
        case("mumford_" + pen, sn, "MumfordShahLoss", {"penalty": pen, "lambda": 0.7}, "pymic", v,
             target="none", extra={"image": True})
    # --- consistency
    t = T(s["teacher"])
    case("cons_mse", sn, "ConsistencyMSELoss", {}, "torch",
         ((torch.softmax(x, 1) - torch.softmax(t, 1)) ** 2).mean(), target="none", extra={"teacher": True})
    npix = x.numel() // C
    kl = F.kl_div(torch.log_softmax(x, 1), torch.softmax(t, 1), reduction="sum") / npix
    case("cons_kl", sn, "ConsistencyKLLoss", {}, "torch", kl, target="none", extra={"teacher": True})
    # --- combined 0.5 Dice + 0.5 CE
    comb = 0.5 * pymic(DiceLoss, {}, s) + 0.5 * pymic(CrossEntropyLoss, {}, s)
    case("combined", sn, "CombinedLoss",
         {"terms": [{"loss": "DiceLoss", "weight": 0.5}, {"loss": "CrossEntropyLoss", "weight": 0.5}]},
         "pymic", comb)

# --- deep supervision: outputs at full size and down-sampled, targets by nearest
for sn in ["2d", "3d"]:
    s = SETS[sn]
    sp = s["shape"][2:]
    small = [max(1, d // 2) for d in sp]
    x0 = T(s["logits"])
    mode = "bilinear" if len(sp) == 2 else "trilinear"
    x1 = r4(F.interpolate(x0, size=small, mode=mode, align_corners=False).numpy())
    lab = torch.tensor(s["labels"]).double()
    lab1 = F.interpolate(lab, size=small, mode="nearest").long()
    C = s["shape"][1]
    ce0 = float(CrossEntropyLoss({})({"prediction": x0, "ground_truth": onehot(s)}))
    ce1 = float(CrossEntropyLoss({})({"prediction": T(x1), "ground_truth": get_soft_label(lab1, C, "double")}))
    v = (1.0 * ce0 + 0.3 * ce1) / 1.3
    case("deepsup", sn, "DeepSuperviseLoss",
         {"base": {"loss": "CrossEntropyLoss"}, "weights": [1.0, 0.3]}, "pymic", v,
         extra={"extra_logits": {"shape": list(x1.shape), "data": x1.ravel().tolist()}})

# --- Gated CRF (PyMIC's implementation of Obukhov et al.)
s = SETS["crf"]
x = T(s["logits"])
p = torch.softmax(x, 1)
img = T(s["image"])
kernels = [{"weight": 0.9, "xy": 3.0, "rgb": 0.5}, {"weight": 0.4, "xy": 2.0}]
H, W = s["image_shape"][2:]
for radius in [1, 3]:
    v = GatedCRFLoss()(p, [dict(k) for k in kernels], radius, {"rgb": img.clone()}, H, W)["loss"]
    case(f"gatedcrf_r{radius}", "crf", "GatedCRFLoss", {"kernels": kernels, "radius": radius}, "pymic", v,
         target="none", extra={"image": True})
mask = torch.tensor(s["valid_mask"], dtype=torch.float32)
v = GatedCRFLoss()(p, [dict(k) for k in kernels], 2, {"rgb": img.clone()}, H, W,
                   mask_src=mask.clone(), mask_dst=mask.clone())["loss"]
case("gatedcrf_mask", "crf", "GatedCRFLoss", {"kernels": kernels, "radius": 2}, "pymic", v,
     target="none", extra={"image": True, "valid_mask": True})


def flat(a):
    a = np.asarray(a)
    if a.dtype.kind in "iu":
        return a.ravel().astype(int).tolist()
    return [float(v) for v in a.ravel()]


out = {
    "ignore": IGNORE,
    "sets": {k: {kk: (flat(vv) if isinstance(vv, np.ndarray) else vv) for kk, vv in v.items()}
             for k, v in SETS.items()},
    "cases": cases,
}
os.makedirs(OUT, exist_ok=True)
path = os.path.join(OUT, "losses.json")
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(out, f, separators=(",", ":"))
os.replace(tmp, path)
print(f"wrote {len(cases)} cases to {path} ({os.path.getsize(path)} bytes)")
