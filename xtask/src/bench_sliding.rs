//! `cargo xtask bench sliding [--volume 96x256x256] [--window 64x128x128] [--overlap 0.5] [--sigma 0.125] [--sw-batch 1] [--features 8,16,32,64,128] [--iters N] [--warmup N] [--threads N] [--no-python] [--device cpu|cuda|cuda:N]`:
//! sliding-window inference of a whole 3D volume `1x1xDxHxW` with
//! medseg-infer's [`Predictor`] (Gaussian weighting) and PyMIC's UNet3D built
//! through the registry, against MONAI's `sliding_window_inference`
//! (`mode="gaussian"`, same overlap, sigma and window batch) with the same
//! network and weights in PyTorch (`tools/monai_sliding_bench.py`). Each side
//! runs in a process of its own: median time, peak resident memory (VmHWM)
//! and the per-class means of the predicted probabilities (which must agree
//! closely; the Gaussian maps differ slightly in centring).

use crate::bench_ops::{parse_opts, set_threads, tune_malloc};
use crate::bench_unet::{dump_inputs, inputs, median, run_child, vmhwm_kb, Case};
use anyhow::{bail, Context, Result};
use medseg_infer::{Predictor, SlidingWindow};
use medseg_learners::build_net;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// Settings of one sliding-window run (written to a JSON spec for the children).
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
struct SlideSpec {
    case: Case,
    window: Vec<usize>,
    overlap: f64,
    sigma_scale: f64,
    sw_batch: usize,
}

fn dims(s: &str, n: usize, what: &str) -> Result<Vec<usize>> {
    let v: Vec<usize> = s
        .split(['x', ','])
        .map(|d| {
            d.trim()
                .parse::<usize>()
                .with_context(|| format!("{what}: not a number: {d:?}"))
        })
        .collect::<Result<_>>()?;
    if v.len() != n {
        bail!("{what} takes {n} numbers, got {s:?}");
    }
    Ok(v)
}

/// Runs `bench sliding`.
pub fn run(args: &[String]) -> Result<()> {
    let o = parse_opts(args, 2)?;
    let root = crate::python::workspace_root();
    let (mut vol, mut win) = (vec![96usize, 256, 256], vec![64usize, 128, 128]);
    let mut feats = vec![8usize, 16, 32, 64, 128];
    let (mut overlap, mut sigma, mut swb) = (0.5f64, 0.125f64, 1usize);
    let mut device = "cpu".to_string();
    let mut it = o.rest.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| -> Result<String> {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--volume" => vol = dims(&val("--volume")?, 3, "--volume")?,
            "--window" => win = dims(&val("--window")?, 3, "--window")?,
            "--features" => feats = dims(&val("--features")?, 5, "--features")?,
            "--overlap" => overlap = val("--overlap")?.parse()?,
            "--sigma" => sigma = val("--sigma")?.parse()?,
            "--sw-batch" => swb = val("--sw-batch")?.parse::<usize>()?.max(1),
            "--device" => device = val("--device")?,
            other => bail!("bench sliding: unknown argument {other:?}"),
        }
    }
    let spec = SlideSpec {
        case: Case {
            label: format!("UNet3D {feats:?} sliding window"),
            config: root.join("configs/supervised/quickstart.toml"),
            network: serde_json::json!({
                "name": "UNet3D", "in_chns": 1, "class_num": 4, "seed": 1,
                "feature_chns": feats, "dropout": [0.0, 0.0, 0.0, 0.3, 0.5], "up_mode": "trilinear",
            }),
            shape: [vec![1, 1], vol.clone()].concat(),
            mode: "infer".into(),
            device,
            iters: o.iters,
            warmup: o.warmup,
            threads: o.threads,
            malloc_tuned: o.malloc_tuned,
        },
        window: win.clone(),
        overlap,
        sigma_scale: sigma,
        sw_batch: swb,
    };
    let work = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("bench-unet");
    std::fs::create_dir_all(&work)?;
    let dump = work.join("sliding.safetensors");
    let nparams = dump_inputs(&spec.case, &dump)?;
    let spec_path = work.join("sliding.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec)?)?;
    println!(
        "sliding window: volume 1x1x{vol:?}, window {win:?}, overlap {overlap}, Gaussian sigma {sigma}, {swb} window(s) per call, UNet3D {feats:?} ({nparams} parameters), {} threads, median of {} after {} warm-up",
        o.threads, o.iters, o.warmup
    );
    let mut results = Vec::new();
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["bench", "sliding-child"]).arg(&spec_path);
    results.push(("medseg (Predictor)", run_child(&mut cmd, "medseg")?));
    let py = if o.python {
        crate::python::ensure_venv(&["torch", "safetensors", "monai"])?
    } else {
        None
    };
    if let Some(py) = py {
        let mut cmd = Command::new(py);
        cmd.arg(root.join("tools/monai_sliding_bench.py"))
            .arg("--spec")
            .arg(&spec_path)
            .arg("--weights")
            .arg(&dump);
        results.push((
            "MONAI sliding_window_inference",
            run_child(&mut cmd, "monai")?,
        ));
    }
    println!(
        "{:<32} {:>12} {:>14}  per-class probability means",
        "", "median ms", "peak RSS MiB"
    );
    for (name, r) in &results {
        let Some(r) = r else {
            println!("{name:<32} failed");
            continue;
        };
        let t = r
            .times
            .first()
            .map_or("-".into(), |(_, v)| format!("{v:.1}"));
        let m = r
            .vmhwm_kb
            .map_or("-".into(), |k| format!("{:.0}", k as f64 / 1024.0));
        let p: Vec<String> = r.prob_means.iter().map(|v| format!("{v:.5}")).collect();
        println!("{name:<32} {t:>12} {m:>14}  {}", p.join(" "));
    }
    Ok(())
}

/// The medseg child of `bench sliding`.
pub fn child(args: &[String]) -> Result<()> {
    let spec: SlideSpec = serde_json::from_slice(&std::fs::read(
        args.first().context("sliding-child needs a spec file")?,
    )?)?;
    let c = &spec.case;
    set_threads(c.threads)?;
    tune_malloc(c.malloc_tuned);
    let dev = medseg_learners::parse_device(&c.device)?;
    let (vm, net) = build_net(&c.network, &dev)?;
    // as medseg-infer loads it: weights as plain tensors, no autograd graph
    let net = medseg_nets::inference_copy(net.as_ref(), &vm, &dev)?;
    let (x, _) = inputs(&c.shape, &candle_core::Device::Cpu)?;
    // [1, 1, D, H, W] -> [C, D, H, W]
    let img = x.squeeze(0)?;
    let shape = img.dims().to_vec();
    let img = ndarray::ArrayD::from_shape_vec(shape, img.flatten_all()?.to_vec1::<f32>()?)?;
    let window = SlidingWindow {
        patch_size: Some(spec.window.clone()),
        overlap: spec.overlap,
        gaussian: true,
        sigma_scale: spec.sigma_scale,
        batch_size: spec.sw_batch,
    };
    let pred = Predictor::new(vec![net.as_ref()], dev.clone(), window, false)?;
    let mut t = Vec::new();
    let mut means = Vec::new();
    for i in 0..c.warmup + c.iters {
        let t0 = Instant::now();
        let p = pred.predict(img.view())?;
        let e = t0.elapsed().as_secs_f64() * 1e3;
        if i >= c.warmup {
            t.push(e);
        }
        means = p
            .outer_iter()
            .map(|a| a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64)
            .collect();
    }
    println!("TIME infer: sliding window {:.3}", median(&mut t));
    let m: Vec<String> = means.iter().map(|v| format!("{v:.6}")).collect();
    println!("PROB_MEANS {}", m.join(" "));
    if let Some(kb) = vmhwm_kb() {
        println!("VMHWM_KB {kb}");
    }
    Ok(())
}
