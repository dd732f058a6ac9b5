"""Segmentation metrics on numpy label maps, computed by medseg-metrics (Rust).

Dice, IoU, Hausdorff distance, HD95, ASD, ASSD and normalised surface Dice on
2D ``[H, W]`` or 3D ``[D, H, W]`` label maps of any integer or boolean dtype,
with voxel spacing in mm in the same axis order. The values match MedPy 0.5.2
and MONAI 1.6 to 1e-6 relative, and every convention on which they differ is
a named argument:

- ``hd95="pooled"``: the 95th percentile of both directed distance sets
  together (MedPy ``hd95``, seg-metrics); ``hd95="max-of-directed"``: the
  larger of the two directed percentiles (MONAI
  ``HausdorffDistanceMetric(percentile=95)``).
- ``connectivity="face"`` (or ``1``; MedPy's default, MONAI) or ``"full"``
  (or ``ndim``; MedPy ``connectivity=ndim``, seg-metrics' default): which
  neighbours decide that a voxel lies on a mask's surface.
- ``empty``: the distance when exactly one mask is empty, ``"inf"`` (MONAI,
  the default), ``"nan"`` (MedPy raises), ``"zero"`` or a number (PyMIC caps
  HD95 at 50 mm); or a pair ``(one_empty, both_empty)`` (both empty: NaN by
  default).

Arguments come in the order ``(gt, pred)``: ground truth first. (MedPy's
functions take ``(result, reference)``, MONAI's ``(y_pred, y)``.)

``labels``: ``None`` evaluates the non-zero voxels of both maps as binary
masks, exactly as MedPy reads its inputs (``evaluate`` instead evaluates every
non-zero label present in ``gt``); an integer evaluates that label
one-vs-rest and gives a number; a sequence gives a dict ``{label: value}``.

The arrays are read in place (no copy) when both have the same dtype in
native byte order, in C order, Fortran order or any strided view. A copy is
made only of an input that is not a numpy array (a list), of an array in
non-native byte order, and, when the two dtypes differ, of the array whose
dtype differs from their common one. The GIL is released while computing, so
threads evaluating different cases run in parallel.
"""

import math
import numbers
import sys

import numpy as np

from . import _native

__version__ = _native.__version__

__all__ = [
    "dice",
    "iou",
    "hd",
    "hd95",
    "assd",
    "asd",
    "nsd",
    "evaluate",
    "compare",
    "labels_present",
    "METRICS",
]

#: The keys of the dicts ``evaluate`` returns.
METRICS = (
    "dice",
    "iou",
    "precision",
    "recall",
    "specificity",
    "volume_similarity",
    "relative_volume_error",
    "hd",
    "hd95",
    "asd",
    "asd_gt_to_pred",
    "assd",
    "nsd",
    "tp",
    "fp",
    "fn",
    "tn",
    "volume_gt_mm3",
    "volume_pred_mm3",
)

_SURFACE = {"hd", "hd95", "asd", "asd_gt_to_pred", "assd", "nsd"}


def _label_map(x, name):
    a = x if isinstance(x, np.ndarray) else np.asarray(x)
    if a.dtype.kind not in "biu":
        raise ValueError(
            f"{name} has dtype {a.dtype}: label maps must hold integers or booleans "
            f"(threshold probabilities, e.g. {name} > 0.5, or cast rounded values with "
            f".astype(np.int64))"
        )
    if a.ndim not in (1, 2, 3):
        raise ValueError(
            f"{name} has {a.ndim} axes (shape {a.shape}): expected a 2D [H, W] or 3D "
            f"[D, H, W] label map of spatial axes only (drop batch and channel axes)"
        )
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return a


def _pair(gt, pred):
    gt = _label_map(gt, "gt")
    pred = _label_map(pred, "pred")
    if gt.shape != pred.shape:
        raise ValueError(f"shape mismatch: gt has shape {gt.shape} but pred has shape {pred.shape}")
    if gt.dtype != pred.dtype:
        common = np.promote_types(gt.dtype, pred.dtype)
        if common.kind not in "biu":  # uint64 with a signed type
            common = np.dtype(np.int64)
        gt = gt.astype(common, copy=False)
        pred = pred.astype(common, copy=False)
    return gt, pred


def _spacing(spacing, ndim):
    if spacing is None:
        return [1.0] * ndim
    if isinstance(spacing, numbers.Real):
        return [float(spacing)] * ndim
    try:
        sp = [float(s) for s in spacing]
    except (TypeError, ValueError):
        raise ValueError(f"spacing {spacing!r}: expected one number per axis, in mm") from None
    if len(sp) != ndim:
        raise ValueError(
            f"spacing has {len(sp)} values but the arrays have {ndim} axes: give one value "
            f"per axis, in mm, in the arrays' axis order"
        )
    if not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing values must be finite and positive, got {sp}")
    return sp


def _one_label(v):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Integral, np.integer)):
        raise ValueError(
            f"labels must be integers, got {v!r} ({type(v).__name__}); "
            f"label values are integers in 0..65535"
        )
    v = int(v)
    if not 0 <= v <= 65535:
        raise ValueError(f"label {v} lies outside 0..65535")
    return v


def _labels(labels):
    """(list of labels or None, whether one label was given)."""
    if labels is None:
        return None, True
    if isinstance(labels, (numbers.Number, np.generic)):
        return [_one_label(labels)], True
    if isinstance(labels, np.ndarray) and labels.dtype.kind not in "biu":
        raise ValueError(f"labels must be integers, got an array of dtype {labels.dtype}")
    out = [_one_label(v) for v in labels]
    if len(set(out)) != len(out):
        raise ValueError(f"labels {out} list a label twice")
    return out, False


def _value(v, what):
    if isinstance(v, str):
        named = {"nan": math.nan, "inf": math.inf, "zero": 0.0}
        if v.lower() not in named:
            raise ValueError(f"{what}={v!r}: expected 'nan', 'inf', 'zero' or a number")
        return named[v.lower()]
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return float(v)
    raise ValueError(f"{what}={v!r}: expected 'nan', 'inf', 'zero' or a number")


def _empty(empty):
    if isinstance(empty, (tuple, list)):
        if len(empty) != 2:
            raise ValueError(f"empty={empty!r}: expected one value or a pair (one_empty, both_empty)")
        return _value(empty[0], "empty"), _value(empty[1], "empty")
    return _value(empty, "empty"), math.nan


def _connectivity(c, ndim):
    if isinstance(c, str) and c in ("face", "full"):
        return c
    if isinstance(c, numbers.Integral) and not isinstance(c, bool):
        if c == 1:
            return "face"
        if c == ndim:
            return "full"
    raise ValueError(
        f"connectivity={c!r}: expected 'face' (or 1: neighbours share a face) or 'full' "
        f"(or {ndim}, the number of axes: neighbours share a face, edge or corner)"
    )


def _run(gt, pred, spacing, labels, hd95, percentile, connectivity, empty, nsd_tolerance,
         zero_division, surface):
    gt, pred = _pair(gt, pred)
    sp = _spacing(spacing, gt.ndim)
    one, both = _empty(empty)
    if not isinstance(hd95, str):
        raise ValueError(f"hd95={hd95!r}: expected 'pooled' or 'max-of-directed'")
    return _native.evaluate(
        gt,
        pred,
        sp,
        labels,
        hd95,
        float(percentile),
        _connectivity(connectivity, gt.ndim),
        one,
        both,
        float(nsd_tolerance),
        _value(zero_division, "zero_division"),
        surface,
    )


def _metric(name, gt, pred, spacing, labels, hd95, percentile, connectivity, empty,
            nsd_tolerance, zero_division):
    ls, scalar = _labels(labels)
    rows = _run(gt, pred, spacing, ls, hd95, percentile, connectivity, empty, nsd_tolerance,
                zero_division, name in _SURFACE)
    if scalar:
        return rows[0][name]
    return {r["label"]: r[name] for r in rows}


def _doc(what):
    return f"""{what}

    gt, pred: label maps of the same shape ([H, W] or [D, H, W]), any integer
        or boolean dtype.
    spacing: voxel size in mm per axis in the arrays' axis order (a sequence,
        or one number for all axes); default 1.
    labels: None (non-zero voxels as one binary mask, as MedPy), an integer
        (that label, one-vs-rest; gives a float) or a sequence (gives a dict
        {{label: value}}).
    hd95: 'pooled' (MedPy, seg-metrics) or 'max-of-directed' (MONAI).
    percentile: the percentile of the "hd95" value (95).
    connectivity: 'face'/1 (MedPy default, MONAI) or 'full'/ndim.
    empty: distance when exactly one mask is empty ('inf', 'nan', 'zero' or
        a number), or a pair (one_empty, both_empty); both empty: NaN.
    nsd_tolerance: tolerance in mm of the normalised surface Dice.
    zero_division: overlap ratio whose denominator is zero (two empty
        masks' Dice): 'nan' (MONAI, MedPy under NumPy 2), 'zero' or a number.

    Raises ValueError for float label maps or labels, shapes that differ,
    spacing of the wrong length and unknown definitions.
    """


def _make(name, what):
    def f(gt, pred, spacing=None, labels=None, *, hd95="pooled", percentile=95.0,
          connectivity="face", empty="inf", nsd_tolerance=1.0, zero_division="nan"):
        return _metric(name, gt, pred, spacing, labels, hd95, percentile, connectivity, empty,
                       nsd_tolerance, zero_division)

    f.__name__ = f.__qualname__ = name
    f.__doc__ = _doc(what)
    return f


dice = _make("dice", "Dice coefficient 2|G∩P| / (|G| + |P|) (MedPy `dc`).")
iou = _make("iou", "Intersection over union |G∩P| / |G∪P| (MedPy `jc`).")
hd = _make("hd", "Hausdorff distance in mm, the largest surface distance either way (MedPy `hd`).")
hd95 = _make(
    "hd95",
    "95th-percentile Hausdorff distance in mm under `hd95` (default 'pooled' = MedPy `hd95`;\n"
    "    'max-of-directed' = MONAI `HausdorffDistanceMetric(percentile=95)`).",
)
assd = _make(
    "assd",
    "Average symmetric surface distance in mm: the mean of both directed sets together\n"
    "    (MedPy 0.5 `assd`, MONAI `SurfaceDistanceMetric(symmetric=True)`).",
)
asd = _make(
    "asd",
    "Average surface distance in mm from the prediction's surface to the ground truth's\n"
    "    (MedPy `asd(pred, gt)`, MONAI `SurfaceDistanceMetric(symmetric=False)`).",
)
nsd = _make(
    "nsd",
    "Normalised surface Dice at `nsd_tolerance` mm (MONAI `compute_surface_dice`);\n"
    "    0 when one mask is empty and NaN when both are, whatever `empty` says.",
)


def evaluate(gt, pred, spacing=None, labels=None, *, hd95="pooled", percentile=95.0,
             connectivity="face", empty="inf", nsd_tolerance=1.0, zero_division="nan"):
    """Every metric (``METRICS``) of each label, computed in one pass.

    Same arguments as ``dice``, except for ``labels``: None evaluates every
    non-zero label present in ``gt`` and, like a sequence, gives a dict
    ``{label: {metric: value}}``; an integer gives ``{metric: value}``.
    "asd" is the prediction-to-ground-truth direction, "asd_gt_to_pred" the
    other; counts are voxels, volumes mm³.
    """
    ls, scalar = _labels(labels)
    if labels is None:
        gt, pred = _pair(gt, pred)
        ls = labels_present(gt)
        if not ls:
            raise ValueError("gt holds no non-zero label: give the labels to evaluate with labels=")
        scalar = False
    rows = _run(gt, pred, spacing, ls, hd95, percentile, connectivity, empty, nsd_tolerance,
                zero_division, True)
    out = {r["label"]: {k: r[k] for k in METRICS} for r in rows}
    return out[ls[0]] if scalar else out


def labels_present(gt):
    """The non-zero labels present in a label map, sorted (a parallel pass, no sort of the
    voxels). Raises ValueError for values outside 0..65535."""
    return _native.labels_present(_label_map(gt, "gt"))


#: compare(): each reference's definitions, as evaluate() options.
REFERENCES = (
    ("MedPy 0.5.2", "pooled HD95, face", dict(hd95="pooled", connectivity="face")),
    ("MONAI 1.6", "max-of-directed HD95, face", dict(hd95="max-of-directed", connectivity="face")),
    ("seg-metrics 1.2.8", "pooled HD95, full", dict(hd95="pooled", connectivity="full")),
)


def compare(gt, pred, spacing=None, labels=None, *, empty="inf", file=None):
    """Prints, for one label (or the binary foreground, ``labels=None``), Dice, HD, HD95, ASSD
    and ASD under each reference library's definitions, side by side, and returns them as
    ``{reference: {metric: value}}``.

    MedPy and MONAI are reproduced exactly (the values match theirs to 1e-6). seg-metrics is
    shown under its definitions (pooled HD95, mean of both directed sets as "msd", full
    connectivity); its own numbers come from SimpleITK's Maurer distance map in float32 and
    can differ slightly.
    """
    ls, scalar = _labels(labels)
    if not scalar:
        raise ValueError("compare takes one label (an integer) or None")
    out = {}
    for name, _, opts in REFERENCES:
        rows = _run(gt, pred, spacing, ls, opts["hd95"], 95.0, opts["connectivity"], empty, 1.0,
                    "nan", True)
        r = rows[0]
        out[name] = {k: r[k] for k in ("dice", "hd", "hd95", "assd", "asd")}
    f = file or sys.stdout
    what = "foreground (non-zero)" if ls is None else f"label {ls[0]}"
    print(f"{what}; distances in mm", file=f)
    width = 28
    print(f"{'metric':<8}" + "".join(f"{n:>{width}}" for n, _, _ in REFERENCES), file=f)
    print(f"{'':<8}" + "".join(f"{'(' + d + ')':>{width}}" for _, d, _ in REFERENCES), file=f)
    for k in ("dice", "hd", "hd95", "assd", "asd"):
        print(f"{k:<8}" + "".join(f"{out[n][k]:>{width}.6f}" for n, _, _ in REFERENCES), file=f)
    return out
