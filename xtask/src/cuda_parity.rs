//! `cargo xtask cuda-parity [--device cuda|cuda:N] [--tol 1e-4]`: the same
//! networks on the CPU (medseg-ops kernels) and on a CUDA device (candle's
//! CUDA ops), with identical weights and input: the training-mode logits, the
//! gradient of every parameter after one backward pass, and the weights after
//! one SGD step (lr 0.1) must agree to `tol` (relative to the largest
//! magnitude of each tensor). Needs a build with the `cuda` feature and a
//! GPU; prints one line per network and tensor kind, and fails if any
//! exceeds the tolerance.
//!
//! The weights after one AdamW step are printed too but not checked: Adam's
//! first step moves every weight by about `lr * sign(gradient)`, so a
//! parameter whose true gradient is zero (a convolution bias right before a
//! batch norm) moves by `+-lr` on rounding noise, differently on each device.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use medseg_nets::{build_network, trainable_vars};
use serde_json::json;

/// Deterministic input values in [-1, 1).
fn input(shape: &[usize], seed: f32) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as f32 * 0.7123 + seed).sin() * 43758.547).fract() * 2.0 - 1.0)
        .collect();
    Ok(Tensor::from_vec(v, shape.to_vec(), &Device::Cpu)?)
}

/// What one training step gives on a device, copied to the CPU.
struct Step {
    logits: Tensor,
    grads: Vec<Tensor>,
    sgd: Vec<Tensor>,
    adamw: Vec<Tensor>,
}

/// Logits, gradients and the weights after one SGD and one AdamW step on
/// `dev`, starting from the CPU weights in `init` (copied to `dev`).
fn step(cfg: &serde_json::Value, init: &VarMap, x: &Tensor, dev: &Device) -> Result<Step> {
    let vm = VarMap::new();
    let net = build_network(cfg, VarBuilder::from_varmap(&vm, DType::F32, dev))?;
    {
        let src = init.data().lock().unwrap_or_else(|e| e.into_inner());
        let dst = vm.data().lock().unwrap_or_else(|e| e.into_inner());
        for (name, var) in dst.iter() {
            let s = src.get(name).with_context(|| format!("no weight {name}"))?;
            var.set(&s.as_tensor().to_device(dev)?)?;
        }
    }
    let logits = net.forward_t(&x.to_device(dev)?, true)?.logits;
    // soft cross-entropy against a fixed soft target
    let target = candle_nn::ops::softmax(&input(logits.dims(), 3.0)?.to_device(dev)?, 1)?;
    let logp = candle_nn::ops::log_softmax(&logits, 1)?;
    let loss = ((logp * &target)?.sum_all()? * (-1.0 / logits.elem_count() as f64))?;
    let grads = loss.backward()?;
    let vars: Vec<Var> = trainable_vars(&vm);
    let gs = vars
        .iter()
        .map(|v| {
            grads
                .get(v)
                .map(|g| g.to_device(&Device::Cpu))
                .unwrap_or_else(|| v.as_tensor().zeros_like()?.to_device(&Device::Cpu))
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let cpu = |v: &Var| v.as_tensor().to_device(&Device::Cpu);
    let before = vars
        .iter()
        .map(cpu)
        .collect::<candle_core::Result<Vec<_>>>()?;
    let sgd = before
        .iter()
        .zip(&gs)
        .map(|(w, g)| w - (g * 0.1)?)
        .collect::<candle_core::Result<Vec<_>>>()?;
    let mut opt = AdamW::new(
        vars.clone(),
        ParamsAdamW {
            lr: 1e-3,
            weight_decay: 0.01,
            ..Default::default()
        },
    )?;
    opt.step(&grads)?;
    let adamw = vars
        .iter()
        .map(cpu)
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Step {
        logits: logits.to_device(&Device::Cpu)?,
        grads: gs,
        sgd,
        adamw,
    })
}

/// Largest `|a - b| / (1 + max |a|)` over a list of tensor pairs.
fn rel_diff(a: &[Tensor], b: &[Tensor]) -> Result<f32> {
    let mut worst = 0f32;
    for (a, b) in a.iter().zip(b) {
        let scale = a.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        let d = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        worst = worst.max(d / (1.0 + scale));
    }
    Ok(worst)
}

/// Runs the check.
pub fn run(args: &[String]) -> Result<()> {
    let mut device = "cuda".to_string();
    let mut tol = 1e-4f32;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--device" => device = it.next().context("--device needs cuda|cuda:N")?.clone(),
            "--tol" => {
                let v = it.next().context("--tol needs a number")?;
                tol = v
                    .parse()
                    .with_context(|| format!("--tol: not a number: {v:?}"))?;
            }
            other => bail!("cuda-parity: unknown argument {other:?}"),
        }
    }
    let dev = medseg_learners::parse_device(&device)?;
    let cases = [
        (
            "UNet 2D transconv",
            json!({"name": "UNet", "dimension": 2, "up_mode": "transconv"}),
            vec![2, 1, 64, 64],
        ),
        (
            "UNet 2D bilinear",
            json!({"name": "UNet", "dimension": 2, "up_mode": "bilinear"}),
            vec![2, 1, 48, 56],
        ),
        (
            "UNet 3D transconv",
            json!({"name": "UNet", "dimension": 3, "up_mode": "transconv"}),
            vec![1, 1, 16, 32, 32],
        ),
        (
            "AttentionUNet 2D",
            json!({"name": "AttentionUNet", "dimension": 2}),
            vec![2, 1, 32, 32],
        ),
    ];
    let mut failed = Vec::new();
    for (what, mut cfg, shape) in cases {
        cfg["in_chns"] = json!(1);
        cfg["class_num"] = json!(4);
        cfg["feature_chns"] = json!([8, 16, 32, 64]);
        cfg["dropout"] = json!([0.0, 0.0, 0.0, 0.0]);
        cfg["seed"] = json!(7);
        let init = VarMap::new();
        build_network(
            &cfg,
            VarBuilder::from_varmap(&init, DType::F32, &Device::Cpu),
        )?;
        let x = input(&shape, 0.0)?;
        let a = step(&cfg, &init, &x, &Device::Cpu)?;
        let b = step(&cfg, &init, &x, &dev)?;
        for (kind, d, checked) in [
            ("logits", rel_diff(&[a.logits], &[b.logits])?, true),
            ("gradients", rel_diff(&a.grads, &b.grads)?, true),
            ("weights after SGD", rel_diff(&a.sgd, &b.sgd)?, true),
            ("weights after AdamW", rel_diff(&a.adamw, &b.adamw)?, false),
        ] {
            let ok = d <= tol || !checked;
            println!(
                "{what:<20} {kind:<20} max rel diff {d:.2e}  {}",
                match (checked, ok) {
                    (false, _) => "(not checked: Adam's first step is lr*sign(g))",
                    (true, true) => "ok",
                    (true, false) => "FAIL",
                }
            );
            if !ok {
                failed.push(format!("{what} {kind}"));
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "cpu and {device} differ beyond {tol}: {}",
            failed.join(", ")
        );
    }
    println!("cpu and {device} agree to {tol} on every network");
    Ok(())
}
