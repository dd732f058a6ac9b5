//! The networks on the candle path that CUDA tensors take (forced on the CPU
//! with `medseg_ops::with_candle_ops`) against the fast CPU kernels: the
//! logits of a training-mode forward pass and the gradient of every
//! parameter agree.

mod common;

use candle_core::{Device, Tensor};
use common::{build, max_abs, max_abs_diff};
use medseg_nets::trainable_vars;
use serde_json::{json, Value};

fn input(shape: &[usize], seed: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as f32 * 0.7123 + seed).sin() * 43758.547).fract() * 2.0 - 1.0)
        .collect();
    Tensor::from_vec(v, shape.to_vec(), &Device::Cpu).unwrap()
}

/// Logits and parameter gradients of one training-mode pass of `cfg`.
fn pass(cfg: &Value, shape: &[usize]) -> (Tensor, Vec<Tensor>) {
    let (vm, net) = build(cfg);
    let x = input(shape, 0.0);
    let logits = net.forward_t(&x, true).unwrap().logits;
    let r = input(logits.dims(), 1.0);
    let grads = (&logits * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gs = trainable_vars(&vm)
        .iter()
        .map(|v| {
            grads
                .get(v)
                .expect("every parameter gets a gradient")
                .clone()
        })
        .collect();
    (logits, gs)
}

#[test]
fn networks_agree_on_both_paths() {
    let cases = [
        ("UNet", 2, "transconv", vec![2, 1, 17, 23]),
        ("UNet", 2, "bilinear", vec![2, 1, 16, 20]),
        ("UNet", 2, "nearest", vec![2, 1, 16, 16]),
        // 3D inputs large enough that the deepest batch norm sees more than
        // one value per channel (with one, y = beta = 0 sits on the leaky
        // ReLU's kink and the two paths may pick different sub-gradients)
        ("UNet", 3, "transconv", vec![2, 1, 16, 16, 16]),
        ("UNet", 3, "trilinear", vec![2, 1, 16, 17, 18]),
        ("AttentionUNet", 2, "transconv", vec![2, 1, 16, 16]),
        ("UNetpp", 2, "bilinear", vec![2, 1, 16, 16]),
    ];
    for (name, dim, up, shape) in cases {
        let mut cfg = json!({"name": name, "dimension": dim, "in_chns": 1, "class_num": 3,
                             "feature_chns": [2, 4, 4, 8], "dropout": [0.0, 0.0, 0.0, 0.0],
                             "seed": 5});
        cfg["up_mode"] = json!(up);
        let what = format!("{name} {dim}D {up}");
        let (y1, g1) = pass(&cfg, &shape);
        let (y2, g2) = medseg_ops::with_candle_ops(|| pass(&cfg, &shape));
        let d = max_abs_diff(&y1, &y2);
        assert!(
            d <= 1e-4 * (1.0 + max_abs(&y1)),
            "{what}: logits differ by {d}"
        );
        // Biases right before a batch norm have a true gradient of zero; what
        // both paths give there is rounding noise, so the tolerance has a
        // floor relative to the largest gradient of the network.
        let floor = g1.iter().map(max_abs).fold(0f32, f32::max) * 1e-5;
        for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
            let d = max_abs_diff(a, b);
            assert!(
                d <= 1e-3 * max_abs(a) + floor,
                "{what}: gradient of parameter {i} differs by {d} (max {})",
                max_abs(a)
            );
        }
    }
}
