//! Gradient accumulation in candle's autograd, which the workspace patches
//! (`vendor/candle-core/PATCH.md`: a node's first gradient is stored, not
//! added to zeros). Each case is checked against its closed form, and every
//! parameter gradient must be a contiguous tensor of the parameter's shape,
//! as the optimisers read it.

use candle_core::{backprop::GradStore, Device, Tensor, Var};

fn var(shape: &[usize], seed: f32) -> Var {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as f32 + 1.0) * 0.37 + seed).sin())
        .collect();
    Var::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// The gradient stored for `v`: present, contiguous, of `v`'s shape.
fn grad_of(grads: &GradStore, v: &Var) -> Tensor {
    let g = grads
        .get(v.as_tensor())
        .expect("no gradient for a parameter");
    assert_eq!(g.dims(), v.dims(), "gradient shape");
    assert!(g.is_contiguous(), "parameter gradient is a strided view");
    g.clone()
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "[{i}]: {a} vs {b}");
    }
}

#[test]
fn a_node_reached_by_several_paths_gets_the_sum_of_their_gradients() {
    // loss = sum(w * (x*x + x + x)) => dloss/dx = w * (2x + 2)
    let x = var(&[3, 4], 0.1);
    let w = var(&[3, 4], 0.7);
    let xt = x.as_tensor();
    let y = ((xt * xt).unwrap() + xt).unwrap().add(xt).unwrap();
    let loss = (y * w.as_tensor()).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let g = values(&grad_of(&grads, &x));
    let want: Vec<f32> = values(xt)
        .iter()
        .zip(values(w.as_tensor()))
        .map(|(x, w)| w * (2.0 * x + 2.0))
        .collect();
    assert_close(&g, &want);
    // w is reached once: its gradient is x*x + 2x
    let gw = values(&grad_of(&grads, &w));
    let want_w: Vec<f32> = values(xt).iter().map(|x| x * x + 2.0 * x).collect();
    assert_close(&gw, &want_w);
}

#[test]
fn concatenated_inputs_get_their_slice_of_the_gradient_as_a_contiguous_tensor() {
    // c = cat([a, b], dim 1); loss = sum(w * c) => da = w[:, ..2], db = w[:, 2..]
    let a = var(&[2, 2, 3], 0.3);
    let b = var(&[2, 3, 3], 0.9);
    let w = var(&[2, 5, 3], 1.3);
    let c = Tensor::cat(&[a.as_tensor(), b.as_tensor()], 1).unwrap();
    let loss = (c * w.as_tensor()).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let wt = w.as_tensor();
    assert_close(
        &values(&grad_of(&grads, &a)),
        &values(&wt.narrow(1, 0, 2).unwrap()),
    );
    assert_close(
        &values(&grad_of(&grads, &b)),
        &values(&wt.narrow(1, 2, 3).unwrap()),
    );
}

#[test]
fn a_transposed_parameter_gets_a_contiguous_gradient_in_its_own_layout() {
    // loss = sum(w * a^T) => da = w^T, stored in a's row-major layout
    let a = var(&[3, 5], 0.5);
    let w = var(&[5, 3], 0.2);
    let loss = (a.as_tensor().t().unwrap() * w.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let want = values(&w.as_tensor().t().unwrap().contiguous().unwrap());
    assert_close(&values(&grad_of(&grads, &a)), &want);
}

#[test]
fn two_parameters_summed_into_one_node_get_equal_and_independent_gradients() {
    // loss = sum(w * (p + q)) => dp = dq = w; both are stored, and a later
    // update of one parameter must not change the other's gradient.
    let p = var(&[4, 2], 0.4);
    let q = var(&[4, 2], 0.8);
    let w = var(&[4, 2], 1.1);
    let s = (p.as_tensor() + q.as_tensor()).unwrap();
    let loss = (s * w.as_tensor()).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let gp = grad_of(&grads, &p);
    let gq = grad_of(&grads, &q);
    let want = values(w.as_tensor());
    assert_close(&values(&gp), &want);
    assert_close(&values(&gq), &want);
    // an optimiser writes parameters in place; gradients are left alone
    p.set(&(p.as_tensor() - &gp).unwrap()).unwrap();
    assert_close(&values(&gq), &want);
    assert_close(&values(&gp), &want);
}
