//! Pooling: against candle's 2D pooling (forward and backward), central finite
//! differences, and PyTorch fixtures for 3D (tests/fixtures/pool3d.json).

use candle_core::{DType, Device, Tensor, Var};
use medseg_ops::{avg_pool2d, avg_pool3d, max_pool2d, max_pool3d};

// ---- test helpers (each test file of medseg-ops carries its own copy) ----
#[allow(dead_code)]
mod helpers {
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
}
use helpers::*;

#[test]
fn pool2d_matches_candle_forward_and_backward() {
    let cases = [
        ([2usize, 3, 8, 8], [2usize, 2], [2usize, 2]),
        ([1, 2, 7, 9], [2, 2], [2, 2]),
        ([2, 1, 9, 7], [3, 2], [2, 1]),
        ([1, 3, 5, 6], [3, 3], [1, 1]),
        ([3, 2, 11, 5], [1, 2], [1, 2]),
    ];
    for (i, (shape, k, s)) in cases.into_iter().enumerate() {
        let x = distinct_t(&mut rng(i as u64), &shape, 0.01);
        let w = rand_t(&mut rng(100 + i as u64), &{
            let mut d = shape.to_vec();
            d[2] = (shape[2] - k[0]) / s[0] + 1;
            d[3] = (shape[3] - k[1]) / s[1] + 1;
            d
        });
        for max in [true, false] {
            let v1 = Var::from_tensor(&x).unwrap();
            let v2 = Var::from_tensor(&x).unwrap();
            let (ours, theirs) = if max {
                (
                    max_pool2d(v1.as_tensor(), k, s).unwrap(),
                    v2.max_pool2d_with_stride((k[0], k[1]), (s[0], s[1]))
                        .unwrap(),
                )
            } else {
                (
                    avg_pool2d(v1.as_tensor(), k, s).unwrap(),
                    v2.avg_pool2d_with_stride((k[0], k[1]), (s[0], s[1]))
                        .unwrap(),
                )
            };
            assert_close(
                &ours,
                &theirs,
                1e-6,
                &format!("pool2d forward case {i} max={max}"),
            );
            // candle's backward needs kernel == stride and sizes divisible by it;
            // its max-pool backward scales the gradient by 1/(kh*kw) (it multiplies by
            // the window's share of maxima instead of dividing), so only the average
            // pool is compared here; the max pool is checked by finite differences.
            if max || k != s || shape[2] % k[0] != 0 || shape[3] % k[1] != 0 {
                continue;
            }
            let g1 = (ours * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (theirs * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            assert_close(
                g1.get(&v1).unwrap(),
                g2.get(&v2).unwrap(),
                1e-5,
                &format!("pool2d backward case {i} max={max}"),
            );
        }
    }
}

#[test]
fn pool_gradients_match_finite_differences() {
    // distinct values spaced 0.01 apart: a 1e-3 step never changes the argmax
    let x = distinct_t(&mut rng(11), &[1, 2, 5, 7, 6], 0.01);
    check_grads(
        |t| max_pool3d(&t[0], [2, 3, 2], [1, 2, 2]),
        std::slice::from_ref(&x),
        12,
        1e-3,
        2e-3,
        60,
    );
    check_grads(
        |t| avg_pool3d(&t[0], [3, 2, 2], [2, 1, 2]),
        std::slice::from_ref(&x),
        13,
        1e-2,
        2e-3,
        60,
    );
    let x2 = distinct_t(&mut rng(14), &[2, 2, 7, 5], 0.01);
    check_grads(
        |t| max_pool2d(&t[0], [3, 2], [2, 2]),
        std::slice::from_ref(&x2),
        15,
        1e-3,
        2e-3,
        60,
    );
    check_grads(
        |t| avg_pool2d(&t[0], [2, 3], [1, 2]),
        &[x2],
        16,
        1e-2,
        2e-3,
        60,
    );
}

#[test]
fn pool3d_matches_pytorch_fixtures() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pool3d.json"
    ))
    .unwrap();
    let cases: serde_json::Value = serde_json::from_str(&text).unwrap();
    let get = |c: &serde_json::Value, k: &str| -> Vec<f32> {
        c[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    let dims = |c: &serde_json::Value, k: &str| -> Vec<usize> {
        c[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect()
    };
    let mut n = 0;
    for c in cases.as_array().unwrap() {
        let xs = dims(c, "x_shape");
        let ys = dims(c, "y_shape");
        let k = dims(c, "kernel");
        let s = dims(c, "stride");
        let (k, s) = ([k[0], k[1], k[2]], [s[0], s[1], s[2]]);
        let x = Var::from_vec(get(c, "x"), xs.as_slice(), &Device::Cpu).unwrap();
        let w = Tensor::from_vec(get(c, "w"), ys.as_slice(), &Device::Cpu).unwrap();
        let y = match c["op"].as_str().unwrap() {
            "max_pool3d" => max_pool3d(x.as_tensor(), k, s).unwrap(),
            _ => avg_pool3d(x.as_tensor(), k, s).unwrap(),
        };
        assert_eq!(y.dims(), ys.as_slice());
        assert_close_vec(&vec(&y), &get(c, "y"), 1e-5, "pool3d y");
        let g = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        assert_close_vec(&vec(g.get(&x).unwrap()), &get(c, "dx"), 1e-5, "pool3d dx");
        n += 1;
    }
    assert_eq!(n, 6);
}

#[test]
fn f64_fallback_agrees_with_fast_path() {
    let x = rand_t(&mut rng(21), &[2, 3, 5, 6, 7]);
    let x64 = x.to_dtype(DType::F64).unwrap();
    let back = |t: Tensor| t.to_dtype(DType::F32).unwrap();
    assert_close(
        &back(max_pool3d(&x64, [2, 2, 3], [1, 2, 2]).unwrap()),
        &max_pool3d(&x, [2, 2, 3], [1, 2, 2]).unwrap(),
        1e-6,
        "max3d fallback",
    );
    assert_close(
        &back(avg_pool3d(&x64, [3, 2, 2], [2, 2, 1]).unwrap()),
        &avg_pool3d(&x, [3, 2, 2], [2, 2, 1]).unwrap(),
        1e-6,
        "avg3d fallback",
    );
}

#[test]
fn bad_shapes_are_errors() {
    let x = rand_t(&mut rng(1), &[1, 1, 3, 3]);
    assert!(max_pool2d(&x, [4, 2], [1, 1]).is_err());
    assert!(max_pool2d(&x, [2, 2], [0, 1]).is_err());
    assert!(max_pool3d(&x, [2, 2, 2], [2, 2, 2]).is_err());
}
