//! Activation ops: against candle's own ops and central finite differences.

use candle_core::{Device, Tensor};
use medseg_ops::{activate, leaky_relu, Activation};

// shared test helpers: tests/helpers/mod.rs
#[allow(dead_code)]
mod helpers;
use helpers::*;

/// Random values kept at least 0.05 away from the kink at 0.
fn away_from_zero(seed: u64, shape: &[usize]) -> Tensor {
    let t = rand_t(&mut rng(seed), shape);
    let v: Vec<f32> = vec(&t)
        .iter()
        .map(|&v| v.signum() * (0.05 + v.abs()))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn forward_matches_candle() {
    for (seed, shape) in [
        (1u64, vec![2, 3, 5, 7]),
        (2, vec![1, 1, 3, 4, 5]),
        (3, vec![40_001]),
    ] {
        let x = rand_t(&mut rng(seed), &shape);
        let ours = leaky_relu(&x, 0.01).unwrap();
        let theirs = candle_nn::ops::leaky_relu(&x, 0.01).unwrap();
        assert_close(&ours, &theirs, 1e-7, "leaky_relu");
        let ours = activate(&x, Activation::Relu).unwrap();
        assert_close(&ours, &x.relu().unwrap(), 0.0, "relu");
        let ours = activate(&x, Activation::Identity).unwrap();
        assert_close(&ours, &x, 0.0, "identity");
    }
}

#[test]
fn non_contiguous_input() {
    let x = rand_t(&mut rng(4), &[3, 4, 5]).transpose(0, 2).unwrap();
    let ours = leaky_relu(&x, 0.2).unwrap();
    let theirs = candle_nn::ops::leaky_relu(&x, 0.2).unwrap();
    assert_close(&ours, &theirs, 1e-7, "transposed");
}

#[test]
fn f64_fallback_matches_f32_path() {
    let x = rand_t(&mut rng(5), &[2, 3, 4]);
    let y32 = leaky_relu(&x, 0.1).unwrap();
    let y64 = leaky_relu(&x.to_dtype(candle_core::DType::F64).unwrap(), 0.1)
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap();
    assert_close(&y64, &y32, 1e-6, "f64 fallback");
}

#[test]
fn gradients_match_finite_differences() {
    let x = away_from_zero(6, &[2, 3, 5, 3]);
    for act in [
        Activation::Relu,
        Activation::LeakyRelu(0.01),
        Activation::LeakyRelu(0.3),
    ] {
        check_grads(
            |t| activate(&t[0], act),
            std::slice::from_ref(&x),
            7,
            1e-2,
            1e-3,
            90,
        );
    }
}
