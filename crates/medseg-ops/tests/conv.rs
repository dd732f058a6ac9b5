//! conv2d / conv3d: checked against a direct f64 reference with finite-difference
//! gradients, against candle's own conv2d (values and autograd gradients), and
//! against PyTorch fixtures (tools/make_conv_fixtures.py).

mod conv_util;

use candle_core::{DType, Device, Tensor};
use conv_util::*;
use medseg_ops::{conv2d, conv3d, Conv2dParams, Conv3dParams};

/// Runs our conv3d on `g` with bias and returns (y, dx, dw, db) for loss sum(y*r).
fn ours3d(g: &G, x: &[f32], w: &[f32], b: &[f32], r: &[f32]) -> [Vec<f32>; 4] {
    let xv = var(x, &[g.n, g.cin, g.inp[0], g.inp[1], g.inp[2]]);
    let wv = var(w, &[g.cout, g.cin / g.groups, g.k[0], g.k[1], g.k[2]]);
    let bv = var(b, &[g.cout]);
    let p = Conv3dParams {
        stride: g.s,
        padding: g.p,
        dilation: g.d,
        groups: g.groups,
    };
    let y = conv3d(xv.as_tensor(), wv.as_tensor(), Some(bv.as_tensor()), &p).unwrap();
    let o = g.conv_out();
    assert_eq!(y.dims(), &[g.n, g.cout, o[0], o[1], o[2]]);
    let loss = (&y * tensor(r, y.dims())).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    [
        to_vec(&y),
        to_vec(grads.get(xv.as_tensor()).unwrap()),
        to_vec(grads.get(wv.as_tensor()).unwrap()),
        to_vec(grads.get(bv.as_tensor()).unwrap()),
    ]
}

fn check_against_naive(g: G, seed: u64) {
    let mut r = rng(seed);
    let wlen = g.cout * (g.cin / g.groups) * g.k.iter().product::<usize>();
    let x = randv(&mut r, g.x_len());
    let w = randv(&mut r, wlen);
    let b = randv(&mut r, g.cout);
    let ylen = g.n * g.cout * g.conv_out().iter().product::<usize>();
    let rr = randv(&mut r, ylen);
    let [y, dx, dw, db] = ours3d(&g, &x, &w, &b, &rr);
    let (x64, w64, b64, r64) = (f64v(&x), f64v(&w), f64v(&b), f64v(&rr));
    let yref = naive_conv(&g, &x64, &w64, Some(&b64));
    assert_close(&y, &yref, 1e-5, &format!("{g:?} forward"));
    let loss = |a: &[Vec<f64>]| dot(&naive_conv(&g, &a[0], &a[1], Some(&a[2])), &r64);
    let args = vec![x64, w64, b64];
    assert_close(&dx, &fd_grad(&args, 0, &loss), 1e-4, &format!("{g:?} dx"));
    assert_close(&dw, &fd_grad(&args, 1, &loss), 1e-4, &format!("{g:?} dw"));
    assert_close(&db, &fd_grad(&args, 2, &loss), 1e-4, &format!("{g:?} db"));
}

#[allow(clippy::too_many_arguments)]
fn geom(
    n: usize,
    cin: usize,
    cout: usize,
    groups: usize,
    inp: [usize; 3],
    k: [usize; 3],
    s: [usize; 3],
    p: [usize; 3],
    d: [usize; 3],
) -> G {
    G {
        n,
        cin,
        cout,
        groups,
        inp,
        k,
        s,
        p,
        d,
        op: [0; 3],
    }
}

#[test]
fn conv3d_matches_direct_reference_and_finite_differences() {
    let cases = [
        geom(2, 2, 3, 1, [3, 4, 5], [3, 3, 3], [1; 3], [1; 3], [1; 3]),
        geom(
            1,
            4,
            6,
            2,
            [5, 3, 7],
            [2, 3, 3],
            [2, 1, 3],
            [1, 0, 2],
            [1, 1, 2],
        ),
        geom(2, 3, 2, 1, [3, 4, 3], [1; 3], [1; 3], [0; 3], [1; 3]),
        geom(1, 2, 3, 1, [4, 6, 4], [2; 3], [2; 3], [0; 3], [1; 3]),
        geom(
            1,
            3,
            3,
            3,
            [5, 5, 5],
            [3, 1, 2],
            [2, 2, 1],
            [0, 1, 1],
            [2, 1, 3],
        ),
        geom(
            1,
            2,
            2,
            1,
            [3, 7, 6],
            [1, 3, 3],
            [1, 2, 2],
            [0, 2, 1],
            [1, 1, 1],
        ),
    ];
    for (i, g) in cases.into_iter().enumerate() {
        check_against_naive(g, 100 + i as u64);
    }
}

#[test]
fn conv2d_matches_direct_reference_with_asymmetric_params() {
    let cases = [
        (
            [2usize, 4, 6, 2],
            [7usize, 6],
            [3usize, 2],
            [2usize, 1],
            [1usize, 2],
            [1usize, 2],
        ),
        ([1, 3, 3, 1], [5, 9], [1, 3], [1, 3], [0, 1], [1, 1]),
        ([2, 2, 4, 2], [6, 5], [3, 3], [1, 1], [1, 1], [2, 1]),
    ];
    for (i, (nc, hw, k, s, p, d)) in cases.into_iter().enumerate() {
        let [n, cin, cout, groups] = nc;
        let g = geom(
            n,
            cin,
            cout,
            groups,
            [1, hw[0], hw[1]],
            [1, k[0], k[1]],
            [1, s[0], s[1]],
            [0, p[0], p[1]],
            [1, d[0], d[1]],
        );
        let mut r = rng(200 + i as u64);
        let x = randv(&mut r, g.x_len());
        let w = randv(&mut r, cout * (cin / groups) * k[0] * k[1]);
        let b = randv(&mut r, cout);
        let params = Conv2dParams {
            stride: s,
            padding: p,
            dilation: d,
            groups,
        };
        let xv = var(&x, &[n, cin, hw[0], hw[1]]);
        let wv = var(&w, &[cout, cin / groups, k[0], k[1]]);
        let bv = var(&b, &[cout]);
        let y = conv2d(
            xv.as_tensor(),
            wv.as_tensor(),
            Some(bv.as_tensor()),
            &params,
        )
        .unwrap();
        let o = g.conv_out();
        assert_eq!(y.dims(), &[n, cout, o[1], o[2]]);
        let rr = randv(&mut r, y.elem_count());
        let grads = (&y * tensor(&rr, y.dims()))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (x64, w64, b64, r64) = (f64v(&x), f64v(&w), f64v(&b), f64v(&rr));
        assert_close(
            &to_vec(&y),
            &naive_conv(&g, &x64, &w64, Some(&b64)),
            1e-5,
            "conv2d forward",
        );
        let loss = |a: &[Vec<f64>]| dot(&naive_conv(&g, &a[0], &a[1], Some(&a[2])), &r64);
        let args = vec![x64, w64, b64];
        assert_close(
            &to_vec(grads.get(xv.as_tensor()).unwrap()),
            &fd_grad(&args, 0, &loss),
            1e-4,
            "conv2d dx",
        );
        assert_close(
            &to_vec(grads.get(wv.as_tensor()).unwrap()),
            &fd_grad(&args, 1, &loss),
            1e-4,
            "conv2d dw",
        );
        assert_close(
            &to_vec(grads.get(bv.as_tensor()).unwrap()),
            &fd_grad(&args, 2, &loss),
            1e-4,
            "conv2d db",
        );
    }
}

/// Our conv2d against candle's conv2d, values and autograd gradients, on shapes
/// big enough to split into many tiles and run the parallel paths.
#[test]
fn conv2d_matches_candle_conv2d_and_its_gradients() {
    // (n, cin, cout, h, w, k, stride, pad, dilation, groups); sizes chosen so that
    // candle's own conv2d backward (which derives output padding from the height
    // only) is defined.
    let cases = [
        (
            3usize, 5usize, 7usize, 37usize, 41usize, 3usize, 1usize, 1usize, 1usize, 1usize,
        ),
        (4, 16, 32, 32, 32, 3, 1, 1, 1, 1),
        (2, 8, 12, 33, 31, 3, 2, 1, 1, 4),
        (2, 6, 4, 29, 31, 5, 1, 2, 2, 2),
        (1, 3, 8, 40, 24, 1, 1, 0, 1, 1),
        (2, 4, 6, 32, 34, 2, 2, 0, 1, 1),
        (1, 1, 16, 64, 64, 3, 1, 1, 1, 1),
        (1, 32, 4, 20, 20, 1, 1, 0, 1, 1),
    ];
    for (i, &(n, cin, cout, h, wd, k, s, p, d, groups)) in cases.iter().enumerate() {
        let mut r = rng(300 + i as u64);
        let x = randv(&mut r, n * cin * h * wd);
        let w = randv(&mut r, cout * cin / groups * k * k);
        let b = randv(&mut r, cout);
        let xv = var(&x, &[n, cin, h, wd]);
        let wv = var(&w, &[cout, cin / groups, k, k]);
        let bv = var(&b, &[cout]);
        let params = Conv2dParams {
            stride: [s; 2],
            padding: [p; 2],
            dilation: [d; 2],
            groups,
        };
        let ours = conv2d(
            xv.as_tensor(),
            wv.as_tensor(),
            Some(bv.as_tensor()),
            &params,
        )
        .unwrap();
        let theirs = xv
            .as_tensor()
            .conv2d(wv.as_tensor(), p, s, d, groups)
            .unwrap()
            .broadcast_add(&bv.as_tensor().reshape((1, cout, 1, 1)).unwrap())
            .unwrap();
        assert_eq!(ours.dims(), theirs.dims(), "case {i}");
        let rr = tensor(&randv(&mut r, ours.elem_count()), ours.dims());
        let g1 = (&ours * &rr)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (&theirs * &rr)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let cmp = |a: &Tensor, b: &Tensor, what: &str| {
            assert_close(
                &to_vec(a),
                &f64v(&to_vec(b)),
                2e-4,
                &format!("case {i} {what}"),
            );
        };
        cmp(&ours, &theirs, "forward");
        for (t, name) in [
            (xv.as_tensor(), "dx"),
            (wv.as_tensor(), "dw"),
            (bv.as_tensor(), "db"),
        ] {
            cmp(g1.get(t).unwrap(), g2.get(t).unwrap(), name);
        }
    }
}

#[test]
fn conv3d_matches_pytorch_fixtures() {
    let mut n = 0;
    for case in load_fixtures().into_iter().filter(|c| c.kind == "conv3d") {
        let get = |k: &str| case.tensors.get(k).unwrap();
        let (xd, x) = get("x");
        let (wd, w) = get("w");
        let (bd, b) = get("b");
        let (gyd, gy) = get("gy");
        let xv = var(x, xd);
        let wv = var(w, wd);
        let bv = var(b, bd);
        let p = Conv3dParams {
            stride: case.stride,
            padding: case.padding,
            dilation: case.dilation,
            groups: case.groups,
        };
        let y = conv3d(xv.as_tensor(), wv.as_tensor(), Some(bv.as_tensor()), &p).unwrap();
        assert_eq!(y.dims(), get("y").0.as_slice(), "{}", case.name);
        assert_close(
            &to_vec(&y),
            &f64v(&get("y").1),
            1e-5,
            &format!("{} y", case.name),
        );
        let grads = (&y * tensor(gy, gyd))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (t, key) in [
            (xv.as_tensor(), "dx"),
            (wv.as_tensor(), "dw"),
            (bv.as_tensor(), "db"),
        ] {
            assert_close(
                &to_vec(grads.get(t).unwrap()),
                &f64v(&get(key).1),
                1e-4,
                &format!("{} {key}", case.name),
            );
        }
        n += 1;
    }
    assert_eq!(n, 4);
}

#[test]
fn conv_without_bias_and_non_contiguous_input() {
    let mut r = rng(7);
    let x = tensor(&randv(&mut r, 2 * 3 * 9 * 11), &[2, 3, 11, 9])
        .transpose(2, 3)
        .unwrap();
    assert!(!x.is_contiguous());
    let w = tensor(&randv(&mut r, 4 * 3 * 9), &[4, 3, 3, 3]);
    let p = Conv2dParams {
        padding: [1, 0],
        ..Default::default()
    };
    let ours = conv2d(&x, &w, None, &p).unwrap();
    let g = geom(2, 3, 4, 1, [1, 9, 11], [1, 3, 3], [1; 3], [0, 1, 0], [1; 3]);
    let xr = f64v(&to_vec(&x.contiguous().unwrap()));
    assert_close(
        &to_vec(&ours),
        &naive_conv(&g, &xr, &f64v(&to_vec(&w)), None),
        1e-5,
        "no-bias forward",
    );
}

#[test]
fn conv_rejects_bad_arguments() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 4, 8, 8), DType::F32, &dev).unwrap();
    let w = Tensor::zeros((6, 4, 3, 3), DType::F32, &dev).unwrap();
    let ok = Conv2dParams::default();
    // groups that do not divide the channels / do not match the weight
    assert!(conv2d(&x, &w, None, &Conv2dParams { groups: 3, ..ok }).is_err());
    assert!(conv2d(&x, &w, None, &Conv2dParams { groups: 2, ..ok }).is_err());
    assert!(conv2d(&x, &w, None, &Conv2dParams { groups: 0, ..ok }).is_err());
    // zero stride, kernel larger than the padded input
    assert!(conv2d(
        &x,
        &w,
        None,
        &Conv2dParams {
            stride: [0, 1],
            ..ok
        }
    )
    .is_err());
    assert!(conv2d(
        &x,
        &w,
        None,
        &Conv2dParams {
            dilation: [5, 1],
            ..ok
        }
    )
    .is_err());
    // wrong bias shape, wrong dtype, wrong rank
    let b = Tensor::zeros(5, DType::F32, &dev).unwrap();
    assert!(conv2d(&x, &w, Some(&b), &ok).is_err());
    assert!(conv2d(&x.to_dtype(DType::F64).unwrap(), &w, None, &ok).is_err());
    assert!(conv3d(&x, &w, None, &Conv3dParams::default()).is_err());
    // and the valid call works
    assert_eq!(conv2d(&x, &w, None, &ok).unwrap().dims(), &[1, 6, 6, 6]);
}

/// The stand-alone gradient functions agree with conv2d's autograd gradients.
#[test]
fn conv2d_input_and_weight_grad_match_autograd() {
    let mut r = rng(900);
    for (n, cin, cout, h, wd, k, s, pd, d, groups) in [
        (
            2usize, 4usize, 6usize, 13usize, 10usize, 3usize, 2usize, 1usize, 1usize, 2usize,
        ),
        (1, 3, 5, 9, 11, 1, 1, 0, 1, 1),
    ] {
        let xv = var(&randv(&mut r, n * cin * h * wd), &[n, cin, h, wd]);
        let wv = var(
            &randv(&mut r, cout * cin / groups * k * k),
            &[cout, cin / groups, k, k],
        );
        let p = Conv2dParams {
            stride: [s, s],
            padding: [pd, pd],
            dilation: [d, d],
            groups,
        };
        let y = conv2d(xv.as_tensor(), wv.as_tensor(), None, &p).unwrap();
        let gy = tensor(&randv(&mut r, y.elem_count()), y.dims());
        let grads = (&y * &gy).unwrap().sum_all().unwrap().backward().unwrap();
        let dx = medseg_ops::conv2d_input_grad(&gy, wv.as_tensor(), [h, wd], &p).unwrap();
        let dw = medseg_ops::conv2d_weight_grad(xv.as_tensor(), &gy, [k, k], &p).unwrap();
        assert_eq!(dx.dims(), &[n, cin, h, wd]);
        assert_eq!(dw.dims(), wv.as_tensor().dims());
        assert_close(
            &to_vec(&dx),
            &f64v(&to_vec(grads.get(xv.as_tensor()).unwrap())),
            1e-5,
            "input grad",
        );
        assert_close(
            &to_vec(&dw),
            &f64v(&to_vec(grads.get(wv.as_tensor()).unwrap())),
            1e-5,
            "weight grad",
        );
        // mismatched gradient size is rejected
        assert!(medseg_ops::conv2d_input_grad(&gy, wv.as_tensor(), [h + 5, wd], &p).is_err());
    }
}

/// Gradients are produced for the weight when the input is a plain tensor
/// (no input gradient is computed then), and they match the full computation.
#[test]
fn conv_gradient_only_for_tracked_arguments() {
    let mut r = rng(1000);
    let xs = randv(&mut r, 2 * 3 * 8 * 7);
    let ws = randv(&mut r, 4 * 3 * 9);
    let p = Conv2dParams {
        padding: [1, 1],
        ..Default::default()
    };
    let x_plain = tensor(&xs, &[2, 3, 8, 7]);
    let wv = var(&ws, &[4, 3, 3, 3]);
    let y = conv2d(&x_plain, wv.as_tensor(), None, &p).unwrap();
    let rr = tensor(&randv(&mut r, y.elem_count()), y.dims());
    let g1 = (&y * &rr).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(g1.get(&x_plain).is_none());
    let xv = var(&xs, &[2, 3, 8, 7]);
    let y2 = conv2d(xv.as_tensor(), wv.as_tensor(), None, &p).unwrap();
    let g2 = (&y2 * &rr).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(g2.get(xv.as_tensor()).is_some());
    let dw1 = to_vec(g1.get(wv.as_tensor()).unwrap());
    let dw2 = f64v(&to_vec(g2.get(wv.as_tensor()).unwrap()));
    assert_close(
        &dw1,
        &dw2,
        1e-6,
        "weight gradient with and without input gradient",
    );
}
