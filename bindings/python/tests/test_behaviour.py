"""The GIL is released while computing; compare() prints each reference's definition."""

import io
import sys
import threading
import time

import numpy as np

import medseg_metrics as mm
from conftest import close, load, ref


def test_gil_is_released_while_computing():
    """While a worker thread is inside one call, this thread keeps running: the longest pause
    between its loop iterations is a small part of the call. (With the GIL held through the
    call, as by a long regular-expression match, that pause is the whole call.)"""
    shape = (96, 160, 160)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    gt = ((z - 48) ** 2 / 40**2 + (y - 80) ** 2 / 70**2 + (x - 80) ** 2 / 70**2) <= 1
    pred = ((z - 50) ** 2 / 38**2 + (y - 78) ** 2 / 72**2 + (x - 83) ** 2 / 66**2) <= 1
    sys.setswitchinterval(1e-4)
    done = threading.Event()
    span = []

    def work():
        time.sleep(0.02)
        t = time.perf_counter()
        value = mm.hd95(gt, pred, (2.0, 0.8, 0.8))
        span.append((t, time.perf_counter(), value))
        done.set()

    t = threading.Thread(target=work)
    t.start()
    stamps = []
    while not done.is_set():
        stamps.append(time.perf_counter())
    t.join()
    a, b, value = span[0]
    assert value > 0
    points = [a] + [s for s in stamps if a <= s <= b] + [b]
    longest = max(q - p for p, q in zip(points, points[1:]))
    assert longest < 0.5 * (b - a), (longest, b - a)


def test_compare_prints_each_reference_definition():
    f = load("multiclass_3d")
    buf = io.StringIO()
    out = mm.compare(f["gt"], f["pred"], f["spacing"], labels=1, file=buf)
    text = buf.getvalue()
    for name in ("MedPy 0.5.2", "MONAI 1.6", "seg-metrics 1.2.8", "hd95", "assd", "label 1"):
        assert name in text, text
    r = f["classes"][0]
    close(out["MedPy 0.5.2"]["hd95"], ref(r["medpy"]["face"]["hd95"]), "MedPy hd95")
    close(out["MONAI 1.6"]["hd95"], ref(r["monai"]["hd95"]), "MONAI hd95")
    close(out["seg-metrics 1.2.8"]["hd95"], ref(r["medpy"]["full"]["hd95"]), "pooled, full")
    assert f"{out['MONAI 1.6']['hd95']:.6f}" in text
