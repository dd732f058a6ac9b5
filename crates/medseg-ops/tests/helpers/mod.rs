//! Helpers shared by the medseg-ops test files: random tensors, finite
//! differences and comparisons.

use candle_core::{Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Uniform values in [-1, 1).
pub fn rand_t(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// A random permutation of distinct values spaced by `gap` (no ties).
pub fn distinct_t(rng: &mut ChaCha8Rng, shape: &[usize], gap: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        idx.swap(i, j);
    }
    let v: Vec<f32> = idx
        .iter()
        .map(|&i| (i as f32 - n as f32 / 2.0) * gap)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

pub fn vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Asserts |a - b| <= tol * (1 + |b|) element-wise, and equal shapes.
pub fn assert_close(a: &Tensor, b: &Tensor, tol: f32, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes differ");
    let (va, vb) = (vec(a), vec(b));
    for (i, (x, y)) in va.iter().zip(&vb).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}: element {i}: {x} vs {y}"
        );
    }
}

pub fn assert_close_vec(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}: element {i}: {x} vs {y}"
        );
    }
}

/// Checks the gradients of `L = sum(f(inputs) * w)` (w random, fixed) with
/// respect to every input against central differences at up to `probes`
/// random positions per input.
pub fn check_grads(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    seed: u64,
    eps: f32,
    tol: f32,
    probes: usize,
) {
    let mut r = rng(seed);
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts).unwrap();
    let w = rand_t(&mut r, y.dims());
    let loss = (y * &w).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let wv: Vec<f64> = vec(&w).iter().map(|&v| v as f64).collect();
    let eval = |xs: &[Tensor]| -> f64 {
        let y = f(xs).unwrap();
        vec(&y).iter().zip(&wv).map(|(&a, &b)| a as f64 * b).sum()
    };
    for (k, v) in vars.iter().enumerate() {
        let g = vec(grads.get(v).expect("gradient present"));
        let base = vec(&inputs[k]);
        let n = base.len();
        for p in 0..probes.min(n) {
            let i = if probes >= n { p } else { r.random_range(0..n) };
            let mut plus = base.clone();
            plus[i] += eps;
            let mut minus = base.clone();
            minus[i] -= eps;
            let mk = |v: Vec<f32>| Tensor::from_vec(v, inputs[k].dims(), &Device::Cpu).unwrap();
            let mut xp: Vec<Tensor> = inputs.to_vec();
            xp[k] = mk(plus);
            let mut xm: Vec<Tensor> = inputs.to_vec();
            xm[k] = mk(minus);
            let num = ((eval(&xp) - eval(&xm)) / (2.0 * eps as f64)) as f32;
            assert!(
                (num - g[i]).abs() <= tol * (1.0 + num.abs()),
                "input {k}, element {i}: analytic {} vs numeric {num}",
                g[i]
            );
        }
    }
}

/// The cases of the PyTorch fixture `tests/fixtures/<name>` (a JSON array
/// written by tools/make_ops_fixtures.py).
pub fn fixture_cases(name: &str) -> Vec<serde_json::Value> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    match serde_json::from_str(&text).unwrap() {
        serde_json::Value::Array(cases) => cases,
        other => panic!("{path}: expected an array, got {other}"),
    }
}

/// The numbers of a fixture case's field `k`, as f32.
pub fn json_f32s(c: &serde_json::Value, k: &str) -> Vec<f32> {
    c[k].as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// The sizes of a fixture case's field `k`.
pub fn json_dims(c: &serde_json::Value, k: &str) -> Vec<usize> {
    c[k].as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect()
}
