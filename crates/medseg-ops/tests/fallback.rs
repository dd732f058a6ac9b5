//! The candle fallback of every public op (the path CUDA tensors take) against
//! the fast CPU kernels: forward values and the gradients of
//! `sum(y * r)` (r random, fixed) agree. The fallback is forced on the CPU
//! with `with_candle_ops`.

use candle_core::{Result, Tensor, Var};
use medseg_ops::*;

// shared test helpers: tests/helpers/mod.rs
#[allow(dead_code)]
mod helpers;
use helpers::*;

/// Forward value and input gradients of `f` on the given path.
fn run(
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    seed: u64,
) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts).unwrap();
    let r = rand_t(&mut rng(seed), y.dims());
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let gs = vars
        .iter()
        .map(|v| {
            grads
                .get(v)
                .cloned()
                .unwrap_or_else(|| v.as_tensor().zeros_like().unwrap())
        })
        .collect();
    (y, gs)
}

/// Asserts that the fast path and the candle fallback agree to `tol`.
fn compare(what: &str, f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor], tol: f32) {
    assert!(
        fast_path(&inputs[0]),
        "{what}: the CPU kernels should apply"
    );
    let (y1, g1) = run(&f, inputs, 7);
    let (y2, g2) = with_candle_ops(|| {
        assert!(!fast_path(&inputs[0]));
        run(&f, inputs, 7)
    });
    assert_close(&y2, &y1, tol, &format!("{what}: forward"));
    for (i, (a, b)) in g2.iter().zip(&g1).enumerate() {
        assert_close(a, b, tol, &format!("{what}: gradient of input {i}"));
    }
}

#[test]
fn switch_is_scoped_to_the_closure() {
    let x = rand_t(&mut rng(0), &[2, 3]);
    assert!(fast_path(&x));
    with_candle_ops(|| {
        assert!(!fast_path(&x));
        with_candle_ops(|| assert!(!fast_path(&x)));
        assert!(!fast_path(&x));
    });
    assert!(fast_path(&x));
    assert!(!fast_path(&x.to_dtype(candle_core::DType::F64).unwrap()));
}

#[test]
fn activations() {
    let x = rand_t(&mut rng(1), &[2, 3, 5, 6]);
    for (i, act) in [
        Activation::Relu,
        Activation::LeakyRelu(0.01),
        Activation::LeakyRelu(1.5),
    ]
    .into_iter()
    .enumerate()
    {
        compare(
            &format!("activate {i}"),
            |t| activate(&t[0], act),
            std::slice::from_ref(&x),
            1e-6,
        );
    }
}

#[test]
fn conv2d_all_parameters() {
    let cases: [(Conv2dParams, [usize; 4], [usize; 4]); 5] = [
        (Default::default(), [2, 3, 9, 8], [4, 3, 3, 3]),
        (
            Conv2dParams {
                padding: [1, 1],
                ..Default::default()
            },
            [2, 4, 8, 8],
            [5, 4, 3, 3],
        ),
        (
            Conv2dParams {
                stride: [2, 1],
                padding: [1, 2],
                dilation: [1, 2],
                groups: 1,
            },
            [1, 3, 11, 10],
            [2, 3, 3, 2],
        ),
        (
            Conv2dParams {
                stride: [2, 2],
                padding: [0, 1],
                dilation: [2, 2],
                groups: 2,
            },
            [2, 4, 12, 9],
            [6, 2, 3, 3],
        ),
        (Default::default(), [2, 8, 6, 7], [3, 8, 1, 1]),
    ];
    for (i, (p, xs, ws)) in cases.into_iter().enumerate() {
        let x = rand_t(&mut rng(10 + i as u64), &xs);
        let w = rand_t(&mut rng(20 + i as u64), &ws);
        let b = rand_t(&mut rng(30 + i as u64), &[ws[0]]);
        compare(
            &format!("conv2d case {i}"),
            |t| conv2d(&t[0], &t[1], Some(&t[2]), &p),
            &[x.clone(), w.clone(), b],
            1e-4,
        );
        let y = conv2d(&x, &w, None, &p).unwrap();
        let (_, _, ho, wo) = y.dims4().unwrap();
        let gy = rand_t(&mut rng(40 + i as u64), y.dims());
        let hw = [xs[2], xs[3]];
        compare(
            &format!("conv2d_input_grad case {i}"),
            |t| conv2d_input_grad(&t[0], &t[1], hw, &p),
            &[gy.clone(), w.clone()],
            1e-4,
        );
        assert_eq!((y.dim(2).unwrap(), y.dim(3).unwrap()), (ho, wo));
        compare(
            &format!("conv2d_weight_grad case {i}"),
            |t| conv2d_weight_grad(&t[0], &t[1], [ws[2], ws[3]], &p),
            &[x, gy],
            1e-4,
        );
    }
}

#[test]
fn conv3d_all_parameters() {
    let cases: [(Conv3dParams, [usize; 5], [usize; 5]); 3] = [
        (
            Conv3dParams {
                padding: [1; 3],
                ..Default::default()
            },
            [2, 3, 5, 6, 7],
            [4, 3, 3, 3, 3],
        ),
        (
            Conv3dParams {
                stride: [2, 1, 2],
                padding: [1, 0, 2],
                dilation: [2, 1, 1],
                groups: 1,
            },
            [1, 2, 9, 6, 8],
            [3, 2, 3, 2, 3],
        ),
        (
            Conv3dParams {
                groups: 2,
                ..Default::default()
            },
            [1, 4, 4, 5, 5],
            [2, 2, 2, 2, 2],
        ),
    ];
    for (i, (p, xs, ws)) in cases.into_iter().enumerate() {
        let x = rand_t(&mut rng(50 + i as u64), &xs);
        let w = rand_t(&mut rng(60 + i as u64), &ws);
        let b = rand_t(&mut rng(70 + i as u64), &[ws[0]]);
        compare(
            &format!("conv3d case {i}"),
            |t| conv3d(&t[0], &t[1], Some(&t[2]), &p),
            &[x, w, b],
            1e-4,
        );
    }
}

#[test]
fn conv_transpose_all_parameters() {
    let cases2: [(ConvTranspose2dParams, [usize; 4], [usize; 4]); 4] = [
        // the UNet up-sampling: candle's own conv_transpose2d
        (
            ConvTranspose2dParams {
                stride: [2, 2],
                ..Default::default()
            },
            [2, 6, 5, 4],
            [6, 3, 2, 2],
        ),
        (
            ConvTranspose2dParams {
                stride: [2, 2],
                padding: [1, 1],
                output_padding: [1, 1],
                ..Default::default()
            },
            [1, 3, 5, 5],
            [3, 2, 3, 3],
        ),
        // per-axis values and groups: the composed path
        (
            ConvTranspose2dParams {
                stride: [2, 3],
                padding: [1, 0],
                output_padding: [1, 2],
                dilation: [1, 2],
                groups: 1,
            },
            [2, 2, 4, 5],
            [2, 3, 3, 2],
        ),
        (
            ConvTranspose2dParams {
                stride: [2, 2],
                groups: 2,
                ..Default::default()
            },
            [1, 4, 3, 4],
            [4, 3, 2, 2],
        ),
    ];
    for (i, (p, xs, ws)) in cases2.into_iter().enumerate() {
        let x = rand_t(&mut rng(80 + i as u64), &xs);
        let w = rand_t(&mut rng(90 + i as u64), &ws);
        let b = rand_t(&mut rng(100 + i as u64), &[ws[1] * p.groups]);
        compare(
            &format!("conv_transpose2d case {i}"),
            |t| conv_transpose2d(&t[0], &t[1], Some(&t[2]), &p),
            &[x, w, b],
            1e-4,
        );
    }
    let cases3: [(ConvTranspose3dParams, [usize; 5], [usize; 5]); 2] = [
        (
            ConvTranspose3dParams {
                stride: [2; 3],
                ..Default::default()
            },
            [2, 4, 3, 4, 3],
            [4, 2, 2, 2, 2],
        ),
        (
            ConvTranspose3dParams {
                stride: [1, 2, 2],
                padding: [1, 0, 1],
                output_padding: [0, 1, 0],
                dilation: [1, 1, 2],
                groups: 1,
            },
            [1, 2, 4, 3, 4],
            [2, 3, 3, 2, 3],
        ),
    ];
    for (i, (p, xs, ws)) in cases3.into_iter().enumerate() {
        let x = rand_t(&mut rng(110 + i as u64), &xs);
        let w = rand_t(&mut rng(120 + i as u64), &ws);
        let b = rand_t(&mut rng(130 + i as u64), &[ws[1] * p.groups]);
        compare(
            &format!("conv_transpose3d case {i}"),
            |t| conv_transpose3d(&t[0], &t[1], Some(&t[2]), &p),
            &[x, w, b],
            1e-4,
        );
    }
}

#[test]
fn pooling() {
    // distinct values: no ties inside a max-pool window
    let cases2 = [
        ([2usize, 3, 8, 8], [2usize, 2], [2usize, 2]),
        ([1, 2, 7, 9], [2, 2], [2, 2]),
        ([2, 1, 9, 7], [3, 2], [2, 1]),
        ([1, 3, 5, 6], [3, 3], [1, 1]),
    ];
    for (i, (shape, k, s)) in cases2.into_iter().enumerate() {
        let x = distinct_t(&mut rng(140 + i as u64), &shape, 0.01);
        compare(
            &format!("max_pool2d case {i}"),
            |t| max_pool2d(&t[0], k, s),
            std::slice::from_ref(&x),
            1e-6,
        );
        compare(
            &format!("avg_pool2d case {i}"),
            |t| avg_pool2d(&t[0], k, s),
            &[x],
            1e-6,
        );
    }
    let cases3 = [
        ([1usize, 2, 4, 6, 6], [2usize, 2, 2], [2usize, 2, 2]),
        ([2, 1, 5, 7, 6], [2, 2, 2], [2, 2, 2]),
        ([1, 2, 5, 5, 6], [3, 2, 2], [1, 2, 1]),
    ];
    for (i, (shape, k, s)) in cases3.into_iter().enumerate() {
        let x = distinct_t(&mut rng(150 + i as u64), &shape, 0.01);
        compare(
            &format!("max_pool3d case {i}"),
            |t| max_pool3d(&t[0], k, s),
            std::slice::from_ref(&x),
            1e-6,
        );
        compare(
            &format!("avg_pool3d case {i}"),
            |t| avg_pool3d(&t[0], k, s),
            &[x],
            1e-6,
        );
    }
}

#[test]
fn upsampling() {
    let x2 = rand_t(&mut rng(160), &[2, 3, 5, 7]);
    let x3 = rand_t(&mut rng(161), &[1, 2, 3, 4, 5]);
    for size in [[10, 14], [7, 3]] {
        compare(
            "upsample_nearest2d",
            |t| upsample_nearest2d(&t[0], size),
            std::slice::from_ref(&x2),
            1e-6,
        );
        for ac in [false, true] {
            compare(
                &format!("upsample_bilinear2d {size:?} {ac}"),
                |t| upsample_bilinear2d(&t[0], size, ac),
                std::slice::from_ref(&x2),
                1e-5,
            );
        }
    }
    for size in [[6, 8, 10], [2, 5, 3]] {
        compare(
            "upsample_nearest3d",
            |t| upsample_nearest3d(&t[0], size),
            std::slice::from_ref(&x3),
            1e-6,
        );
        for ac in [false, true] {
            compare(
                &format!("upsample_trilinear3d {size:?} {ac}"),
                |t| upsample_trilinear3d(&t[0], size, ac),
                std::slice::from_ref(&x3),
                1e-5,
            );
        }
    }
}

#[test]
fn norms() {
    let x = rand_t(&mut rng(170), &[3, 4, 6, 5]);
    let g = (rand_t(&mut rng(171), &[4]) + 1.5).unwrap();
    let b = rand_t(&mut rng(172), &[4]);
    let rm = rand_t(&mut rng(173), &[4]);
    let rv = (rand_t(&mut rng(174), &[4]) + 1.5).unwrap();
    let act = Activation::LeakyRelu(0.01);
    compare(
        "batch_norm_train",
        |t| Ok(batch_norm_train(&t[0], &t[1], &t[2], 1e-5, act)?.0),
        &[x.clone(), g.clone(), b.clone()],
        1e-4,
    );
    let (_, m1, v1) = batch_norm_train(&x, &g, &b, 1e-5, act).unwrap();
    let (_, m2, v2) = with_candle_ops(|| batch_norm_train(&x, &g, &b, 1e-5, act)).unwrap();
    assert_close(&m2, &m1, 1e-5, "batch_norm_train mean");
    assert_close(&v2, &v1, 1e-5, "batch_norm_train variance");
    compare(
        "batch_norm_eval",
        |t| batch_norm_eval(&t[0], &t[1], &t[2], &rm, &rv, 1e-5, Activation::Relu),
        &[x.clone(), g.clone(), b.clone()],
        1e-5,
    );
    compare(
        "instance_norm affine",
        |t| instance_norm(&t[0], Some(&t[1]), Some(&t[2]), 1e-5, act),
        &[x.clone(), g.clone(), b.clone()],
        1e-4,
    );
    compare(
        "group_norm",
        |t| group_norm(&t[0], 2, Some(&t[1]), Some(&t[2]), 1e-5, act),
        &[x.clone(), g.clone(), b.clone()],
        1e-4,
    );
    let tokens = rand_t(&mut rng(176), &[2, 9, 12]);
    let (lg, lb) = (
        (rand_t(&mut rng(177), &[12]) + 1.0).unwrap(),
        rand_t(&mut rng(178), &[12]),
    );
    compare(
        "layer_norm",
        |t| layer_norm(&t[0], &t[1], &t[2], 1e-6),
        &[tokens, lg, lb],
        1e-4,
    );
    let x3 = rand_t(&mut rng(175), &[2, 3, 3, 4, 5]);
    compare(
        "instance_norm 3D",
        |t| instance_norm(&t[0], None, None, 1e-5, Activation::Identity),
        &[x3],
        1e-4,
    );
}

#[test]
fn softmax() {
    let x = (rand_t(&mut rng(180), &[2, 5, 6, 7]) * 4.0).unwrap();
    compare(
        "softmax_channels",
        |t| softmax_channels(&t[0]),
        std::slice::from_ref(&x),
        1e-5,
    );
    compare(
        "log_softmax_channels",
        |t| log_softmax_channels(&t[0]),
        &[x],
        1e-5,
    );
}
