//! Adaptive average pooling: PyTorch's bin rule checked by hand, equality
//! with plain average pooling where the output divides the input, the CPU
//! kernel against the candle composition (forward and backward), central
//! finite differences, and PyTorch's `adaptive_avg_pool{2,3}d` (values and
//! gradients, tests/fixtures/adaptive_pool.json by tools/make_ops_fixtures.py).

use candle_core::{Device, Tensor, Var};
use medseg_ops::adaptive_pool::adaptive_bin;
use medseg_ops::{
    adaptive_avg_pool2d, adaptive_avg_pool3d, avg_pool2d, avg_pool3d, with_candle_ops,
};

// shared test helpers: tests/helpers/mod.rs
#[allow(dead_code)]
mod helpers;
use helpers::*;

#[test]
fn bins_follow_pytorch_rule() {
    // L = 5 to O = 3: [0, 2), [1, 4), [3, 5) (overlapping bins)
    let b: Vec<_> = (0..3).map(|o| adaptive_bin(o, 5, 3)).collect();
    assert_eq!(b, vec![(0, 2), (1, 4), (3, 5)]);
    // up-sampling L = 2 to O = 5: each output a single input, repeated
    let b: Vec<_> = (0..5).map(|o| adaptive_bin(o, 2, 5)).collect();
    assert_eq!(b, vec![(0, 1), (0, 1), (0, 2), (1, 2), (1, 2)]);
    // global pooling
    assert_eq!(adaptive_bin(0, 7, 1), (0, 7));
}

#[test]
fn small_case_by_hand() {
    // one row 1..5 pooled to 3 -> means of [1,2], [2,3,4], [4,5]
    let x = Tensor::new(&[[[[1f32, 2., 3., 4., 5.]]]], &Device::Cpu).unwrap();
    let y = adaptive_avg_pool2d(&x, [1, 3]).unwrap();
    assert_close_vec(&vec(&y), &[1.5, 3.0, 4.5], 1e-6, "by hand");
}

#[test]
fn equals_avg_pool_when_divisible() {
    let x = rand_t(&mut rng(1), &[2, 3, 12, 8]);
    let a = adaptive_avg_pool2d(&x, [3, 4]).unwrap();
    let b = avg_pool2d(&x, [4, 2], [4, 2]).unwrap();
    assert_close(&a, &b, 1e-5, "2d divisible");
    let x = rand_t(&mut rng(2), &[1, 2, 6, 4, 9]);
    let a = adaptive_avg_pool3d(&x, [2, 2, 3]).unwrap();
    let b = avg_pool3d(&x, [3, 2, 3], [3, 2, 3]).unwrap();
    assert_close(&a, &b, 1e-5, "3d divisible");
}

#[test]
fn kernel_matches_candle_composition() {
    let cases: [(&[usize], &[usize]); 5] = [
        (&[2, 3, 7, 9], &[3, 4]),
        (&[1, 2, 5, 5], &[1, 1]),
        (&[1, 2, 3, 2], &[6, 5]),
        (&[2, 1, 5, 6, 7], &[2, 3, 3]),
        (&[1, 2, 4, 3, 2], &[3, 3, 3]),
    ];
    for (i, (shape, out)) in cases.into_iter().enumerate() {
        let x = rand_t(&mut rng(10 + i as u64), shape);
        let run = |x: &Tensor| {
            if out.len() == 2 {
                adaptive_avg_pool2d(x, [out[0], out[1]])
            } else {
                adaptive_avg_pool3d(x, [out[0], out[1], out[2]])
            }
            .unwrap()
        };
        let v1 = Var::from_tensor(&x).unwrap();
        let v2 = Var::from_tensor(&x).unwrap();
        let ours = run(v1.as_tensor());
        let theirs = with_candle_ops(|| run(v2.as_tensor()));
        assert_close(&ours, &theirs, 1e-5, &format!("forward case {i}"));
        let w = rand_t(&mut rng(50 + i as u64), ours.dims());
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
            &format!("backward case {i}"),
        );
    }
}

#[test]
fn gradients_match_finite_differences() {
    let x = rand_t(&mut rng(21), &[1, 2, 5, 7, 6]);
    check_grads(
        |t| adaptive_avg_pool3d(&t[0], [3, 4, 4]),
        std::slice::from_ref(&x),
        22,
        1e-2,
        2e-3,
        60,
    );
    let x2 = rand_t(&mut rng(23), &[2, 2, 7, 5]);
    check_grads(
        |t| adaptive_avg_pool2d(&t[0], [3, 2]),
        &[x2],
        24,
        1e-2,
        2e-3,
        60,
    );
}

#[test]
fn rejects_bad_sizes() {
    let x = rand_t(&mut rng(3), &[1, 1, 4, 4]);
    assert!(adaptive_avg_pool2d(&x, [0, 2]).is_err());
    assert!(adaptive_avg_pool3d(&x, [1, 2, 2]).is_err());
}

/// Values and input gradients of `sum(y * w)` equal PyTorch's, with the
/// fast kernel and with the candle composition.
#[test]
fn matches_pytorch_fixtures() {
    let cases = fixture_cases("adaptive_pool.json");
    let mut n = 0;
    for c in &cases {
        let (xs, ys, sz) = (
            json_dims(c, "x_shape"),
            json_dims(c, "y_shape"),
            json_dims(c, "size"),
        );
        let op = c["op"].as_str().unwrap();
        for composed in [false, true] {
            let x = Var::from_vec(json_f32s(c, "x"), xs.as_slice(), &Device::Cpu).unwrap();
            let w = Tensor::from_vec(json_f32s(c, "w"), ys.as_slice(), &Device::Cpu).unwrap();
            let run = || match op {
                "adaptive_avg_pool2d" => adaptive_avg_pool2d(x.as_tensor(), [sz[0], sz[1]]),
                "adaptive_avg_pool3d" => adaptive_avg_pool3d(x.as_tensor(), [sz[0], sz[1], sz[2]]),
                other => panic!("unknown op {other}"),
            };
            let y = if composed {
                with_candle_ops(run)
            } else {
                run()
            }
            .unwrap();
            let what = format!("{op} {xs:?}->{sz:?} composed={composed}");
            assert_eq!(y.dims(), ys.as_slice(), "{what}");
            assert_close_vec(&vec(&y), &json_f32s(c, "y"), 1e-5, &what);
            let g = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
            let dx = g.get(x.as_tensor()).unwrap();
            assert_close_vec(&vec(dx), &json_f32s(c, "dx"), 1e-5, &format!("{what} dx"));
        }
        n += 1;
    }
    assert_eq!(n, 6);
}
