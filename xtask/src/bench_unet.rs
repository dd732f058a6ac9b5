//! `cargo xtask bench unet [--iters N] [--warmup N] [--threads N] [--malloc tuned|default] [--no-python] [--mode all|train|infer] [--device cpu|cuda|cuda:N] [--batch N] [--size S]`:
//! a full 2D UNet training step (forward with batch-statistics BN, CE + soft
//! Dice loss, backward, AdamW) and inference, batch 4x1x256x256 by default
//! (`--batch`, `--size`), on the CPU or a CUDA device (`--device`, needs the
//! `cuda` feature; the device is synchronised before every timer read), features
//! 16-32-64-128-256, (conv3x3 + BN + LeakyReLU(0.01)) x2 per block, max-pool
//! down, transposed-conv (k2 s2) up, 1x1 head to 4 classes: the network of
//! the PyTorch reference `../shared/reference/torch_unet_bench.py`, which runs
//! in the same invocation at the same thread count.
//!
//! The medseg twin is built here from medseg-ops functions (conv2d,
//! conv_transpose2d, fused batch norm + leaky ReLU, max_pool2d, channel
//! log-softmax) with candle_nn's VarMap and AdamW. On a CUDA device these
//! functions run their candle fallback (see docs/cuda.md).

use crate::bench_ops::{det_tensor, median_ms, parse_opts, set_threads, tune_malloc};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use medseg_ops as ops;
use std::collections::HashMap;
use std::time::Instant;

const CLASSES: usize = 4;
const ACT: ops::Activation = ops::Activation::LeakyRelu(0.01);

/// conv3x3 (with bias) followed by batch norm and leaky ReLU.
struct ConvBnAct {
    w: Var,
    b: Var,
    gamma: Var,
    beta: Var,
    running_mean: Tensor,
    running_var: Tensor,
}

/// Uniform init in +-1/sqrt(fan_in), PyTorch's default for conv weights and biases.
fn init(shape: &[usize], fan_in: usize, seed: &mut u64, dev: &Device) -> Result<Var> {
    *seed += 1;
    let bound = 1.0 / (fan_in as f32).sqrt();
    Ok(Var::from_tensor(
        &det_tensor(shape, *seed, bound)?.to_device(dev)?,
    )?)
}

impl ConvBnAct {
    fn new(
        cin: usize,
        cout: usize,
        seed: &mut u64,
        vars: &mut Vec<Var>,
        dev: &Device,
    ) -> Result<Self> {
        let l = ConvBnAct {
            w: init(&[cout, cin, 3, 3], cin * 9, seed, dev)?,
            b: init(&[cout], cin * 9, seed, dev)?,
            gamma: Var::from_tensor(&Tensor::ones(cout, DType::F32, dev)?)?,
            beta: Var::from_tensor(&Tensor::zeros(cout, DType::F32, dev)?)?,
            running_mean: Tensor::zeros(cout, DType::F32, dev)?,
            running_var: Tensor::ones(cout, DType::F32, dev)?,
        };
        vars.extend([l.w.clone(), l.b.clone(), l.gamma.clone(), l.beta.clone()]);
        Ok(l)
    }

    fn forward(&mut self, x: &Tensor, train: bool, detach: bool) -> Result<Tensor> {
        let p = ops::Conv2dParams {
            padding: [1, 1],
            ..Default::default()
        };
        let t = |v: &Var| {
            if detach {
                v.as_tensor().detach()
            } else {
                v.as_tensor().clone()
            }
        };
        let h = ops::conv2d(x, &t(&self.w), Some(&t(&self.b)), &p)?;
        if train {
            let (y, m, v) = ops::batch_norm_train(&h, &t(&self.gamma), &t(&self.beta), 1e-5, ACT)?;
            // PyTorch's running-statistics update, momentum 0.1
            self.running_mean = ((&self.running_mean * 0.9)? + (m * 0.1)?)?;
            self.running_var = ((&self.running_var * 0.9)? + (v * 0.1)?)?;
            Ok(y)
        } else {
            Ok(ops::batch_norm_eval(
                &h,
                &t(&self.gamma),
                &t(&self.beta),
                &self.running_mean,
                &self.running_var,
                1e-5,
                ACT,
            )?)
        }
    }
}

struct Block(ConvBnAct, ConvBnAct);

impl Block {
    fn new(
        cin: usize,
        cout: usize,
        seed: &mut u64,
        vars: &mut Vec<Var>,
        dev: &Device,
    ) -> Result<Self> {
        Ok(Block(
            ConvBnAct::new(cin, cout, seed, vars, dev)?,
            ConvBnAct::new(cout, cout, seed, vars, dev)?,
        ))
    }
    fn forward(&mut self, x: &Tensor, train: bool, detach: bool) -> Result<Tensor> {
        let h = self.0.forward(x, train, detach)?;
        self.1.forward(&h, train, detach)
    }
}

/// The UNet of torch_unet_bench.py.
struct UNet {
    enc: Vec<Block>,
    ups: Vec<(Var, Var)>,
    dec: Vec<Block>,
    head: (Var, Var),
    vars: Vec<Var>,
}

impl UNet {
    fn new(in_ch: usize, base: usize, dev: &Device) -> Result<Self> {
        let feats: Vec<usize> = (0..5).map(|i| base << i).collect();
        let mut seed = 1000u64;
        let mut vars = Vec::new();
        let mut enc = Vec::new();
        let mut cin = in_ch;
        for &f in &feats {
            enc.push(Block::new(cin, f, &mut seed, &mut vars, dev)?);
            cin = f;
        }
        let mut ups = Vec::new();
        let mut dec = Vec::new();
        for i in (0..4).rev() {
            // ConvTranspose2d weight [Cin, Cout, 2, 2]; PyTorch's fan_in is Cout*k*k
            let w = init(
                &[feats[i + 1], feats[i], 2, 2],
                feats[i] * 4,
                &mut seed,
                dev,
            )?;
            let b = init(&[feats[i]], feats[i] * 4, &mut seed, dev)?;
            vars.extend([w.clone(), b.clone()]);
            ups.push((w, b));
            dec.push(Block::new(
                2 * feats[i],
                feats[i],
                &mut seed,
                &mut vars,
                dev,
            )?);
        }
        let hw = init(&[CLASSES, feats[0], 1, 1], feats[0], &mut seed, dev)?;
        let hb = init(&[CLASSES], feats[0], &mut seed, dev)?;
        vars.extend([hw.clone(), hb.clone()]);
        Ok(UNet {
            enc,
            ups,
            dec,
            head: (hw, hb),
            vars,
        })
    }

    fn forward(&mut self, x: &Tensor, train: bool, detach: bool) -> Result<Tensor> {
        let t = |v: &Var| {
            if detach {
                v.as_tensor().detach()
            } else {
                v.as_tensor().clone()
            }
        };
        let mut skips = Vec::new();
        let mut h = x.clone();
        for (i, blk) in self.enc.iter_mut().enumerate() {
            if i > 0 {
                h = ops::max_pool2d(&h, [2, 2], [2, 2])?;
            }
            h = blk.forward(&h, train, detach)?;
            if i < 4 {
                skips.push(h.clone());
            }
        }
        let pt = ops::ConvTranspose2dParams {
            stride: [2, 2],
            ..Default::default()
        };
        for ((w, b), blk) in self.ups.iter().zip(self.dec.iter_mut()) {
            let up = ops::conv_transpose2d(&h, &t(w), Some(&t(b)), &pt)?;
            let skip = skips.pop().context("skip connection")?;
            h = blk.forward(&Tensor::cat(&[&skip, &up], 1)?, train, detach)?;
        }
        Ok(ops::conv2d(
            &h,
            &t(&self.head.0),
            Some(&t(&self.head.1)),
            &Default::default(),
        )?)
    }
}

/// CE + soft Dice (per class over the batch, smoothed by 1e-5), as `seg_loss`
/// in the reference.
fn seg_loss(logits: &Tensor, onehot: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = logits.dims4()?;
    let logp = ops::log_softmax_channels(logits)?;
    let ce = ((&logp * onehot)?.sum_all()? * (-1.0 / (n * h * w) as f64))?;
    let p = logp.exp()?;
    let per_class = |t: &Tensor| -> candle_core::Result<Tensor> {
        t.transpose(0, 1)?.reshape((c, n * h * w))?.sum(1)
    };
    let inter = per_class(&(&p * onehot)?)?;
    let denom = (per_class(&p)? + per_class(onehot)?)?;
    let dice = ((inter * 2.0)? + 1e-5)?.div(&(denom + 1e-5)?)?;
    Ok(((ce + 1.0)? - dice.mean_all()?)?)
}

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    };
    (med, v[0], v[n - 1])
}

fn report(name: &str, v: &mut [f64], out: &mut Vec<(String, f64)>) {
    let (med, lo, hi) = stats(v);
    eprintln!("  {name:<40} median {med:9.2} ms   min {lo:9.2}   max {hi:9.2}");
    out.push((name.to_string(), med));
}

/// Runs the suite.
pub fn run(args: &[String]) -> Result<()> {
    let o = parse_opts(args, 10)?;
    let mut mode = "all".to_string();
    let mut device = "cpu".to_string();
    let (mut b, mut s) = (4usize, 256usize);
    let mut it = o.rest.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<usize> {
            let v = it.next().with_context(|| format!("{name} needs a value"))?;
            v.parse()
                .with_context(|| format!("{name}: not a number: {v:?}"))
        };
        match a.as_str() {
            "--batch" => b = num("--batch")?.max(1),
            "--size" => s = num("--size")?.max(16),
            "--mode" => mode = it.next().context("--mode needs all|train|infer")?.clone(),
            "--device" => device = it.next().context("--device needs cpu|cuda|cuda:N")?.clone(),
            other => bail!("bench unet: unknown argument {other:?}"),
        }
    }
    let dev = medseg_learners::parse_device(&device)?;
    // the device's queue is drained before every timer read
    let sync = || -> Result<()> { Ok(dev.synchronize()?) };
    if !["all", "train", "infer"].contains(&mode.as_str()) {
        bail!("bench unet: --mode takes all|train|infer, got {mode:?}");
    }
    set_threads(o.threads)?;
    tune_malloc(o.malloc_tuned);
    let (warm, iters) = (o.warmup, o.iters);
    println!(
        "UNet 16-32-64-128-256, batch {b}x1x{s}x{s}, {CLASSES} classes; median of {iters} after {warm} warm-up; device {device}; {} threads; malloc {}",
        o.threads,
        if o.malloc_tuned { "tuned" } else { "default" }
    );
    let mut model = UNet::new(1, 16, &dev)?;
    let nparams: usize = model.vars.iter().map(|v| v.elem_count()).sum();
    println!("medseg twin: {nparams} parameters");
    let x = det_tensor(&[b, 1, s, s], 1, 1.7)?.to_device(&dev)?;
    // labels from a deterministic hash, one-hot [N, C, H, W]
    let labels: Vec<u32> = (0..b * s * s)
        .map(|i| ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61) as u32 % CLASSES as u32)
        .collect();
    let labels = Tensor::from_vec(labels, (b, s, s), &Device::Cpu)?;
    let onehot = Tensor::stack(
        &(0..CLASSES as u32)
            .map(|c| labels.eq(c)?.to_dtype(DType::F32))
            .collect::<candle_core::Result<Vec<_>>>()?,
        1,
    )?
    .to_device(&dev)?;

    let mut ours: Vec<(String, f64)> = Vec::new();
    if mode != "infer" {
        let mut opt = AdamW::new(
            model.vars.clone(),
            ParamsAdamW {
                lr: 1e-3,
                weight_decay: 0.01,
                ..Default::default()
            },
        )?;
        let (mut tf, mut tb, mut to, mut tt) = (vec![], vec![], vec![], vec![]);
        for i in 0..warm + iters {
            let t0 = Instant::now();
            let logits = model.forward(&x, true, false)?;
            let loss = seg_loss(&logits, &onehot)?;
            let lv = loss.to_scalar::<f32>()?;
            let f = t0.elapsed().as_secs_f64() * 1e3;
            let t1 = Instant::now();
            let grads = loss.backward()?;
            sync()?;
            let bw = t1.elapsed().as_secs_f64() * 1e3;
            let t2 = Instant::now();
            opt.step(&grads)?;
            drop(grads);
            sync()?;
            let st = t2.elapsed().as_secs_f64() * 1e3;
            let tot = t0.elapsed().as_secs_f64() * 1e3;
            if i >= warm {
                tf.push(f);
                tb.push(bw);
                to.push(st);
                tt.push(tot);
            } else {
                eprintln!("  warmup {i}: loss={lv:.4} total {tot:.1} ms");
            }
        }
        report("train: forward(train BN)+loss", &mut tf, &mut ours);
        report("train: backward", &mut tb, &mut ours);
        report("train: AdamW step", &mut to, &mut ours);
        report("train: full step", &mut tt, &mut ours);
    }
    if mode != "train" {
        let mut v = vec![];
        for i in 0..warm + iters {
            let t0 = Instant::now();
            let y = model.forward(&x, false, true)?;
            sync()?;
            drop(y);
            if i >= warm {
                v.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        report("infer: forward (eval BN, no_grad)", &mut v, &mut ours);
        let m = median_ms(warm, iters, || {
            let y = model.forward(&x, false, false)?;
            sync()?;
            Ok(y)
        })?;
        eprintln!(
            "  {:<40} median {m:9.2} ms",
            "infer: forward (eval BN, grad enabled)"
        );
        ours.push(("infer: forward (eval BN, grad enabled)".into(), m));
    }

    let torch = if o.python {
        torch_unet(&o, &mode, &device, b, s)?
    } else {
        eprintln!("notice: --no-python given; skipping the PyTorch side");
        None
    };
    if torch.is_none() {
        println!("(PyTorch figures unavailable)");
    }
    let torch = torch.unwrap_or_default();
    println!(
        "\n{:<42} {:>10} {:>10} {:>10}",
        "UNet (ms, median)", "medseg", "pytorch", "ratio"
    );
    for (name, m) in &ours {
        let t = torch.get(name.as_str()).copied();
        println!(
            "{:<42} {:>10.2} {:>10} {:>10}",
            name,
            m,
            t.map_or("-".into(), |t| format!("{t:.2}")),
            t.map_or("-".into(), |t| format!("{:.2}x", m / t))
        );
    }
    Ok(())
}

/// Runs the PyTorch reference and parses its `name  median X ms` lines.
fn torch_unet(
    o: &crate::bench_ops::Opts,
    mode: &str,
    device: &str,
    batch: usize,
    size: usize,
) -> Result<Option<HashMap<String, f64>>> {
    let Some(py) = crate::python::ensure_venv(&["torch"])? else {
        return Ok(None);
    };
    let root = crate::python::workspace_root();
    let script = [
        root.join("tools/torch_unet_bench.py"),
        root.join("../shared/reference/torch_unet_bench.py"),
    ]
    .into_iter()
    .find(|p| p.exists());
    let Some(script) = script else {
        eprintln!("notice: torch_unet_bench.py not found in ../shared/reference or tools/; skipping PyTorch");
        return Ok(None);
    };
    let args = [
        "unet".to_string(),
        "--threads".into(),
        o.threads.to_string(),
        "--iters".into(),
        o.iters.to_string(),
        "--warmup".into(),
        o.warmup.to_string(),
        "--mode".into(),
        mode.to_string(),
        "--device".into(),
        device.to_string(),
        "--batch".into(),
        batch.to_string(),
        "--size".into(),
        size.to_string(),
    ];
    eprintln!("running {} {}", script.display(), args.join(" "));
    let out = std::process::Command::new(&py)
        .arg(&script)
        .args(&args)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        eprintln!(
            "notice: {} failed; skipping PyTorch:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        return Ok(None);
    }
    let mut m = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        eprintln!("  [torch] {line}");
        if let Some((name, rest)) = line.split_once(" median ") {
            if let Some(v) = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
            {
                m.insert(name.trim().to_string(), v);
            }
        }
    }
    Ok(Some(m))
}
