//! Normalisation: against batch/instance/group norm composed from candle ops, the
//! returned statistics against direct sums, and central finite differences
//! for x, gamma and beta in every mode.

use candle_core::{DType, Device, Result, Tensor};
use medseg_ops::{
    activate, batch_norm_eval, batch_norm_train, group_norm, instance_norm, Activation,
};

// shared test helpers: tests/helpers/mod.rs
#[allow(dead_code)]
mod helpers;
use helpers::*;

/// Reference batch norm (training statistics) composed from candle ops.
fn reference_bn(x: &Tensor, g: &Tensor, b: &Tensor, eps: f64, act: Activation) -> Result<Tensor> {
    let c = x.dim(1)?;
    let mut bshape = vec![1usize; x.rank()];
    bshape[1] = c;
    let axes: Vec<usize> = (0..x.rank()).filter(|&a| a != 1).collect();
    let mut mean = x.clone();
    for &a in axes.iter().rev() {
        mean = mean.mean_keepdim(a)?;
    }
    let xc = x.broadcast_sub(&mean)?;
    let mut var = xc.sqr()?;
    for &a in axes.iter().rev() {
        var = var.mean_keepdim(a)?;
    }
    let y = xc
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(&g.reshape(bshape.clone())?)?
        .broadcast_add(&b.reshape(bshape)?)?;
    match act {
        Activation::Identity => Ok(y),
        Activation::Relu => y.relu(),
        Activation::LeakyRelu(s) => candle_nn::ops::leaky_relu(&y, s),
    }
}

fn params(seed: u64, c: usize) -> (Tensor, Tensor) {
    let mut r = rng(seed);
    let g = (rand_t(&mut r, &[c]) + 1.5).unwrap();
    let b = rand_t(&mut r, &[c]);
    (g, b)
}

#[test]
fn batch_norm_train_matches_composition_and_stats() {
    for (i, shape) in [
        vec![2usize, 3, 5, 7],
        vec![3, 2, 3, 4, 5],
        vec![1, 4, 33],
        vec![5, 3, 1, 1],
    ]
    .into_iter()
    .enumerate()
    {
        let x = rand_t(&mut rng(i as u64), &shape).affine(3.0, 2.0).unwrap();
        let c = shape[1];
        let (g, b) = params(50 + i as u64, c);
        for act in [
            Activation::Identity,
            Activation::Relu,
            Activation::LeakyRelu(0.01),
        ] {
            let (y, m, v) = batch_norm_train(&x, &g, &b, 1e-5, act).unwrap();
            let r = reference_bn(&x, &g, &b, 1e-5, act).unwrap();
            assert_close(&y, &r, 2e-5, "batch_norm_train");
            // statistics from plain sums
            let xv = vec(&x);
            let s: usize = shape[2..].iter().product();
            let n = shape[0];
            for ch in 0..c {
                let vals: Vec<f64> = (0..n)
                    .flat_map(|bb| {
                        xv[(bb * c + ch) * s..(bb * c + ch + 1) * s]
                            .iter()
                            .map(|&v| v as f64)
                    })
                    .collect();
                let mean = vals.iter().sum::<f64>() / vals.len() as f64;
                let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>()
                    / (vals.len() as f64 - 1.0);
                let (gm, gv) = (vec(&m)[ch] as f64, vec(&v)[ch] as f64);
                assert!(
                    (gm - mean).abs() < 1e-5 * (1.0 + mean.abs()),
                    "mean {gm} vs {mean}"
                );
                assert!(
                    (gv - var).abs() < 1e-5 * (1.0 + var.abs()),
                    "var {gv} vs {var}"
                );
            }
        }
    }
}

#[test]
fn batch_norm_eval_matches_composition() {
    let x = rand_t(&mut rng(3), &[2, 3, 4, 5]);
    let (g, b) = params(4, 3);
    let rm = Tensor::new(&[0.1f32, -0.2, 0.3], &Device::Cpu).unwrap();
    let rv = Tensor::new(&[0.5f32, 1.5, 2.0], &Device::Cpu).unwrap();
    let y = batch_norm_eval(&x, &g, &b, &rm, &rv, 1e-3, Activation::LeakyRelu(0.1)).unwrap();
    let r = x
        .broadcast_sub(&rm.reshape((1, 3, 1, 1)).unwrap())
        .unwrap()
        .broadcast_div(
            &(rv.reshape((1, 3, 1, 1)).unwrap() + 1e-3)
                .unwrap()
                .sqrt()
                .unwrap(),
        )
        .unwrap()
        .broadcast_mul(&g.reshape((1, 3, 1, 1)).unwrap())
        .unwrap()
        .broadcast_add(&b.reshape((1, 3, 1, 1)).unwrap())
        .unwrap();
    let r = candle_nn::ops::leaky_relu(&r, 0.1).unwrap();
    assert_close(&y, &r, 1e-5, "batch_norm_eval");
}

#[test]
fn instance_norm_matches_composition() {
    let x = rand_t(&mut rng(5), &[3, 2, 3, 5, 4])
        .affine(2.0, -1.0)
        .unwrap();
    let (g, b) = params(6, 2);
    let y = instance_norm(&x, Some(&g), Some(&b), 1e-5, Activation::Relu).unwrap();
    // instance norm of x == batch norm of each sample on its own
    for n in 0..3 {
        let xn = x.narrow(0, n, 1).unwrap();
        let r = reference_bn(&xn, &g, &b, 1e-5, Activation::Relu).unwrap();
        assert_close(&y.narrow(0, n, 1).unwrap(), &r, 2e-5, "instance_norm");
    }
    let y = instance_norm(&x, None, None, 1e-5, Activation::Identity).unwrap();
    let ones = Tensor::ones(2, DType::F32, &Device::Cpu).unwrap();
    let zeros = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
    let r = reference_bn(
        &x.narrow(0, 1, 1).unwrap(),
        &ones,
        &zeros,
        1e-5,
        Activation::Identity,
    )
    .unwrap();
    assert_close(
        &y.narrow(0, 1, 1).unwrap(),
        &r,
        2e-5,
        "instance_norm without affine",
    );
}

#[test]
fn f64_fallback_agrees() {
    let x = rand_t(&mut rng(7), &[2, 3, 4, 3]);
    let (g, b) = params(8, 3);
    let act = Activation::LeakyRelu(0.01);
    let f64t = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
    let (y, m, v) = batch_norm_train(&x, &g, &b, 1e-5, act).unwrap();
    let (y2, m2, v2) = batch_norm_train(&f64t(&x), &f64t(&g), &f64t(&b), 1e-5, act).unwrap();
    let f32t = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    assert_close(&f32t(&y2), &y, 1e-5, "bn y fallback");
    assert_close(&f32t(&m2), &m, 1e-5, "bn mean fallback");
    assert_close(&f32t(&v2), &v, 1e-5, "bn var fallback");
    let y = instance_norm(&x, Some(&g), Some(&b), 1e-5, act).unwrap();
    let y2 = instance_norm(&f64t(&x), Some(&f64t(&g)), Some(&f64t(&b)), 1e-5, act).unwrap();
    assert_close(&f32t(&y2), &y, 1e-5, "in fallback");
}

#[test]
fn gradients_match_finite_differences() {
    let x = rand_t(&mut rng(9), &[2, 3, 4, 5]);
    let (g, b) = params(10, 3);
    let inputs = [x.clone(), g.clone(), b.clone()];
    for (k, act) in [Activation::Identity, Activation::LeakyRelu(0.2)]
        .into_iter()
        .enumerate()
    {
        let eps = if act == Activation::Identity {
            1e-2
        } else {
            1e-3
        };
        let seed = 11 + k as u64;
        check_grads(
            |t| Ok(batch_norm_train(&t[0], &t[1], &t[2], 1e-5, act)?.0),
            &inputs,
            seed,
            eps,
            1e-2,
            40,
        );
        check_grads(
            |t| instance_norm(&t[0], Some(&t[1]), Some(&t[2]), 1e-5, act),
            &inputs,
            seed,
            eps,
            1e-2,
            40,
        );
        let rm = Tensor::new(&[0.1f32, -0.2, 0.3], &Device::Cpu).unwrap();
        let rv = Tensor::new(&[0.5f32, 1.5, 2.0], &Device::Cpu).unwrap();
        check_grads(
            |t| batch_norm_eval(&t[0], &t[1], &t[2], &rm, &rv, 1e-5, act),
            &inputs,
            seed,
            eps,
            1e-2,
            40,
        );
    }
    // activation alone on a 3D-shaped tensor for completeness of the fused path
    let x3 = rand_t(&mut rng(12), &[1, 2, 2, 3, 3]);
    let (g3, b3) = params(13, 2);
    check_grads(
        |t| Ok(batch_norm_train(&t[0], &t[1], &t[2], 1e-5, Activation::Identity)?.0),
        &[x3.clone(), g3, b3],
        14,
        1e-2,
        1e-2,
        36,
    );
    let _ = activate(&x3, Activation::Relu).unwrap();
}

/// Group norm of `x [N, C, ...]`: batch norm (no affine) of each sample's
/// `[1, G, C/G * S]` view, then the per-channel affine and `act`, composed
/// from candle ops.
fn reference_gn(
    x: &Tensor,
    groups: usize,
    g: &Tensor,
    b: &Tensor,
    eps: f64,
    act: Activation,
) -> Result<Tensor> {
    let (n, c) = (x.dim(0)?, x.dim(1)?);
    let s = x.elem_count() / (n * c);
    let ones = Tensor::ones(groups, DType::F32, &Device::Cpu)?;
    let zeros = Tensor::zeros(groups, DType::F32, &Device::Cpu)?;
    let mut rows = Vec::new();
    for i in 0..n {
        let xi = x.narrow(0, i, 1)?.reshape((1, groups, c / groups * s))?;
        rows.push(reference_bn(&xi, &ones, &zeros, eps, Activation::Identity)?);
    }
    let y = Tensor::cat(&rows, 0)?
        .reshape((n, c, s))?
        .broadcast_mul(&g.reshape((1, c, 1))?)?
        .broadcast_add(&b.reshape((1, c, 1))?)?
        .reshape(x.shape())?;
    match act {
        Activation::Identity => Ok(y),
        Activation::Relu => y.relu(),
        Activation::LeakyRelu(s) => candle_nn::ops::leaky_relu(&y, s),
    }
}

#[test]
fn group_norm_matches_composition() {
    let x = rand_t(&mut rng(20), &[3, 6, 5, 4])
        .affine(2.0, 1.0)
        .unwrap();
    let (g, b) = params(21, 6);
    for groups in [1, 2, 3, 6] {
        for act in [Activation::Identity, Activation::Relu] {
            let y = group_norm(&x, groups, Some(&g), Some(&b), 1e-5, act).unwrap();
            let r = reference_gn(&x, groups, &g, &b, 1e-5, act).unwrap();
            assert_close(&y, &r, 2e-5, &format!("group_norm {groups} groups"));
        }
    }
    // groups == C is instance norm; no affine means gamma 1, beta 0
    let y = group_norm(&x, 6, None, None, 1e-5, Activation::Identity).unwrap();
    let r = instance_norm(&x, None, None, 1e-5, Activation::Identity).unwrap();
    assert_close(&y, &r, 1e-6, "group_norm with C groups");
    // 3D input
    let x3 = rand_t(&mut rng(22), &[2, 4, 3, 2, 5]);
    let (g3, b3) = params(23, 4);
    let y = group_norm(
        &x3,
        2,
        Some(&g3),
        Some(&b3),
        1e-6,
        Activation::LeakyRelu(0.1),
    )
    .unwrap();
    let r = reference_gn(&x3, 2, &g3, &b3, 1e-6, Activation::LeakyRelu(0.1)).unwrap();
    assert_close(&y, &r, 2e-5, "group_norm 3D");
    // f64 takes the composition
    let f64t = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
    let y = group_norm(&x, 3, Some(&g), Some(&b), 1e-5, Activation::Relu).unwrap();
    let y2 = group_norm(
        &f64t(&x),
        3,
        Some(&f64t(&g)),
        Some(&f64t(&b)),
        1e-5,
        Activation::Relu,
    )
    .unwrap()
    .to_dtype(DType::F32)
    .unwrap();
    assert_close(&y2, &y, 1e-5, "group_norm f64 fallback");
}

#[test]
fn group_norm_gradients_match_finite_differences() {
    // gamma varies within each group, so the statistics' gradient must
    // weight dz by the channel's own gamma
    let x = rand_t(&mut rng(24), &[2, 4, 3, 5]);
    let (g, b) = params(25, 4);
    let inputs = [x, g, b];
    for (k, (groups, act)) in [
        (2, Activation::Identity),
        (1, Activation::LeakyRelu(0.2)),
        (4, Activation::Identity),
    ]
    .into_iter()
    .enumerate()
    {
        let eps = if act == Activation::Identity {
            1e-2
        } else {
            1e-3
        };
        check_grads(
            |t| group_norm(&t[0], groups, Some(&t[1]), Some(&t[2]), 1e-5, act),
            &inputs,
            26 + k as u64,
            eps,
            1e-2,
            40,
        );
    }
}

#[test]
fn wrong_parameter_shapes_are_errors() {
    let x = rand_t(&mut rng(1), &[2, 3, 4]);
    let (g, b) = params(2, 4);
    assert!(batch_norm_train(&x, &g, &b, 1e-5, Activation::Relu).is_err());
    assert!(instance_norm(&x, Some(&g), None, 1e-5, Activation::Relu).is_err());
    assert!(group_norm(&x, 3, Some(&g), None, 1e-5, Activation::Relu).is_err());
    let e = group_norm(&x, 2, None, None, 1e-5, Activation::Relu).unwrap_err();
    assert!(
        e.to_string()
            .contains("3 channels are not divisible into 2 groups"),
        "{e}"
    );
    assert!(group_norm(&x, 0, None, None, 1e-5, Activation::Relu).is_err());
}
