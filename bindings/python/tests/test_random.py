"""The wheel against MedPy (live) on seeded random masks with anisotropic spacing, in every
integer dtype and bool, in C order, Fortran order and strided views."""

import numpy as np
import pytest
from medpy.metric import binary as mp

import medseg_metrics as mm
from conftest import close


def blob(rng, shape, fill):
    """A ragged blob: a random box with speckle noise."""
    m = rng.random(shape) < fill * 0.3
    lo = [rng.integers(0, s // 3) for s in shape]
    hi = [rng.integers(2 * s // 3, s) for s in shape]
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


CASES = [
    (seed, shape)
    for seed, shape in enumerate([(37, 41), (64, 23), (11, 17, 19), (20, 9, 31), (16, 16, 16)])
]


@pytest.mark.parametrize("seed,shape", CASES)
@pytest.mark.parametrize("connectivity", ["face", "full"])
def test_random_masks_match_medpy(seed, shape, connectivity):
    rng = np.random.default_rng(1000 + seed)
    gt, pred = blob(rng, shape, 0.5), blob(rng, shape, 0.5)
    spacing = tuple(float(x) for x in rng.uniform(0.4, 3.0, size=len(shape)))
    conn = 1 if connectivity == "face" else len(shape)
    kw = dict(voxelspacing=spacing, connectivity=conn)
    what = f"seed {seed} shape {shape} spacing {spacing} {connectivity}"
    close(mm.dice(gt, pred), mp.dc(pred, gt), what + " dice")
    close(mm.iou(gt, pred), mp.jc(pred, gt), what + " iou")
    close(mm.hd(gt, pred, spacing, connectivity=connectivity), mp.hd(pred, gt, **kw), what + " hd")
    close(mm.hd95(gt, pred, spacing, connectivity=connectivity), mp.hd95(pred, gt, **kw), what + " hd95")
    close(mm.assd(gt, pred, spacing, connectivity=connectivity), mp.assd(pred, gt, **kw), what + " assd")
    close(mm.asd(gt, pred, spacing, connectivity=connectivity), mp.asd(pred, gt, **kw), what + " asd")


DTYPES = [np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64]


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_gives_medpys_values(dtype):
    rng = np.random.default_rng(7)
    shape = (13, 21, 18)
    gt, pred = blob(rng, shape, 0.4), blob(rng, shape, 0.4)
    spacing = (2.5, 0.7, 1.1)
    want = mp.hd95(pred, gt, voxelspacing=spacing)
    # foreground written as label 3 (or True): MedPy reads any non-zero value as foreground
    g = (gt * (1 if dtype is np.bool_ else 3)).astype(dtype)
    p = (pred * (1 if dtype is np.bool_ else 3)).astype(dtype)
    close(mm.hd95(g, p, spacing), want, f"{np.dtype(dtype)} foreground")
    label = 1 if dtype is np.bool_ else 3
    close(mm.hd95(g, p, spacing, label), want, f"{np.dtype(dtype)} label {label}")


def test_layouts_and_mixed_dtypes_give_the_same_values():
    rng = np.random.default_rng(11)
    shape = (18, 26, 30)
    gt = blob(rng, shape, 0.4).astype(np.uint8) * 2
    pred = blob(rng, shape, 0.4).astype(np.uint8) * 2
    spacing = (3.0, 0.8, 1.3)
    want = mm.evaluate(gt, pred, spacing, 2)
    assert want["hd95"] > 0 and want["dice"] > 0
    variants = {
        "fortran": (np.asfortranarray(gt), np.asfortranarray(pred), spacing),
        "strided": (np.zeros((36, 26, 60), np.uint8), np.zeros((36, 26, 60), np.uint8), spacing),
        "reversed": (gt[::-1, :, ::-1], pred[::-1, :, ::-1], spacing),
        "transposed": (gt.transpose(2, 0, 1), pred.transpose(2, 0, 1), (1.3, 3.0, 0.8)),
        "mixed dtypes": (gt.astype(np.int64), pred, spacing),
        "big endian": (gt.astype(">u2"), pred.astype(">u2"), spacing),
    }
    variants["strided"][0][::2, :, ::2] = gt
    variants["strided"][1][::2, :, ::2] = pred
    variants["strided"] = (variants["strided"][0][::2, :, ::2], variants["strided"][1][::2, :, ::2], spacing)
    for name, (g, p, sp) in variants.items():
        got = mm.evaluate(g, p, sp, 2)
        for k in ("dice", "hd", "hd95", "assd", "asd", "asd_gt_to_pred", "nsd", "tp", "fp", "fn"):
            close(got[k], want[k], f"{name} {k}", rel=1e-12)


def test_lists_are_accepted():
    g = [[0, 1, 1], [0, 1, 0]]
    p = [[0, 1, 0], [0, 1, 0]]
    assert mm.dice(g, p) == pytest.approx(2 * 2 / 5)


def test_labels_forms():
    gt = np.array([[1, 1, 2, 2, 0, 0]], np.int32)
    pred = np.array([[1, 0, 2, 2, 2, 0]], np.int32)
    assert mm.dice(gt, pred, labels=1) == pytest.approx(2 / 3)
    assert mm.dice(gt, pred, labels=[1, 2]) == pytest.approx({1: 2 / 3, 2: 0.8})
    assert mm.dice(gt, pred, labels=np.array([2])) == pytest.approx({2: 0.8})
    # None: non-zero voxels as one mask (MedPy's reading): 4 gt, 4 pred, 3 shared
    assert mm.dice(gt, pred) == pytest.approx(0.75)
    assert sorted(mm.evaluate(gt, pred)) == [1, 2]
    assert mm.labels_present(gt) == [1, 2]
    # a label absent from both: NaN (zero_division), or the value asked for
    assert np.isnan(mm.dice(gt, pred, labels=9))
    assert mm.dice(gt, pred, labels=9, zero_division="zero") == 0.0
    assert mm.hd(gt, pred, labels=9, empty=("inf", 0.0)) == 0.0
    # only in the prediction
    gt2 = np.where(gt == 2, 0, gt)
    assert mm.hd(gt2, pred, labels=2) == np.inf
    assert mm.hd(gt2, pred, labels=2, empty=50) == 50.0
    assert np.isnan(mm.hd(gt2, pred, labels=2, empty="nan"))
