//! Softmax over channels: against candle_nn's softmax/log_softmax on dim 1,
//! central finite differences, and large inputs (no overflow).

use candle_core::DType;
use medseg_ops::{log_softmax_channels, softmax_channels};

// shared test helpers: tests/helpers/mod.rs
#[allow(dead_code)]
mod helpers;
use helpers::*;

#[test]
fn matches_candle_nn() {
    for (i, shape) in [
        vec![2usize, 4, 5, 7],
        vec![1, 3, 2, 3, 5],
        vec![3, 1, 9],
        vec![2, 5, 1000],
        vec![1, 7],
    ]
    .into_iter()
    .enumerate()
    {
        let x = rand_t(&mut rng(i as u64), &shape).affine(8.0, 0.0).unwrap();
        let s = softmax_channels(&x).unwrap();
        assert_close(
            &s,
            &candle_nn::ops::softmax(&x, 1).unwrap(),
            2e-6,
            "softmax",
        );
        let l = log_softmax_channels(&x).unwrap();
        assert_close(
            &l,
            &candle_nn::ops::log_softmax(&x, 1).unwrap(),
            2e-6,
            "log_softmax",
        );
        // f64 composition fallback
        let l64 = log_softmax_channels(&x.to_dtype(DType::F64).unwrap()).unwrap();
        assert_close(
            &l64.to_dtype(DType::F32).unwrap(),
            &l,
            2e-6,
            "log_softmax f64",
        );
        let s64 = softmax_channels(&x.to_dtype(DType::F64).unwrap()).unwrap();
        assert_close(&s64.to_dtype(DType::F32).unwrap(), &s, 2e-6, "softmax f64");
    }
}

#[test]
fn large_logits_do_not_overflow() {
    let x = rand_t(&mut rng(9), &[2, 3, 4, 4])
        .affine(500.0, 300.0)
        .unwrap();
    let s = vec(&softmax_channels(&x).unwrap());
    assert!(s.iter().all(|v| v.is_finite() && *v >= 0.0 && *v <= 1.0));
    let l = log_softmax_channels(&x).unwrap();
    assert_close(
        &l,
        &candle_nn::ops::log_softmax(&x, 1).unwrap(),
        1e-5,
        "large log_softmax",
    );
}

#[test]
fn gradients_match_finite_differences() {
    let x = rand_t(&mut rng(10), &[2, 4, 3, 5])
        .affine(2.0, 0.0)
        .unwrap();
    check_grads(
        |t| softmax_channels(&t[0]),
        std::slice::from_ref(&x),
        11,
        1e-2,
        2e-3,
        60,
    );
    check_grads(|t| log_softmax_channels(&t[0]), &[x], 12, 1e-2, 2e-3, 60);
}
