"""The wheel against the values MedPy 0.5.2 and MONAI 1.6 computed on the committed fixtures
(MONAI needs torch, so it is compared through these fixtures only)."""

import math

import medseg_metrics as mm
from conftest import close, ref


def test_medpy_values_both_connectivities(fixture):
    gt, pred, sp = fixture["gt"], fixture["pred"], fixture["spacing"]
    checked = 0
    for c in fixture["classes"]:
        label, r = c["class_id"], c["medpy"]
        close(mm.dice(gt, pred, sp, label), ref(r["dc"]), f"{fixture['name']} {label} dc")
        # MedPy's jc of two empty masks is 1.0
        close(mm.iou(gt, pred, sp, label, zero_division=1.0), ref(r["jc"]), f"{label} jc")
        for conn, key in (("face", "face"), (gt.ndim, "full")):
            kw = dict(connectivity=conn, empty="nan")  # MedPy raises on empty masks
            for metric, rkey in (("hd", "hd"), ("hd95", "hd95"), ("assd", "assd"), ("asd", "asd")):
                want = ref(r[key][rkey])
                got = getattr(mm, metric)(gt, pred, sp, label, **kw)
                if want is None:
                    assert math.isnan(got)
                else:
                    close(got, want, f"{fixture['name']} label {label} {key} {metric}")
                    checked += 1
            # the reverse direction: MedPy asd(reference, result)
            want = ref(r[key]["asd_reverse"])
            if want is not None:
                got = mm.evaluate(gt, pred, sp, label, **kw)["asd_gt_to_pred"]
                close(got, want, f"{label} {key} asd reverse")
    assert checked > 0


def test_monai_values(fixture):
    gt, pred, sp = fixture["gt"], fixture["pred"], fixture["spacing"]
    for c in fixture["classes"]:
        label, r = c["class_id"], c["monai"]
        what = f"{fixture['name']} label {label} MONAI"
        kw = dict(hd95="max-of-directed")
        close(mm.hd(gt, pred, sp, label, **kw), ref(r["hd"]), what + " hd")
        # MONAI's HD95 interpolates between infinities when one mask is empty: NaN
        close(mm.hd95(gt, pred, sp, label, empty="nan", **kw), ref(r["hd95"]), what + " hd95")
        close(mm.assd(gt, pred, sp, label, **kw), ref(r["assd"]), what + " assd")
        close(mm.asd(gt, pred, sp, label, **kw), ref(r["asd"]), what + " asd")
        for tol in fixture["nsd_tolerances"]:
            close(mm.nsd(gt, pred, sp, label, nsd_tolerance=tol), ref(r["nsd_%g" % tol]),
                  f"{what} nsd at {tol} mm")


def test_pooled_and_max_of_directed_differ_on_a_fixture():
    from conftest import load

    f = load("multiclass_3d")
    a = mm.hd95(f["gt"], f["pred"], f["spacing"], 1)
    b = mm.hd95(f["gt"], f["pred"], f["spacing"], 1, hd95="max-of-directed")
    assert abs(a - b) > 0.1
    close(a, ref(f["classes"][0]["medpy"]["face"]["hd95"]), "pooled")
    close(b, ref(f["classes"][0]["monai"]["hd95"]), "max-of-directed")


def test_evaluate_gives_every_label_of_gt_and_matches_single_metrics(fixture):
    gt, pred, sp = fixture["gt"], fixture["pred"], fixture["spacing"]
    res = mm.evaluate(gt, pred, sp)
    present = sorted(int(v) for v in set(gt.ravel().tolist()) if v != 0)
    assert sorted(res) == present
    for label, m in res.items():
        assert set(m) == set(mm.METRICS)
        close(m["dice"], mm.dice(gt, pred, sp, label), "dice")
        close(m["hd95"], mm.hd95(gt, pred, sp, label), "hd95")
        assert m["tp"] + m["fn"] == int((gt == label).sum())
