//! Pooling: against candle's 2D pooling (forward and backward), central finite
//! differences, and PyTorch fixtures for 3D (tests/fixtures/pool3d.json).

use candle_core::{DType, Device, Tensor, Var};
use medseg_ops::{avg_pool2d, avg_pool3d, max_pool2d, max_pool3d};

// shared test helpers: tests/helpers/mod.rs
#[allow(dead_code)]
mod helpers;
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
    // 2x2 windows with stride 2 take a fast path of their own (odd sizes: the
    // last row and column are not covered)
    for (k, seed) in [([3, 2], 15), ([2, 2], 17)] {
        check_grads(
            |t| max_pool2d(&t[0], k, [2, 2]),
            std::slice::from_ref(&x2),
            seed,
            1e-3,
            2e-3,
            60,
        );
    }
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
    let cases = fixture_cases("pool3d.json");
    let mut n = 0;
    for c in &cases {
        let xs = json_dims(c, "x_shape");
        let ys = json_dims(c, "y_shape");
        let k = json_dims(c, "kernel");
        let s = json_dims(c, "stride");
        let (k, s) = ([k[0], k[1], k[2]], [s[0], s[1], s[2]]);
        let x = Var::from_vec(json_f32s(c, "x"), xs.as_slice(), &Device::Cpu).unwrap();
        let w = Tensor::from_vec(json_f32s(c, "w"), ys.as_slice(), &Device::Cpu).unwrap();
        let y = match c["op"].as_str().unwrap() {
            "max_pool3d" => max_pool3d(x.as_tensor(), k, s).unwrap(),
            _ => avg_pool3d(x.as_tensor(), k, s).unwrap(),
        };
        assert_eq!(y.dims(), ys.as_slice());
        assert_close_vec(&vec(&y), &json_f32s(c, "y"), 1e-5, "pool3d y");
        let g = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        assert_close_vec(
            &vec(g.get(&x).unwrap()),
            &json_f32s(c, "dx"),
            1e-5,
            "pool3d dx",
        );
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

#[test]
fn max_pool_gradient_goes_to_the_first_maximum_or_nan_of_a_window() {
    // PyTorch's rule: the first maximum in row-major window order wins ties;
    // a NaN wins over numbers (and the first NaN over later ones). Stride 2
    // takes the 2x2 fast path, stride (2, 1) the general kernel.
    let nan = f32::NAN;
    #[rustfmt::skip]
    let x = [
        1.0, 1.0, 0.0, 2.0, 5.0, nan,
        1.0, 1.0, 2.0, 2.0, nan, 9.0,
    ];
    let x = Tensor::from_vec(x.to_vec(), (1, 1, 2, 6), &Device::Cpu).unwrap();
    #[rustfmt::skip]
    let cases = [
        ([2, 2], vec![10f32, 20.0, 30.0], [
            10.0, 0.0, 0.0, 20.0, 0.0, 30.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ]),
        ([2, 1], vec![10f32, 20.0, 30.0, 40.0, 50.0], [
            10.0, 0.0, 0.0, 30.0, 0.0, 50.0,
            0.0, 0.0, 20.0, 0.0, 40.0, 0.0,
        ]),
    ];
    for (stride, dy, want) in cases {
        let n = dy.len();
        let dy = Tensor::from_vec(dy, (1, 1, 1, n), &Device::Cpu).unwrap();
        let v = Var::from_tensor(&x).unwrap();
        let y = max_pool2d(v.as_tensor(), [2, 2], stride).unwrap();
        let g = (y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
        let g = g
            .get(&v)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(g, want, "stride {stride:?}");
    }
}
