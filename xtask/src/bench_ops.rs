//! `cargo xtask bench ops [--iters N] [--warmup N] [--threads N] [--malloc tuned|default] [--no-python]`:
//! per-op medians for medseg-ops, candle's built-in equivalent and PyTorch
//! (tools/torch_ops_bench.py, same sizes and thread count, run in the same
//! invocation), with the ratios medseg/PyTorch and medseg/candle.

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, Var};
use medseg_ops as ops;
use std::collections::HashMap;
use std::time::Instant;

/// Command-line options shared by the ops and unet suites.
pub(crate) struct Opts {
    pub iters: usize,
    pub warmup: usize,
    pub threads: usize,
    pub python: bool,
    /// glibc malloc tuned for reuse (see [`tune_malloc`])
    pub malloc_tuned: bool,
    pub rest: Vec<String>,
}

pub(crate) fn parse_opts(args: &[String], iters: usize) -> Result<Opts> {
    let mut o = Opts {
        iters,
        warmup: 2,
        threads: 2,
        python: true,
        malloc_tuned: true,
        rest: vec![],
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| -> Result<usize> {
            let v = it.next().with_context(|| format!("{name} needs a value"))?;
            v.parse()
                .with_context(|| format!("{name}: not a number: {v:?}"))
        };
        match a.as_str() {
            "--iters" => o.iters = val("--iters")?.max(1),
            "--warmup" => o.warmup = val("--warmup")?,
            "--threads" => o.threads = val("--threads")?.max(1),
            "--no-python" => o.python = false,
            "--malloc" => match it.next().map(String::as_str) {
                Some("tuned") => o.malloc_tuned = true,
                Some("default") => o.malloc_tuned = false,
                v => bail!("--malloc takes tuned|default, got {v:?}"),
            },
            other => o.rest.push(other.to_string()),
        }
    }
    Ok(o)
}

/// Makes rayon (medseg-ops and candle's CPU kernels, and gemm through candle)
/// use `threads` threads. Must run before the first parallel op.
pub(crate) fn set_threads(threads: usize) -> Result<()> {
    // candle reads RAYON_NUM_THREADS for its gemm parallelism; rayon's global
    // pool reads it when first used.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    Ok(())
}

/// glibc malloc settings that keep freed memory for reuse instead of
/// returning it to the kernel (no mmap for large blocks, no trimming), so that
/// the big activation buffers of a training step do not page-fault afresh
/// every iteration. `false` leaves glibc's defaults.
pub(crate) fn tune_malloc(on: bool) {
    if on {
        // the same call the medseg binaries make first thing in `main`
        medseg_core::runtime::tune_allocator();
    }
}

/// Median wall time in ms of `f` after `warmup` discarded runs.
pub(crate) fn median_ms<T>(
    warmup: usize,
    iters: usize,
    mut f: impl FnMut() -> Result<T>,
) -> Result<f64> {
    let mut v = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        let t0 = Instant::now();
        let out = f()?;
        let e = t0.elapsed().as_secs_f64() * 1e3;
        drop(out);
        if i >= warmup {
            v.push(e);
        }
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Ok(if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    })
}

/// Deterministic pseudo-random tensor (uniform in [-scale, scale)), so that no
/// global RNG is involved.
pub(crate) fn det_tensor(shape: &[usize], seed: u64, scale: f32) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// Runs a reference script with the venv's python and parses its JSON lines
/// `{"op"|"name": ..., "ms": ...}`. `None` (with a notice) when no Python.
pub(crate) fn run_python(script: &str, args: &[String]) -> Result<Option<HashMap<String, f64>>> {
    let Some(py) = crate::python::ensure_venv(&["torch"])? else {
        return Ok(None);
    };
    let path = crate::python::workspace_root().join(script);
    eprintln!("running {} {}", path.display(), args.join(" "));
    let out = std::process::Command::new(&py)
        .arg(&path)
        .args(args)
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    if !out.status.success() {
        eprintln!(
            "notice: {} failed; skipping the PyTorch side:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        return Ok(None);
    }
    let mut m = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if let (Some(k), Some(ms)) = (v["op"].as_str(), v["ms"].as_f64()) {
                m.insert(k.to_string(), ms);
            }
        } else {
            eprintln!("  [python] {line}");
        }
    }
    Ok(Some(m))
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

/// One row: medseg and (optionally) candle timings under the name PyTorch uses.
struct Row {
    name: &'static str,
    medseg: Option<f64>,
    candle: Option<f64>,
}

/// `sum(y * w)` for a fixed `w`, as one custom op whose backward hands `w`
/// (times the incoming scalar gradient) straight to `y`: the fwd+bwd rows then
/// time the op under test, not candle's autograd of a multiply and a sum
/// (which alone costs tens of ms at 4M elements). PyTorch seeds `y.backward(w)`
/// the same way.
struct WeightedSum(Tensor);

impl candle_core::CustomOp1 for WeightedSum {
    fn name(&self) -> &'static str {
        "bench-weighted-sum"
    }
    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let y = match (s, l.contiguous_offsets()) {
            (candle_core::CpuStorage::F32(v), Some((a, b))) => &v[a..b],
            _ => candle_core::bail!("bench-weighted-sum: contiguous f32 only"),
        };
        // w is read in place (no copy) and summed in 16 f32 lanes per block
        // of 4096, then f64: this harness op should cost about one pass
        let (ws, wl) = self.0.storage_and_layout();
        let w = match (&*ws, wl.contiguous_offsets()) {
            (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((a, b))) => &v[a..b],
            _ => candle_core::bail!("bench-weighted-sum: contiguous f32 weights only"),
        };
        if w.len() != y.len() {
            candle_core::bail!(
                "bench-weighted-sum: {} weights for {} values",
                w.len(),
                y.len()
            );
        }
        let d: f64 = y
            .chunks(4096)
            .zip(w.chunks(4096))
            .map(|(yc, wc)| {
                let mut acc = [0f32; 16];
                let (ys, ws) = (yc.chunks_exact(16), wc.chunks_exact(16));
                let tail: f32 = ys
                    .remainder()
                    .iter()
                    .zip(ws.remainder())
                    .map(|(a, b)| a * b)
                    .sum();
                for (a, b) in ys.zip(ws) {
                    for i in 0..16 {
                        acc[i] = a[i].mul_add(b[i], acc[i]);
                    }
                }
                (acc.iter().sum::<f32>() + tail) as f64
            })
            .sum();
        Ok((
            candle_core::CpuStorage::F32(vec![d as f32]),
            candle_core::Shape::from(()),
        ))
    }
    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let g = grad.to_scalar::<f32>()?;
        Ok(Some(if g == 1.0 {
            self.0.clone()
        } else {
            self.0.affine(g as f64, 0.0)?
        }))
    }
}

/// Forward and backward of `sum(f(inputs) * w)` for a fixed `w`, as in the
/// Python script.
fn fwd_bwd(
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
) -> Result<impl FnMut() -> Result<()>> {
    let vars: Vec<Var> = inputs
        .iter()
        .map(Var::from_tensor)
        .collect::<candle_core::Result<_>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts)?;
    let w = det_tensor(y.dims(), 99, 1.0)?;
    Ok(move || {
        let y = f(&ts)?;
        let g = y
            .contiguous()?
            .apply_op1(WeightedSum(w.clone()))?
            .backward()?;
        for v in &vars {
            g.get(v).context("missing gradient")?;
        }
        Ok(())
    })
}

/// Runs the suite.
pub fn run(args: &[String]) -> Result<()> {
    let o = parse_opts(args, 10)?;
    if !o.rest.is_empty() {
        bail!("bench ops: unknown arguments {:?}", o.rest);
    }
    set_threads(o.threads)?;
    tune_malloc(o.malloc_tuned);
    let (w, it) = (o.warmup, o.iters);
    println!(
        "medseg-ops benchmark: median of {it} runs after {w} warm-up, {} threads, malloc {}",
        o.threads,
        if o.malloc_tuned { "tuned" } else { "default" }
    );

    let x = det_tensor(&[4, 64, 128, 128], 1, 1.0)?;
    let k = det_tensor(&[64, 64, 3, 3], 2, 0.05)?;
    let gy = det_tensor(&[4, 64, 128, 128], 3, 1.0)?;
    let big = det_tensor(&[4, 16, 256, 256], 4, 1.0)?;
    let small = det_tensor(&[4, 32, 128, 128], 5, 1.0)?;
    let kt = det_tensor(&[32, 16, 2, 2], 6, 0.2)?;
    let logits = det_tensor(&[4, 4, 256, 256], 7, 3.0)?;
    let g16 = (det_tensor(&[16], 8, 0.5)? + 1.0)?;
    let b16 = det_tensor(&[16], 9, 0.5)?;
    let rm = det_tensor(&[16], 10, 0.1)?;
    let rv = (det_tensor(&[16], 11, 0.4)? + 1.0)?;
    let up_in = det_tensor(&[4, 16, 128, 128], 12, 1.0)?;
    // a PSPNet-like pyramid input (bins 1, 2, 3, 6 of a 64-channel map)
    let psp = det_tensor(&[4, 64, 64, 64], 13, 1.0)?;
    let g64 = (det_tensor(&[64], 14, 0.5)? + 1.0)?;
    let b64 = det_tensor(&[64], 15, 0.5)?;
    // ViT-B tokens: 4 x 576 tokens (a 384x384 image in 16x16 patches) of 768
    let tok = det_tensor(&[4, 576, 768], 16, 1.0)?;
    let g768 = (det_tensor(&[768], 17, 0.5)? + 1.0)?;
    let b768 = det_tensor(&[768], 18, 0.5)?;
    let v3 = det_tensor(&[2, 16, 32, 64, 64], 13, 1.0)?;
    let k3 = det_tensor(&[16, 16, 3, 3, 3], 14, 0.05)?;
    let v3s = det_tensor(&[2, 16, 16, 32, 32], 15, 1.0)?;
    let act = ops::Activation::LeakyRelu(0.01);
    let p1 = ops::Conv2dParams {
        padding: [1, 1],
        ..Default::default()
    };
    let p3 = ops::Conv3dParams {
        padding: [1, 1, 1],
        ..Default::default()
    };
    let pt = ops::ConvTranspose2dParams {
        stride: [2, 2],
        ..Default::default()
    };
    let candle_bn_train = |t: &Tensor, g: &Tensor, b: &Tensor| -> candle_core::Result<Tensor> {
        // candle's BatchNorm in training mode, then candle_nn's leaky ReLU
        let bn = candle_nn::BatchNorm::new(
            16,
            Tensor::zeros(16, candle_core::DType::F32, &Device::Cpu)?,
            Tensor::ones(16, candle_core::DType::F32, &Device::Cpu)?,
            g.clone(),
            b.clone(),
            1e-5,
        )?;
        let y = candle_nn::ModuleT::forward_t(&bn, t, true)?;
        candle_nn::ops::leaky_relu(&y, 0.01)
    };
    let candle_bn_eval = |t: &Tensor| -> candle_core::Result<Tensor> {
        let bn =
            candle_nn::BatchNorm::new(16, rm.clone(), rv.clone(), g16.clone(), b16.clone(), 1e-5)?;
        let y = candle_nn::ModuleT::forward_t(&bn, t, false)?;
        candle_nn::ops::leaky_relu(&y, 0.01)
    };

    let mut rows: Vec<Row> = Vec::new();
    macro_rules! row {
        ($name:expr, $m:expr, $c:expr) => {{
            let name: &'static str = $name;
            eprintln!("  {name}");
            rows.push(Row {
                name,
                medseg: Some(median_ms(w, it, $m)?),
                candle: $c,
            });
        }};
    }
    row!(
        "conv2d 3x3 fwd 4x64x128x128->64",
        || Ok(ops::conv2d(&x, &k, None, &p1)?),
        Some(median_ms(w, it, || Ok(x.conv2d(&k, 1, 1, 1, 1)?))?)
    );
    row!(
        "conv2d 3x3 input grad",
        || Ok(ops::conv2d_input_grad(&gy, &k, [128, 128], &p1)?),
        Some(median_ms(w, it, || Ok(
            gy.conv_transpose2d(&k, 1, 0, 1, 1)?
        ))?)
    );
    row!(
        "conv2d 3x3 weight grad",
        || Ok(ops::conv2d_weight_grad(&x, &gy, [3, 3], &p1)?),
        None
    );
    row!(
        "conv_transpose2d k2s2 4x32x128^2->16",
        || Ok(ops::conv_transpose2d(&small, &kt, None, &pt)?),
        Some(median_ms(w, it, || Ok(
            small.conv_transpose2d(&kt, 0, 0, 2, 1)?
        ))?)
    );
    row!(
        "conv3d 3x3x3 fwd 2x16x32x64x64->16",
        || Ok(ops::conv3d(&v3, &k3, None, &p3)?),
        None
    );
    row!(
        "leaky_relu 4x16x256x256",
        || Ok(ops::leaky_relu(&big, 0.01)?),
        Some(median_ms(w, it, || Ok(candle_nn::ops::leaky_relu(
            &big, 0.01
        )?))?)
    );
    row!(
        "bn train + leaky 4x16x256x256",
        || Ok(ops::batch_norm_train(&big, &g16, &b16, 1e-5, act)?),
        Some(median_ms(w, it, || Ok(candle_bn_train(&big, &g16, &b16)?))?)
    );
    row!(
        "bn eval + leaky 4x16x256x256",
        || Ok(ops::batch_norm_eval(&big, &g16, &b16, &rm, &rv, 1e-5, act)?),
        Some(median_ms(w, it, || Ok(candle_bn_eval(&big)?))?)
    );
    row!(
        "max_pool2d 2 4x16x256x256",
        || Ok(ops::max_pool2d(&big, [2, 2], [2, 2])?),
        Some(median_ms(w, it, || Ok(big.max_pool2d(2)?))?)
    );
    row!(
        "max_pool3d 2 2x16x32x64x64",
        || Ok(ops::max_pool3d(&v3, [2, 2, 2], [2, 2, 2])?),
        None
    );
    row!(
        "bilinear x2 4x16x128x128",
        || Ok(ops::upsample_bilinear2d(&up_in, [256, 256], false)?),
        Some(median_ms(w, it, || Ok(
            up_in.upsample_bilinear2d(256, 256, false)?
        ))?)
    );
    row!(
        "adaptive_avg_pool2d 4x64x64x64->6x6",
        || Ok(ops::adaptive_avg_pool2d(&psp, [6, 6])?),
        Some(median_ms(w, it, || Ok(ops::with_candle_ops(|| {
            ops::adaptive_avg_pool2d(&psp, [6, 6])
        })?))?)
    );
    row!(
        "group_norm 8 groups 4x64x64x64",
        || Ok(ops::group_norm(
            &psp,
            8,
            Some(&g64),
            Some(&b64),
            1e-5,
            ops::Activation::Identity
        )?),
        Some(median_ms(w, it, || Ok(ops::with_candle_ops(|| {
            ops::group_norm(
                &psp,
                8,
                Some(&g64),
                Some(&b64),
                1e-5,
                ops::Activation::Identity,
            )
        })?))?)
    );
    row!(
        "layer_norm 4x576x768",
        || Ok(ops::layer_norm(&tok, &g768, &b768, 1e-6)?),
        Some(median_ms(w, it, || Ok(ops::with_candle_ops(|| {
            ops::layer_norm(&tok, &g768, &b768, 1e-6)
        })?))?)
    );
    row!(
        "trilinear x2 2x16x16x32x32",
        || Ok(ops::upsample_trilinear3d(&v3s, [32, 64, 64], false)?),
        None
    );
    row!(
        "log_softmax dim1 4x4x256x256",
        || Ok(ops::log_softmax_channels(&logits)?),
        Some(median_ms(w, it, || Ok(candle_nn::ops::log_softmax(
            &logits, 1
        )?))?)
    );
    row!(
        "softmax dim1 4x4x256x256",
        || Ok(ops::softmax_channels(&logits)?),
        Some(median_ms(w, it, || Ok(candle_nn::ops::softmax(
            &logits, 1
        )?))?)
    );
    row!(
        "fwd+bwd leaky_relu 4x16x256x256",
        fwd_bwd(std::slice::from_ref(&big), |t| ops::leaky_relu(&t[0], 0.01))?,
        Some(median_ms(
            w,
            it,
            fwd_bwd(std::slice::from_ref(&big), |t| candle_nn::ops::leaky_relu(
                &t[0], 0.01
            ))?
        )?)
    );
    let bn_in = [big.clone(), g16.clone(), b16.clone()];
    row!(
        "fwd+bwd bn train + leaky 4x16x256x256",
        fwd_bwd(&bn_in, |t| Ok(ops::batch_norm_train(
            &t[0], &t[1], &t[2], 1e-5, act
        )?
        .0))?,
        Some(median_ms(
            w,
            it,
            fwd_bwd(&bn_in, |t| candle_bn_train(&t[0], &t[1], &t[2]))?
        )?)
    );
    row!(
        "fwd+bwd max_pool2d 2 4x16x256x256",
        fwd_bwd(std::slice::from_ref(&big), |t| ops::max_pool2d(
            &t[0],
            [2, 2],
            [2, 2]
        ))?,
        Some(median_ms(
            w,
            it,
            fwd_bwd(std::slice::from_ref(&big), |t| t[0].max_pool2d(2))?
        )?)
    );
    row!(
        "fwd+bwd bilinear x2 4x16x128x128",
        fwd_bwd(std::slice::from_ref(&up_in), |t| ops::upsample_bilinear2d(
            &t[0],
            [256, 256],
            false
        ))?,
        None
    );
    row!(
        "fwd+bwd adaptive_avg_pool2d 4x64x64x64->6x6",
        fwd_bwd(std::slice::from_ref(&psp), |t| ops::adaptive_avg_pool2d(
            &t[0],
            [6, 6]
        ))?,
        Some(median_ms(
            w,
            it,
            fwd_bwd(std::slice::from_ref(&psp), |t| ops::with_candle_ops(|| {
                ops::adaptive_avg_pool2d(&t[0], [6, 6])
            }))?
        )?)
    );
    let gn_in = [psp.clone(), g64.clone(), b64.clone()];
    let gn = |t: &[Tensor]| {
        ops::group_norm(
            &t[0],
            8,
            Some(&t[1]),
            Some(&t[2]),
            1e-5,
            ops::Activation::Identity,
        )
    };
    row!(
        "fwd+bwd group_norm 8 groups 4x64x64x64",
        fwd_bwd(&gn_in, gn)?,
        Some(median_ms(
            w,
            it,
            fwd_bwd(&gn_in, |t| ops::with_candle_ops(|| gn(t)))?
        )?)
    );
    let ln_in = [tok.clone(), g768.clone(), b768.clone()];
    let ln = |t: &[Tensor]| ops::layer_norm(&t[0], &t[1], &t[2], 1e-6);
    row!(
        "fwd+bwd layer_norm 4x576x768",
        fwd_bwd(&ln_in, ln)?,
        Some(median_ms(
            w,
            it,
            fwd_bwd(&ln_in, |t| ops::with_candle_ops(|| ln(t)))?
        )?)
    );
    row!(
        "fwd+bwd log_softmax dim1 4x4x256x256",
        fwd_bwd(
            std::slice::from_ref(&logits),
            |t| ops::log_softmax_channels(&t[0])
        )?,
        Some(median_ms(
            w,
            it,
            fwd_bwd(std::slice::from_ref(&logits), |t| {
                candle_nn::ops::log_softmax(&t[0], 1)
            })?
        )?)
    );

    // The optimiser step users run (medseg-learners' `Optimizer`, Adam with
    // the quickstart's weight decay) on 16M parameters in four tensors; the
    // candle column is the same optimiser on candle's composed ops.
    let adam_params: Vec<(String, Var)> = (0..4)
        .map(|i| {
            Ok((
                format!("w{i}"),
                Var::randn(0f32, 0.1, (1024, 4096), &Device::Cpu)?,
            ))
        })
        .collect::<Result<_>>()?;
    let adam_loss = adam_params
        .iter()
        .map(|(_, v)| v.as_tensor().sqr()?.sum_all())
        .reduce(|a, b| a? + b?)
        .context("no parameters")??;
    let adam_grads = adam_loss.backward()?;
    let adam_settings = medseg_learners::OptimizerSettings {
        kind: medseg_config::OptimizerKind::Adam,
        momentum: 0.0,
        nesterov: false,
        weight_decay: 1e-5,
        betas: [0.9, 0.999],
        eps: 1e-8,
    };
    let mut fused = medseg_learners::Optimizer::new(adam_params.clone(), adam_settings);
    let mut composed = medseg_learners::Optimizer::new(adam_params.clone(), adam_settings);
    row!(
        "adam step 4x1024x4096",
        || Ok(fused.step(&adam_grads, 1e-4)?),
        Some(median_ms(w, it, || Ok(ops::with_candle_ops(|| {
            composed.step(&adam_grads, 1e-4)
        })?))?)
    );

    let torch = if o.python {
        run_python(
            "tools/torch_ops_bench.py",
            &[
                "--threads".into(),
                o.threads.to_string(),
                "--iters".into(),
                it.to_string(),
                "--warmup".into(),
                w.to_string(),
            ],
        )?
    } else {
        eprintln!("notice: --no-python given; skipping the PyTorch side");
        None
    };
    if torch.is_none() {
        println!("(PyTorch figures unavailable: no Python with torch)");
    }
    let torch = torch.unwrap_or_default();
    println!(
        "\n{:<40} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "op (ms, median)", "medseg", "candle", "pytorch", "ms/torch", "ms/candle"
    );
    for r in &rows {
        let t = torch.get(r.name).copied();
        println!(
            "{:<40} {:>10} {:>10} {:>10} {:>10} {:>10}",
            r.name,
            fmt_ms(r.medseg),
            fmt_ms(r.candle),
            fmt_ms(t),
            fmt_ratio(r.medseg, t),
            fmt_ratio(r.medseg, r.candle)
        );
    }
    Ok(())
}
