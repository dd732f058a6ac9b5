//! Layer normalisation over the last axis: against the same formula in f64
//! candle ops (values and gradients, rows of several lengths, more rows than
//! one backward task holds), central finite differences for x, gamma and
//! beta, and bad shapes.

use candle_core::{DType, Result, Tensor, Var, D};
use medseg_ops::layer_norm;

// shared test helpers: tests/helpers/mod.rs
#[allow(dead_code)]
mod helpers;
use helpers::*;

/// `(x - mean) / sqrt(var + eps) * g + b` over the last axis, in f64.
fn reference(x: &Tensor, g: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let (x, g, b) = (
        x.to_dtype(DType::F64)?,
        g.to_dtype(DType::F64)?,
        b.to_dtype(DType::F64)?,
    );
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    xc.broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(&g)?
        .broadcast_add(&b)
}

/// Value and the gradients of `sum(y * w)` for x, gamma and beta.
fn value_and_grads(
    f: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
    inputs: &[Tensor; 3],
    w: &Tensor,
) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let y = f(
        vars[0].as_tensor(),
        vars[1].as_tensor(),
        vars[2].as_tensor(),
    )
    .unwrap();
    let loss = (y.to_dtype(DType::F64).unwrap() * w.to_dtype(DType::F64).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let gs = vars
        .iter()
        .map(|v| grads.get(v).unwrap().to_dtype(DType::F32).unwrap())
        .collect();
    (y.to_dtype(DType::F32).unwrap(), gs)
}

#[test]
fn matches_the_formula_values_and_gradients() {
    for (i, shape) in [
        vec![3usize, 5, 8],
        vec![2, 70, 33],
        vec![4, 96],
        vec![1, 1, 7],
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 40 + 4 * i as u64;
        let e = *shape.last().unwrap();
        let x = rand_t(&mut rng(seed), &shape).affine(3.0, 1.5).unwrap();
        let g = (rand_t(&mut rng(seed + 1), &[e]) + 1.0).unwrap();
        let b = rand_t(&mut rng(seed + 2), &[e]);
        let w = rand_t(&mut rng(seed + 3), &shape);
        let inputs = [x, g, b];
        let (y, gs) = value_and_grads(|x, g, b| layer_norm(x, g, b, 1e-5), &inputs, &w);
        let inputs64: [Tensor; 3] = inputs.clone().map(|t| t.to_dtype(DType::F64).unwrap());
        let (r, rs) = value_and_grads(|x, g, b| reference(x, g, b, 1e-5), &inputs64, &w);
        assert_close(&y, &r, 2e-5, &format!("layer_norm {shape:?}"));
        for (k, (a, b)) in gs.iter().zip(&rs).enumerate() {
            assert_close(
                a,
                b,
                2e-4,
                &format!("layer_norm {shape:?}: gradient of input {k}"),
            );
        }
        // the f64 path (candle ops) agrees too
        let y64 = layer_norm(&inputs64[0], &inputs64[1], &inputs64[2], 1e-5)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        assert_close(&y64, &r, 1e-6, "layer_norm f64");
    }
}

#[test]
fn gradients_match_finite_differences() {
    let x = rand_t(&mut rng(60), &[2, 3, 6]);
    let g = (rand_t(&mut rng(61), &[6]) + 1.5).unwrap();
    let b = rand_t(&mut rng(62), &[6]);
    check_grads(
        |t| layer_norm(&t[0], &t[1], &t[2], 1e-5),
        &[x, g, b],
        63,
        1e-2,
        1e-2,
        40,
    );
}

#[test]
fn bad_shapes_are_errors() {
    let x = rand_t(&mut rng(70), &[2, 3, 4]);
    let g4 = rand_t(&mut rng(71), &[4]);
    let g3 = rand_t(&mut rng(72), &[3]);
    let e = layer_norm(&x, &g3, &g4, 1e-5).unwrap_err().to_string();
    assert!(e.contains("gamma must be [4]"), "{e}");
    let e = layer_norm(&x, &g4, &g3, 1e-5).unwrap_err().to_string();
    assert!(e.contains("beta must be [4]"), "{e}");
}
