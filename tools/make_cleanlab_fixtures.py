"""Reference label issues from cleanlab 1.0.1 (the version PyMIC's CL-SLSR
uses) for medseg's confident learning.

Writes crates/medseg-learners/tests/fixtures/cleanlab.json: for a few
segmentation-like cases (given labels, out-of-sample probabilities), the
calibrated confident joint and the flags of `get_noise_indices` for each
prune method. Probabilities are rounded to float32 so that Rust reads the
same numbers. cleanlab 1.0.1 needs an older scikit-learn and numpy; run in
a venv of its own:
    python3 -m venv /tmp/clvenv
    /tmp/clvenv/bin/pip install cleanlab==1.0.1 "scikit-learn<1.5" "numpy<2"
    /tmp/clvenv/bin/python tools/make_cleanlab_fixtures.py
"""
import json
import pathlib

import cleanlab
import numpy as np
from cleanlab.latent_estimation import compute_confident_joint
from cleanlab.pruning import get_noise_indices

assert cleanlab.__version__ == "1.0.1", cleanlab.__version__

# cleanlab rounds the calibrated joint with `np.argsort`, whose default sort
# is not stable: on ties (two equal counts in a row, common) the winner
# depends on the machine (numpy's AVX-512 sort differs from its scalar one).
# Pin the tie-break to index order, which medseg implements.
_argsort = np.argsort
np.argsort = lambda a, axis=-1, kind=None, order=None: _argsort(a, axis=axis, kind="stable", order=order)

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/medseg-learners/tests/fixtures/cleanlab.json"


def case(seed, n, k, flip, sharp):
    """n pixels of k classes: true classes with a large background, given
    labels with a fraction `flip` moved to a neighbouring class, and
    probabilities that lean on the true class with concentration `sharp`."""
    rng = np.random.default_rng(seed)
    prior = np.array([0.55] + [0.45 / (k - 1)] * (k - 1))
    y = rng.choice(k, size=n, p=prior)
    s = y.copy()
    moved = rng.random(n) < flip
    s[moved] = (y[moved] + rng.choice([1, k - 1], size=moved.sum())) % k
    alpha = np.ones((n, k))
    alpha[np.arange(n), y] += sharp
    # the network half-learns the noisy labels too
    alpha[np.arange(n), s] += sharp * 0.4
    p = np.array([rng.dirichlet(a) for a in alpha]).astype(np.float32).astype(np.float64)
    p /= p.sum(axis=1, keepdims=True)
    p = p.astype(np.float32).astype(np.float64)
    return s.astype(np.int64), p


cases = []
for name, (seed, n, k, flip, sharp) in {
    "k2_light": (1, 400, 2, 0.2, 3.0),
    "k3_heavy": (2, 600, 3, 0.3, 4.0),
    "k4_mixed": (3, 800, 4, 0.2, 3.0),
}.items():
    s, p = case(seed, n, k, flip, sharp)
    cj = compute_confident_joint(s, p)
    flags = {
        m: np.flatnonzero(get_noise_indices(s, p, prune_method=m, n_jobs=1)).tolist()
        for m in ["prune_by_class", "prune_by_noise_rate", "both"]
    }
    cases.append({
        "name": name,
        "labels": s.tolist(),
        "probs": p.astype(np.float32).tolist(),
        "confident_joint": cj.astype(int).tolist(),
        "flagged": flags,
    })
    print(name, {m: len(v) for m, v in flags.items()}, cj.tolist())

OUT.write_text(json.dumps({"cleanlab": cleanlab.__version__, "cases": cases}))
print("wrote", OUT)
