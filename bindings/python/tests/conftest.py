"""Shared helpers of the wheel's test suite (run by tools/wheel/test.sh)."""

import json
import math
import os

import numpy as np
import pytest

FIXTURES = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "crates", "medseg-metrics", "tests", "fixtures"
)
NAMES = ("multiclass_2d", "multiclass_3d", "speckle_3d")


def load(name):
    """A committed fixture of tools/make_metric_fixtures.py: arrays, spacing and the values
    MedPy 0.5.2 and MONAI 1.6 computed on them."""
    with open(os.path.join(FIXTURES, name + ".json")) as f:
        doc = json.load(f)
    shape = tuple(doc["shape"])
    doc["pred"] = np.array(doc["pred"], dtype=np.uint16).reshape(shape)
    doc["gt"] = np.array(doc["gt"], dtype=np.uint16).reshape(shape)
    return doc


def ref(v):
    """A fixture value: None where the library raised, floats for "nan"/"inf"."""
    if v is None:
        return None
    return float(v)


def close(ours, theirs, what, rel=1e-6):
    if math.isnan(theirs):
        assert math.isnan(ours), f"{what}: expected NaN, got {ours}"
    elif math.isinf(theirs):
        assert ours == theirs, f"{what}: expected {theirs}, got {ours}"
    else:
        assert abs(ours - theirs) <= rel * abs(theirs) + 1e-12, f"{what}: ours {ours} vs reference {theirs}"


@pytest.fixture(params=NAMES)
def fixture(request):
    return load(request.param)
