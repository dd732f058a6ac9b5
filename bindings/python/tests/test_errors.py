"""Bad input raises ValueError with a message that names what is wrong."""

import numpy as np
import pytest

import medseg_metrics as mm

A = np.zeros((4, 5), np.uint8)
A[1:3, 1:4] = 1


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: mm.dice(A, np.zeros((4, 6), np.uint8)), r"shape mismatch: gt has shape \(4, 5\) but pred has shape \(4, 6\)"),
        (lambda: mm.hd95(A, A, spacing=(1.0, 2.0, 3.0)), r"spacing has 3 values but the arrays have 2 axes"),
        (lambda: mm.hd95(A, A, spacing=(1.0, 0.0)), r"spacing values must be finite and positive"),
        (lambda: mm.hd95(A, A, spacing="1,2"), r"spacing"),
        (lambda: mm.dice(A.astype(np.float32), A), r"gt has dtype float32: label maps must hold integers or booleans"),
        (lambda: mm.dice(A, A.astype(np.float64)), r"pred has dtype float64"),
        (lambda: mm.dice(A, A, labels=1.0), r"labels must be integers, got 1.0"),
        (lambda: mm.dice(A, A, labels=[1, 2.5]), r"labels must be integers, got 2.5"),
        (lambda: mm.dice(A, A, labels=np.array([1.0])), r"labels must be integers, got an array of dtype float64"),
        (lambda: mm.dice(A, A, labels=[1, 1]), r"list a label twice"),
        (lambda: mm.dice(A, A, labels=70000), r"label 70000 lies outside 0..65535"),
        (lambda: mm.hd95(A, A, hd95="monai"), r"hd95=.monai.: expected 'pooled'"),
        (lambda: mm.hd95(A, A, connectivity=3), r"connectivity=3: expected 'face'"),
        (lambda: mm.hd95(A, A, empty="never"), r"empty='never': expected 'nan', 'inf', 'zero' or a number"),
        (lambda: mm.hd95(A, A, percentile=120), r"percentile must lie in \[0, 100\], got 120"),
        (lambda: mm.dice(np.zeros((2, 2, 2, 2), np.uint8), np.zeros((2, 2, 2, 2), np.uint8)), r"has 4 axes"),
        (lambda: mm.evaluate(np.zeros((3, 3), np.uint8), A[:3, :3]), r"gt holds no non-zero label"),
        (lambda: mm.labels_present(np.array([[-1, 0]])), r"label value -1 lies outside 0..=65535"),
        (lambda: mm.compare(A, A, labels=[1, 2]), r"compare takes one label"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
