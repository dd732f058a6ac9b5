//! Rough forward + backward timings of the losses on a training-sized batch
//! (f32, CPU): `cargo run --release -p medseg-losses --example loss_timing`.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use medseg_losses::{LossRegistry, LossTarget, Prediction};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let (n, c, h, w) = (8usize, 4usize, 256usize, 256usize);
    let logits = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev)?;
    let labels = Tensor::rand(0f32, c as f32, (n, 1, h, w), &dev)?
        .floor()?
        .to_dtype(DType::U32)?;
    let image = Tensor::rand(0f32, 1.0, (n, 1, h, w), &dev)?;
    let reg = LossRegistry::with_builtins();
    let cases = [
        (
            "CrossEntropyLoss",
            json!({}),
            LossTarget::class_map(labels.clone()),
        ),
        ("DiceLoss", json!({}), LossTarget::class_map(labels.clone())),
        (
            "CombinedLoss",
            json!({"terms": [{"loss": "DiceLoss", "weight": 0.5}, {"loss": "CrossEntropyLoss", "weight": 0.5}]}),
            LossTarget::class_map(labels.clone()),
        ),
        (
            "FocalLoss",
            json!({}),
            LossTarget::class_map(labels.clone()),
        ),
        ("EntropyLoss", json!({}), LossTarget::none()),
        (
            "GatedCRFLoss",
            json!({}),
            LossTarget::none().with_image(image.clone()),
        ),
    ];
    println!("batch [{n}, {c}, {h}, {w}] f32, forward + backward, best of 3");
    for (name, params, target) in cases {
        let loss = reg.build(name, &params)?;
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let x = Var::from_tensor(&logits)?;
            let t0 = Instant::now();
            let v = loss.forward(&Prediction::logits(x.as_tensor().clone()), &target)?;
            let g = v.backward()?;
            let _ = g.get(x.as_tensor()).map(|t| t.dims().to_vec());
            best = best.min(t0.elapsed().as_secs_f64());
        }
        println!("{name:>18}: {:8.1} ms", best * 1e3);
    }
    Ok(())
}
