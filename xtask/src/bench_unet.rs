//! `cargo xtask bench unet [--config FILE] [--up bilinear|transconv|both] [--iters N] [--warmup N] [--threads N] [--malloc tuned|default] [--no-python] [--mode all|train|infer] [--device cpu|cuda|cuda:N] [--batch N] [--size S]`:
//! the network users train, built through the registry from a config
//! (default `configs/supervised/quickstart.toml`: PyMIC's UNet2D
//! 16-32-64-128-256, dropout [0,0,0,0.3,0.5], bilinear up-sampling; `--up`
//! also runs the transposed-convolution variant), trained with the engine's
//! optimiser ([`medseg_learners::Optimizer`] from the config's `[training]`)
//! and loss (`training.loss` through the loss registry, applied with
//! [`medseg_learners::supervised_loss`]), batch 4x1x256x256 by default.
//!
//! Every measurement (train step, inference) runs in a child process of its
//! own, so that its peak resident memory (VmHWM) is that measurement's alone.
//! The PyTorch side (`tools/torch_unet_bench.py`: PyMIC's UNet transcribed,
//! PyMIC's Dice + CE, `torch.optim.Adam` with L2 weight decay, as medseg's
//! `adam`) loads the initial weights, input and labels medseg wrote, and runs
//! in NCHW and channels-last; both sides print the eval-mode loss at the
//! initial weights and the parameter count, which must agree.
//! `bench unet3d` (see `bench_unet3d.rs`) runs the same machinery in 3D.

use crate::bench_ops::{det_tensor, parse_opts, set_threads, tune_malloc, Opts};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use medseg_config::ExperimentConfig;
use medseg_learners::{
    build_loss, build_net, network_config, sorted_vars, supervised_loss, trainable_vars, Optimizer,
    OptimizerSettings,
};
use medseg_losses::LossTarget;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// One benchmark case: a config (for `[training]`: optimiser and loss), the
/// network table actually built (the config's, possibly modified) and the
/// input shape `[N, C, spatial...]`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Case {
    /// Shown in the tables.
    pub label: String,
    /// The experiment config whose `[training]` section is used.
    pub config: PathBuf,
    /// The registry network table.
    pub network: serde_json::Value,
    /// Input shape, channel-first with batch.
    pub shape: Vec<usize>,
    /// Which measurement a child runs: `train` or `infer`.
    pub mode: String,
    /// Device name (`cpu`, `cuda`, `cuda:N`).
    pub device: String,
    pub iters: usize,
    pub warmup: usize,
    pub threads: usize,
    pub malloc_tuned: bool,
}

/// The configured network table for the 2D quickstart with `up_mode`.
fn config_network(config: &Path, up: &str) -> Result<serde_json::Value> {
    let cfg = ExperimentConfig::load(config, &[])
        .with_context(|| format!("loading {}", config.display()))?;
    let mut net = network_config(&cfg);
    net["up_mode"] = serde_json::json!(up);
    Ok(net)
}

/// Runs `bench unet`.
pub fn run(args: &[String]) -> Result<()> {
    let o = parse_opts(args, 10)?;
    let root = crate::python::workspace_root();
    let mut config = root.join("configs/supervised/quickstart.toml");
    let mut mode = "all".to_string();
    let mut device = "cpu".to_string();
    let mut up = "both".to_string();
    let (mut b, mut s) = (4usize, 256usize);
    let mut it = o.rest.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| -> Result<String> {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--batch" => b = val("--batch")?.parse::<usize>()?.max(1),
            "--size" => s = val("--size")?.parse::<usize>()?.max(16),
            "--mode" => mode = val("--mode")?,
            "--device" => device = val("--device")?,
            "--config" => config = PathBuf::from(val("--config")?),
            "--up" => up = val("--up")?,
            other => bail!("bench unet: unknown argument {other:?}"),
        }
    }
    let ups: Vec<&str> = match up.as_str() {
        "both" => vec!["bilinear", "transconv"],
        "bilinear" => vec!["bilinear"],
        "transconv" => vec!["transconv"],
        u => bail!("bench unet: --up takes bilinear|transconv|both, got {u:?}"),
    };
    let mut cases = Vec::new();
    for u in ups {
        cases.push(Case {
            label: format!("UNet2D ({u})"),
            config: config.clone(),
            network: config_network(&config, u)?,
            shape: vec![b, 1, s, s],
            mode: String::new(),
            device: device.clone(),
            iters: o.iters,
            warmup: o.warmup,
            threads: o.threads,
            malloc_tuned: o.malloc_tuned,
        });
    }
    run_cases(&o, &cases, &mode)
}

/// Parsed protocol lines of one child run (medseg or PyTorch).
#[derive(Default, Debug)]
pub(crate) struct ChildOut {
    pub times: Vec<(String, f64)>,
    pub params: Option<usize>,
    pub loss_eval: Option<f64>,
    pub vmhwm_kb: Option<u64>,
    /// Per-class means of predicted probabilities (sliding window).
    pub prob_means: Vec<f64>,
}

pub(crate) fn parse_child(stdout: &str, tag: &str) -> ChildOut {
    let mut c = ChildOut::default();
    for line in stdout.lines() {
        eprintln!("  [{tag}] {line}");
        let mut w = line.split_whitespace();
        match w.next() {
            Some("TIME") => {
                let rest: Vec<&str> = w.collect();
                if let Some((v, name)) = rest.split_last() {
                    if let Ok(v) = v.parse() {
                        c.times.push((name.join(" "), v));
                    }
                }
            }
            Some("PARAMS") => c.params = w.next().and_then(|v| v.parse().ok()),
            Some("LOSS_EVAL") => c.loss_eval = w.next().and_then(|v| v.parse().ok()),
            Some("VMHWM_KB") => c.vmhwm_kb = w.next().and_then(|v| v.parse().ok()),
            Some("PROB_MEANS") => c.prob_means = w.filter_map(|v| v.parse().ok()).collect(),
            _ => {}
        }
    }
    c
}

pub(crate) fn run_child(cmd: &mut Command, tag: &str) -> Result<Option<ChildOut>> {
    let out = cmd
        .output()
        .with_context(|| format!("running the {tag} child"))?;
    if !out.status.success() {
        eprintln!(
            "notice: the {tag} child failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return Ok(None);
    }
    Ok(Some(parse_child(
        &String::from_utf8_lossy(&out.stdout),
        tag,
    )))
}

/// Writes the initial weights (registry names = PyMIC names), the input
/// `__x` and labels `__labels` (f32) for the PyTorch side.
pub(crate) fn dump_inputs(case: &Case, path: &Path) -> Result<usize> {
    let dev = Device::Cpu;
    let (vm, _net) = build_net(&case.network, &dev)?;
    let mut map: HashMap<String, Tensor> = sorted_vars(&vm)?
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect();
    let (x, labels) = inputs(&case.shape, &dev)?;
    map.insert("__x".into(), x);
    map.insert("__labels".into(), labels.to_dtype(DType::F32)?);
    candle_core::safetensors::save(&map, path)?;
    Ok(trainable_vars(&vm, "")?
        .iter()
        .map(|(_, v)| v.elem_count())
        .sum())
}

/// Deterministic input `[N, C, ...]` and labels `[N, 1, ...]` (u32, 4 classes).
pub(crate) fn inputs(shape: &[usize], dev: &Device) -> Result<(Tensor, Tensor)> {
    let x = det_tensor(shape, 1, 1.7)?.to_device(dev)?;
    let mut lshape = shape.to_vec();
    lshape[1] = 1;
    let n: usize = lshape.iter().product();
    let labels: Vec<u32> = (0..n)
        .map(|i| ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61) as u32 % 4)
        .collect();
    let labels = Tensor::from_vec(labels, lshape, &Device::Cpu)?.to_device(dev)?;
    Ok((x, labels))
}

/// Runs every case: medseg and PyTorch (NCHW, channels-last), train and
/// inference, each in its own process; prints the tables.
pub(crate) fn run_cases(o: &Opts, cases: &[Case], mode: &str) -> Result<()> {
    if !["all", "train", "infer"].contains(&mode) {
        bail!("--mode takes all|train|infer, got {mode:?}");
    }
    let modes: Vec<&str> = match mode {
        "all" => vec!["train", "infer"],
        m => vec![m],
    };
    let root = crate::python::workspace_root();
    let work = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("bench-unet")
        // one folder per invocation: two benches at once must not read each
        // other's weights or specs
        .join(std::process::id().to_string());
    std::fs::create_dir_all(&work)?;
    let result = run_cases_in(o, cases, &modes, &work);
    // best effort: the folder only holds this run's inputs
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn run_cases_in(o: &Opts, cases: &[Case], modes: &[&str], work: &Path) -> Result<()> {
    let root = crate::python::workspace_root();
    let py = if o.python {
        crate::python::ensure_venv(&["torch", "safetensors"])?
    } else {
        eprintln!("notice: --no-python given; skipping the PyTorch side");
        None
    };
    let exe = std::env::current_exe()?;
    for (ci, case) in cases.iter().enumerate() {
        let shape: Vec<String> = case.shape.iter().map(|d| d.to_string()).collect();
        println!(
            "\n{}: input {}, {} threads, median of {} after {} warm-up, device {}",
            case.label,
            shape.join("x"),
            case.threads,
            case.iters,
            case.warmup,
            case.device
        );
        let dump = work.join(format!("case{ci}.safetensors"));
        let nparams = dump_inputs(case, &dump)?;
        // name -> (medseg, torch nchw, torch channels-last); memory rows too
        let mut rows: Vec<(String, [Option<f64>; 3])> = Vec::new();
        let mut losses: [Option<f64>; 3] = [None; 3];
        let mut params: [Option<usize>; 3] = [Some(nparams), None, None];
        let put =
            |rows: &mut Vec<(String, [Option<f64>; 3])>, name: &str, k: usize, v: f64| match rows
                .iter_mut()
                .find(|(n, _)| n == name)
            {
                Some((_, r)) => r[k] = Some(v),
                None => {
                    let mut r = [None; 3];
                    r[k] = Some(v);
                    rows.push((name.to_string(), r));
                }
            };
        for m in modes {
            let mut c = case.clone();
            c.mode = m.to_string();
            let spec = work.join(format!("case{ci}-{m}.json"));
            std::fs::write(&spec, serde_json::to_vec_pretty(&c)?)?;
            let mut cmd = Command::new(&exe);
            cmd.args(["bench", "unet-child"]).arg(&spec);
            let mut outs: Vec<(usize, ChildOut)> = Vec::new();
            if let Some(r) = run_child(&mut cmd, "medseg")? {
                outs.push((0, r));
            }
            if let Some(py) = &py {
                for (k, cl) in [(1usize, false), (2, true)] {
                    let mut cmd = Command::new(py);
                    cmd.arg(root.join("tools/torch_unet_bench.py"))
                        .arg("--spec")
                        .arg(&spec)
                        .arg("--weights")
                        .arg(&dump);
                    if cl {
                        cmd.arg("--channels-last");
                    }
                    if let Some(r) = run_child(&mut cmd, if cl { "torch-cl" } else { "torch" })? {
                        outs.push((k, r));
                    }
                }
            }
            for (k, r) in outs {
                for (name, v) in &r.times {
                    put(&mut rows, name, k, *v);
                }
                if let Some(kb) = r.vmhwm_kb {
                    put(
                        &mut rows,
                        &format!("{m}: peak RSS (MiB)"),
                        k,
                        kb as f64 / 1024.0,
                    );
                }
                if r.loss_eval.is_some() {
                    losses[k] = r.loss_eval;
                }
                if r.params.is_some() {
                    params[k] = r.params;
                }
            }
        }
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        println!(
            "parameters: medseg {:?}, torch {:?} / {:?}; eval loss at init: medseg {:?}, torch {:?} / {:?}",
            params[0], params[1], params[2], losses[0], losses[1], losses[2]
        );
        println!(
            "{:<34} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "(ms, median)", "medseg", "torch", "torch-CL", "/torch", "/torch-CL"
        );
        for (name, r) in &rows {
            println!(
                "{:<34} {:>10} {:>10} {:>10} {:>10} {:>10}",
                name,
                f(r[0]),
                f(r[1]),
                f(r[2]),
                ratio(r[0], r[1]),
                ratio(r[0], r[2])
            );
        }
    }
    Ok(())
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Peak resident memory of this process in KiB (`VmHWM`), if readable.
pub(crate) fn vmhwm_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The child process of one measurement: `bench unet-child SPEC.json`.
pub fn child(args: &[String]) -> Result<()> {
    let spec = args.first().context("unet-child needs a spec file")?;
    let case: Case = serde_json::from_slice(&std::fs::read(spec)?)?;
    set_threads(case.threads)?;
    tune_malloc(case.malloc_tuned);
    let dev = medseg_learners::parse_device(&case.device)?;
    let sync = || -> Result<()> { Ok(dev.synchronize()?) };
    let cfg = ExperimentConfig::load(&case.config, &[])?;
    let (vm, net) = build_net(&case.network, &dev)?;
    let loss_fn = build_loss(&cfg.training.loss)?;
    let params = trainable_vars(&vm, "")?;
    println!(
        "PARAMS {}",
        params.iter().map(|(_, v)| v.elem_count()).sum::<usize>()
    );
    let (x, labels) = inputs(&case.shape, &dev)?;
    let target = LossTarget::class_map(labels);
    let (warm, iters) = (case.warmup, case.iters);
    if case.mode == "train" {
        let mut opt = Optimizer::new(params, OptimizerSettings::from_config(&cfg.training));
        let lr = cfg.training.lr;
        let mut tt = Vec::new();
        for i in 0..warm + iters {
            let t0 = Instant::now();
            let out = net.forward_t(&x, true)?;
            let loss = supervised_loss(loss_fn.as_ref(), &out, &target)?;
            let lv = loss.to_scalar::<f32>()?;
            let grads = loss.backward()?;
            opt.step(&grads, lr)?;
            drop(grads);
            sync()?;
            let e = t0.elapsed().as_secs_f64() * 1e3;
            if i >= warm {
                tt.push(e);
            } else {
                eprintln!("warmup {i}: loss {lv:.4}, {e:.1} ms");
            }
        }
        println!("TIME train: full step {:.3}", median(&mut tt));
    } else {
        // as medseg-infer runs it: weights as plain tensors, no autograd graph
        let net = medseg_nets::inference_copy(net.as_ref(), &vm, &dev)?;
        let out = net.forward_t(&x, false)?;
        let l = supervised_loss(loss_fn.as_ref(), &out, &target)?.to_scalar::<f32>()?;
        println!("LOSS_EVAL {l:.6}");
        drop(out);
        let mut v = Vec::new();
        for i in 0..warm + iters {
            let t0 = Instant::now();
            let y = net.forward(&x)?;
            sync()?;
            drop(y);
            if i >= warm {
                v.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        println!("TIME infer: forward (eval) {:.3}", median(&mut v));
    }
    if let Some(kb) = vmhwm_kb() {
        println!("VMHWM_KB {kb}");
    }
    Ok(())
}
