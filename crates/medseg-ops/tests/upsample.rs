//! Up-sampling: against candle's nearest and bilinear forward, central finite
//! differences, and PyTorch fixtures (tests/fixtures/upsample.json) for
//! nearest 2D/3D, bilinear and trilinear with both `align_corners`.

use candle_core::{DType, Device, Tensor, Var};
use medseg_ops::{
    upsample_bilinear2d, upsample_nearest2d, upsample_nearest3d, upsample_trilinear3d,
};

// shared test helpers: tests/helpers/mod.rs
#[allow(dead_code)]
mod helpers;
use helpers::*;

#[test]
fn nearest2d_matches_candle() {
    for (i, (shape, size)) in [
        ([2usize, 3, 4, 5], [8usize, 10]),
        ([1, 2, 3, 3], [9, 6]),
        ([1, 1, 5, 7], [5, 7]),
        ([2, 1, 8, 6], [4, 3]),
    ]
    .into_iter()
    .enumerate()
    {
        let x = rand_t(&mut rng(i as u64), &shape);
        let ours = upsample_nearest2d(&x, size).unwrap();
        let theirs = x.upsample_nearest2d(size[0], size[1]).unwrap();
        assert_close(&ours, &theirs, 0.0, "nearest2d");
    }
}

#[test]
fn bilinear_matches_candle_forward() {
    for (i, (shape, size)) in [
        ([2usize, 3, 4, 5], [8usize, 10]),
        ([1, 2, 5, 3], [7, 11]),
        ([1, 1, 6, 7], [3, 4]),
    ]
    .into_iter()
    .enumerate()
    {
        let x = rand_t(&mut rng(10 + i as u64), &shape);
        for ac in [false, true] {
            let ours = upsample_bilinear2d(&x, size, ac).unwrap();
            let theirs = x.upsample_bilinear2d(size[0], size[1], ac).unwrap();
            assert_close(&ours, &theirs, 1e-5, "bilinear");
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    let x = rand_t(&mut rng(21), &[1, 2, 3, 4, 5]);
    for ac in [false, true] {
        check_grads(
            |t| upsample_trilinear3d(&t[0], [5, 7, 4], ac),
            std::slice::from_ref(&x),
            22,
            1e-2,
            2e-3,
            120,
        );
    }
    check_grads(
        |t| upsample_nearest3d(&t[0], [4, 9, 7]),
        std::slice::from_ref(&x),
        23,
        1e-2,
        2e-3,
        120,
    );
    let x2 = rand_t(&mut rng(24), &[2, 1, 5, 4]);
    for ac in [false, true] {
        check_grads(
            |t| upsample_bilinear2d(&t[0], [9, 3], ac),
            std::slice::from_ref(&x2),
            25,
            1e-2,
            2e-3,
            40,
        );
    }
    check_grads(
        |t| upsample_nearest2d(&t[0], [7, 11]),
        &[x2],
        26,
        1e-2,
        2e-3,
        40,
    );
}

#[test]
fn matches_pytorch_fixtures() {
    let cases = fixture_cases("upsample.json");
    let mut n = 0;
    for c in &cases {
        let xs = json_dims(c, "x_shape");
        let ys = json_dims(c, "y_shape");
        let sz = json_dims(c, "size");
        let ac = c["align_corners"].as_bool().unwrap_or(false);
        let op = c["op"].as_str().unwrap();
        let x = Var::from_vec(json_f32s(c, "x"), xs.as_slice(), &Device::Cpu).unwrap();
        let w = Tensor::from_vec(json_f32s(c, "w"), ys.as_slice(), &Device::Cpu).unwrap();
        let xt = x.as_tensor();
        let y = match op {
            "trilinear" => upsample_trilinear3d(xt, [sz[0], sz[1], sz[2]], ac),
            "nearest3d" => upsample_nearest3d(xt, [sz[0], sz[1], sz[2]]),
            "bilinear" => upsample_bilinear2d(xt, [sz[0], sz[1]], ac),
            "nearest2d" => upsample_nearest2d(xt, [sz[0], sz[1]]),
            other => panic!("unknown op {other}"),
        }
        .unwrap();
        assert_eq!(y.dims(), ys.as_slice(), "{op}");
        let what = format!("{op} {xs:?}->{sz:?} align_corners={ac}");
        assert_close_vec(&vec(&y), &json_f32s(c, "y"), 1e-5, &what);
        // the f64 composition fallback agrees too
        let y64 = match op {
            "trilinear" => {
                upsample_trilinear3d(&xt.to_dtype(DType::F64).unwrap(), [sz[0], sz[1], sz[2]], ac)
            }
            "nearest3d" => {
                upsample_nearest3d(&xt.to_dtype(DType::F64).unwrap(), [sz[0], sz[1], sz[2]])
            }
            "bilinear" => {
                upsample_bilinear2d(&xt.to_dtype(DType::F64).unwrap(), [sz[0], sz[1]], ac)
            }
            _ => upsample_nearest2d(&xt.to_dtype(DType::F64).unwrap(), [sz[0], sz[1]]),
        }
        .unwrap();
        assert_close_vec(
            &vec(&y64.to_dtype(DType::F32).unwrap()),
            &json_f32s(c, "y"),
            1e-5,
            &what,
        );
        let g = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        assert_close_vec(&vec(g.get(&x).unwrap()), &json_f32s(c, "dx"), 1e-5, &what);
        n += 1;
    }
    assert_eq!(n, 21);
}
