//! `cargo xtask bench unet3d [--shape 2x1x64x128x128] [--features 8,16,32,64,128] [--up trilinear|transconv|both] [--iters N] [--warmup N] [--threads N] [--no-python] [--mode all|train|infer] [--device cpu|cuda|cuda:N]`:
//! PyMIC's UNet3D built through the network registry (dropout
//! [0,0,0,0.3,0.5], tri-linear up-sampling by default), trained with the
//! quickstart config's optimiser and loss (Adam, L2 1e-5, 0.5 Dice + 0.5 CE),
//! against the same network in PyTorch (NCDHW and channels-last-3d); the
//! machinery (child processes, peak memory, tables) is `bench_unet`'s.

use crate::bench_ops::parse_opts;
use crate::bench_unet::{run_cases, Case};
use anyhow::{bail, Context, Result};

/// Runs `bench unet3d`.
pub fn run(args: &[String]) -> Result<()> {
    let o = parse_opts(args, 5)?;
    let root = crate::python::workspace_root();
    let config = root.join("configs/supervised/quickstart.toml");
    let mut shape = vec![2usize, 1, 64, 128, 128];
    let mut feats = vec![8usize, 16, 32, 64, 128];
    let (mut mode, mut device, mut up) = (
        "all".to_string(),
        "cpu".to_string(),
        "trilinear".to_string(),
    );
    let mut it = o.rest.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| -> Result<String> {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        let list = |s: &str, sep: char| -> Result<Vec<usize>> {
            s.split(sep)
                .map(|d| {
                    d.trim()
                        .parse::<usize>()
                        .with_context(|| format!("not a number: {d:?}"))
                })
                .collect()
        };
        match a.as_str() {
            "--shape" => shape = list(&val("--shape")?, 'x')?,
            "--features" => feats = list(&val("--features")?, ',')?,
            "--mode" => mode = val("--mode")?,
            "--device" => device = val("--device")?,
            "--up" => up = val("--up")?,
            other => bail!("bench unet3d: unknown argument {other:?}"),
        }
    }
    if shape.len() != 5 || shape[1] != 1 {
        bail!("bench unet3d: --shape takes Nx1xDxHxW, got {shape:?}");
    }
    if feats.len() != 5 {
        bail!("bench unet3d: --features takes 5 numbers, got {feats:?}");
    }
    let ups: Vec<&str> = match up.as_str() {
        "both" => vec!["trilinear", "transconv"],
        "trilinear" => vec!["trilinear"],
        "transconv" => vec!["transconv"],
        u => bail!("bench unet3d: --up takes trilinear|transconv|both, got {u:?}"),
    };
    let cases: Vec<Case> = ups
        .into_iter()
        .map(|u| Case {
            label: format!("UNet3D {feats:?} ({u})"),
            config: config.clone(),
            network: serde_json::json!({
                "name": "UNet3D", "in_chns": 1, "class_num": 4, "seed": 1,
                "feature_chns": feats, "dropout": [0.0, 0.0, 0.0, 0.3, 0.5], "up_mode": u,
            }),
            shape: shape.clone(),
            mode: String::new(),
            device: device.clone(),
            iters: o.iters,
            warmup: o.warmup,
            threads: o.threads,
            malloc_tuned: o.malloc_tuned,
        })
        .collect();
    run_cases(&o, &cases, &mode)
}
