//! affine_grid / grid_sample: the identity transform reproduces the input,
//! gradients (input, grid, theta) match central finite differences, and
//! outputs and gradients match PyTorch fixtures
//! (tests/fixtures/grid_sample.json, tools/make_grid_sample_fixtures.py) for
//! 2D and 3D, `align_corners` both ways, on the CPU kernel and on the
//! candle-op composition.

use candle_core::{DType, Device, Tensor, Var};
use medseg_ops::{affine_grid, grid_sample, with_candle_ops};

// shared test helpers: tests/helpers/mod.rs
#[allow(dead_code)]
mod helpers;
use helpers::*;

fn identity_theta(n: usize, s: usize) -> Tensor {
    let mut v = Vec::new();
    for _ in 0..n {
        for r in 0..s {
            for c in 0..=s {
                v.push(if r == c { 1f32 } else { 0.0 });
            }
        }
    }
    Tensor::from_vec(v, (n, s, s + 1), &Device::Cpu).unwrap()
}

#[test]
fn identity_theta_reproduces_the_input() {
    let x2 = rand_t(&mut rng(1), &[2, 3, 7, 5]);
    let x3 = rand_t(&mut rng(2), &[1, 2, 4, 5, 3]);
    for ac in [false, true] {
        for x in [&x2, &x3] {
            let s = x.rank() - 2;
            let g = affine_grid(&identity_theta(x.dim(0).unwrap(), s), x.dims(), ac).unwrap();
            let y = grid_sample(x, &g, ac).unwrap();
            assert_close(&y, x, 1e-6, &format!("identity {s}D ac={ac}"));
            let y = with_candle_ops(|| grid_sample(x, &g, ac)).unwrap();
            assert_close(&y, x, 1e-6, &format!("identity {s}D ac={ac} candle ops"));
            let y = grid_sample(
                &x.to_dtype(DType::F64).unwrap(),
                &g.to_dtype(DType::F64).unwrap(),
                ac,
            )
            .unwrap();
            assert_close(
                &y.to_dtype(DType::F32).unwrap(),
                x,
                1e-6,
                &format!("identity {s}D ac={ac} f64"),
            );
        }
    }
}

#[test]
fn shift_by_one_pixel_moves_the_image() {
    // align_corners = true: x + 2 / (W - 1) is one pixel to the right
    let x = rand_t(&mut rng(3), &[1, 1, 4, 6]);
    let theta =
        Tensor::from_vec(vec![1f32, 0.0, 0.4, 0.0, 1.0, 0.0], (1, 2, 3), &Device::Cpu).unwrap();
    let y = grid_sample(&x, &affine_grid(&theta, x.dims(), true).unwrap(), true).unwrap();
    let (xv, yv) = (vec(&x), vec(&y));
    for h in 0..4 {
        for w in 0..6 {
            let want = if w + 1 < 6 { xv[h * 6 + w + 1] } else { 0.0 };
            assert!((yv[h * 6 + w] - want).abs() < 1e-6, "({h},{w})");
        }
    }
}

/// Normalised coordinate of source position `u` on an axis of `size` pixels.
fn normalize(u: f32, size: usize, ac: bool) -> f32 {
    if ac {
        u * 2.0 / (size as f32 - 1.0) - 1.0
    } else {
        (2.0 * u + 1.0) / size as f32 - 1.0
    }
}

/// Source position of normalised coordinate `c` (PyTorch's unnormalize).
fn unnormalize(c: f32, size: usize, ac: bool) -> f32 {
    if ac {
        (c + 1.0) / 2.0 * (size as f32 - 1.0)
    } else {
        ((c + 1.0) * size as f32 - 1.0) / 2.0
    }
}

/// A random grid `[N, out..., S]` over an input of spatial `sizes` (outermost
/// first) whose points lie from 1.5 pixels outside to inside, at least 0.1
/// pixel from any pixel centre: the sampling is linear around each point,
/// so central differences are exact up to rounding.
fn kink_free_grid(seed: u64, n: usize, out: &[usize], sizes: &[usize], ac: bool) -> Tensor {
    use rand::Rng;
    let mut r = rng(seed);
    let s = sizes.len();
    let p: usize = out.iter().product();
    let mut v = Vec::with_capacity(n * p * s);
    for _ in 0..n * p {
        for j in 0..s {
            let size = sizes[s - 1 - j]; // (x, y, z) run along W, H, D
            let u =
                r.random_range(-1.5f32..size as f32 + 0.5).floor() + r.random_range(0.1f32..0.9);
            v.push(normalize(u, size, ac));
        }
    }
    let mut dims = vec![n];
    dims.extend_from_slice(out);
    dims.push(s);
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

/// Smallest distance (in pixels) of a grid coordinate to a pixel centre.
fn min_kink_distance(grid: &Tensor, sizes: &[usize], ac: bool) -> f32 {
    let s = sizes.len();
    vec(grid)
        .chunks(s)
        .flat_map(|g| {
            (0..s).map(move |j| {
                let u = unnormalize(g[j], sizes[s - 1 - j], ac);
                (u - u.round()).abs()
            })
        })
        .fold(f32::INFINITY, f32::min)
}

#[test]
fn gradients_match_finite_differences() {
    let x = rand_t(&mut rng(11), &[2, 2, 5, 6]);
    let x3 = rand_t(&mut rng(15), &[1, 2, 3, 4, 5]);
    for ac in [false, true] {
        let g = kink_free_grid(12, 2, &[4, 3], &[5, 6], ac);
        assert!(min_kink_distance(&g, &[5, 6], ac) > 0.09);
        let f = |t: &[Tensor]| grid_sample(&t[0], &t[1], ac);
        check_grads(f, &[x.clone(), g.clone()], 13, 1e-3, 2e-3, 48);
        with_candle_ops(|| check_grads(f, &[x.clone(), g.clone()], 14, 1e-3, 2e-3, 48));
        let g3 = kink_free_grid(16, 1, &[2, 3, 2], &[3, 4, 5], ac);
        check_grads(f, &[x3.clone(), g3.clone()], 17, 1e-3, 2e-3, 40);
    }
    // through affine_grid: gradient with respect to theta, for a theta whose
    // grid stays 0.02 pixel away from the kinks
    for ac in [false, true] {
        let theta = (1u64..)
            .map(|seed| {
                (identity_theta(2, 2) + (rand_t(&mut rng(100 + seed), &[2, 2, 3]) * 0.15).unwrap())
                    .unwrap()
            })
            .find(|t| {
                let g = affine_grid(t, &[2, 2, 4, 3], ac).unwrap();
                min_kink_distance(&g, &[5, 6], ac) > 0.02
            })
            .unwrap();
        check_grads(
            |t| grid_sample(&t[0], &affine_grid(&t[1], &[2, 2, 4, 3], ac)?, ac),
            &[x.clone(), theta],
            19,
            1e-4,
            2e-3,
            12,
        );
    }
}

#[test]
fn grid_gradient_is_zero_outside_and_input_gradient_sums_weights() {
    // a point far outside reads zero and gets no gradient; a point inside
    // spreads its incoming gradient with weights summing to one
    let x = Var::from_tensor(&rand_t(&mut rng(5), &[1, 1, 3, 3])).unwrap();
    let g = Var::from_vec(vec![3f32, 3.0, 0.1, -0.3], (1, 1, 2, 2), &Device::Cpu).unwrap();
    let y = grid_sample(x.as_tensor(), g.as_tensor(), false).unwrap();
    assert_eq!(vec(&y)[0], 0.0);
    let grads = y.sum_all().unwrap().backward().unwrap();
    let dg = vec(grads.get(&g).unwrap());
    assert_eq!(&dg[..2], &[0.0, 0.0]);
    let dx: f32 = vec(grads.get(&x).unwrap()).iter().sum();
    assert!((dx - 1.0).abs() < 1e-6, "{dx}");
}

#[test]
fn bad_shapes_are_errors() {
    let x = Tensor::zeros((2, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let g = Tensor::zeros((1, 3, 3, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(grid_sample(&x, &g, false).is_err());
    let g = Tensor::zeros((2, 3, 3, 3), DType::F32, &Device::Cpu).unwrap();
    assert!(grid_sample(&x, &g, false).is_err());
    assert!(affine_grid(&identity_theta(2, 2), &[2, 1, 4, 4, 4], false).is_err());
    assert!(affine_grid(&identity_theta(1, 2), &[2, 1, 4, 4], false).is_err());
}

struct Case {
    ac: bool,
    from_theta: bool,
    v: serde_json::Value,
}

impl Case {
    fn get(&self, k: &str) -> Vec<f32> {
        self.v[k]
            .as_array()
            .unwrap_or_else(|| panic!("key {k}"))
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    }
    fn dims(&self, k: &str) -> Vec<usize> {
        self.v[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect()
    }
    fn t(&self, k: &str, shape: &str) -> Tensor {
        Tensor::from_vec(self.get(k), self.dims(shape), &Device::Cpu).unwrap()
    }
}

fn fixtures() -> Vec<Case> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/grid_sample.json"
    ))
    .unwrap();
    let cases: serde_json::Value = serde_json::from_str(&text).unwrap();
    cases
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            ac: c["align_corners"].as_bool().unwrap(),
            from_theta: c["from_theta"].as_bool().unwrap(),
            v: c.clone(),
        })
        .collect()
}

/// Largest |a - b| / (1 + |b|).
fn max_err(a: &Tensor, b: &[f32]) -> f32 {
    let a = vec(&a.to_dtype(DType::F32).unwrap());
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f32::max)
}

fn check_case(c: &Case, dtype: DType, label: &str) -> f32 {
    let what = format!(
        "{label} x {:?} grid {:?} ac={} from_theta={}",
        c.dims("x_shape"),
        c.dims("grid_shape"),
        c.ac,
        c.from_theta
    );
    let x = Var::from_tensor(&c.t("x", "x_shape").to_dtype(dtype).unwrap()).unwrap();
    let theta = Var::from_tensor(&c.t("theta", "theta_shape").to_dtype(dtype).unwrap()).unwrap();
    let w = c.t("w", "y_shape").to_dtype(dtype).unwrap();
    let ga = affine_grid(theta.as_tensor(), &c.dims("size"), c.ac).unwrap();
    let mut worst = max_err(&ga, &c.get("grid_affine"));
    // the sampled grid: affine_grid's own output (the gradient flows to
    // theta) or the fixture's grid as a variable
    let gvar = Var::from_tensor(&c.t("grid", "grid_shape").to_dtype(dtype).unwrap()).unwrap();
    let grid = if c.from_theta {
        ga
    } else {
        gvar.as_tensor().clone()
    };
    let y = grid_sample(x.as_tensor(), &grid, c.ac).unwrap();
    assert_eq!(y.dims(), c.dims("y_shape").as_slice(), "{what}");
    worst = worst.max(max_err(&y, &c.get("y")));
    let grads = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
    worst = worst.max(max_err(grads.get(&x).unwrap(), &c.get("dx")));
    if c.from_theta {
        worst = worst.max(max_err(grads.get(&theta).unwrap(), &c.get("dtheta")));
    } else {
        worst = worst.max(max_err(grads.get(&gvar).unwrap(), &c.get("dgrid")));
    }
    assert!(worst <= 1e-5, "{what}: worst relative error {worst}");
    worst
}

#[test]
fn matches_pytorch_fixtures() {
    let cases = fixtures();
    assert_eq!(cases.len(), 10);
    let mut worst = [0f32; 3];
    for c in &cases {
        worst[0] = worst[0].max(check_case(c, DType::F32, "kernel"));
        worst[1] = worst[1].max(with_candle_ops(|| check_case(c, DType::F32, "candle ops")));
        worst[2] = worst[2].max(check_case(c, DType::F64, "f64"));
    }
    eprintln!(
        "worst relative error vs PyTorch: kernel {:.2e}, candle ops {:.2e}, f64 {:.2e}",
        worst[0], worst[1], worst[2]
    );
    // the fixtures exercise out-of-range points: some outputs are exactly zero
    let c = &cases[1];
    assert!(!c.from_theta && c.get("y").contains(&0.0));
}

#[test]
fn grid_gradient_of_fixture_grids_matches_pytorch() {
    // the from_theta cases also hold the grid gradient: check it directly
    for c in fixtures().iter().filter(|c| c.from_theta) {
        let x = c.t("x", "x_shape");
        let g = Var::from_tensor(&c.t("grid", "grid_shape")).unwrap();
        let y = grid_sample(&x, g.as_tensor(), c.ac).unwrap();
        let grads = (y * c.t("w", "y_shape"))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let e = max_err(grads.get(&g).unwrap(), &c.get("dgrid"));
        assert!(e <= 1e-5, "dgrid ac={}: {e}", c.ac);
    }
}
