//! `cargo xtask bench metrics [REPS]`: HD95 + ASSD on a 3D pair of
//! 128x256x256 voxels (D, H, W; spacing 2.0 x 0.8 x 0.8 mm), medseg-metrics
//! against MedPy 0.5, MONAI 1.6 and seg-metrics 1.2 on the same masks in one
//! run, and the medseg-metrics Python wheel beside them in the same Python
//! process.
//!
//! The Rust side is `cargo run --release -p medseg-metrics --example
//! bench_pair`, which also writes the pair to `target/bench-metrics/` as raw
//! `u8`; the Python side reads those files. MedPy is timed as users call it
//! (`hd95(...)` then `assd(...)`), MONAI as `compute_hausdorff_distance(
//! percentile=95)` then `compute_average_surface_distance(symmetric=True)`;
//! seg-metrics as `write_metrics(labels=[1], metrics=["hd95", "msd"])` (its
//! default full connectivity); the wheel (built by `tools/wheel/build.sh`,
//! the portable wheel users install, and installed into `.venv`) as
//! `hd95(gt, pred, spacing)` then `assd(...)`, and as one `evaluate(...)`
//! call; medseg computes both from one `surface_distances` call. Prints a
//! Markdown table of medians, ratios to the wheel, and the values, each
//! library's value compared with the wheel's under that library's
//! definition (MedPy's pooled HD95 and MONAI's max-of-directed HD95 differ
//! by definition). Without Python the reference side is skipped with a
//! notice.

use crate::python::{build_wheel, ensure_venv, install_wheel, workspace_root};
use anyhow::{bail, Context, Result};
use std::process::Command;

const SHAPE: [usize; 3] = [128, 256, 256];
const SPACING: &str = "2.0,0.8,0.8";

const PY: &str = r#"
import json, sys, time, warnings
import numpy as np
warnings.filterwarnings("ignore")
folder, reps = sys.argv[1], int(sys.argv[2])
d, h, w = (int(x) for x in sys.argv[3].split(","))
spacing = [float(x) for x in sys.argv[4].split(",")]
pred = np.fromfile(folder + "/pred.u8", dtype=np.uint8).reshape(d, h, w).astype(bool)
gt = np.fromfile(folder + "/gt.u8", dtype=np.uint8).reshape(d, h, w).astype(bool)
out = {}
# the wheel first, before torch and SimpleITK are loaded into the process
try:
    import medseg_metrics as mm
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        hd95 = mm.hd95(gt, pred, spacing)
        assd = mm.assd(gt, pred, spacing)
        times.append(time.perf_counter() - t)
    one = []
    for _ in range(reps):
        t = time.perf_counter()
        m = mm.evaluate(gt, pred, spacing, labels=1)
        one.append(time.perf_counter() - t)
    out["wheel"] = dict(median_s=float(np.median(times)), hd95=float(hd95), assd=float(assd), version=mm.__version__,
                        evaluate_median_s=float(np.median(one)),
                        hd95_max_of_directed=float(mm.hd95(gt, pred, spacing, hd95="max-of-directed")),
                        hd95_full=float(mm.hd95(gt, pred, spacing, connectivity="full")),
                        assd_full=float(mm.assd(gt, pred, spacing, connectivity="full")))
except Exception as e:
    out["wheel"] = dict(error=repr(e))
try:
    import medpy
    from medpy.metric import binary as mp
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        hd95 = mp.hd95(pred, gt, voxelspacing=spacing)
        assd = mp.assd(pred, gt, voxelspacing=spacing)
        times.append(time.perf_counter() - t)
    out["medpy"] = dict(median_s=float(np.median(times)), hd95=float(hd95), assd=float(assd),
                        version=getattr(medpy, "__version__", "0.5"))
except Exception as e:
    out["medpy"] = dict(error=repr(e))
try:
    import monai, torch
    from monai.metrics import compute_hausdorff_distance, compute_average_surface_distance
    yp = torch.from_numpy(pred.astype(np.float32))[None, None]
    yg = torch.from_numpy(gt.astype(np.float32))[None, None]
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        hd95 = compute_hausdorff_distance(yp, yg, include_background=True, percentile=95, spacing=spacing)
        assd = compute_average_surface_distance(yp, yg, include_background=True, symmetric=True, spacing=spacing)
        times.append(time.perf_counter() - t)
    out["monai"] = dict(median_s=float(np.median(times)), hd95=float(hd95[0, 0]), assd=float(assd[0, 0]),
                        version=monai.__version__, torch_threads=torch.get_num_threads())
except Exception as e:
    out["monai"] = dict(error=repr(e))
try:
    from importlib.metadata import version
    import seg_metrics.seg_metrics as sg
    g8, p8 = gt.astype(np.uint8), pred.astype(np.uint8)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        r = sg.write_metrics(labels=[1], gdth_img=g8, pred_img=p8, spacing=spacing, metrics=["hd95", "msd"])
        times.append(time.perf_counter() - t)
    r = r[0] if isinstance(r, list) else r
    out["seg_metrics"] = dict(median_s=float(np.median(times)), hd95=float(r["hd95"][0]), assd=float(r["msd"][0]),
                              version=version("seg-metrics"))
except Exception as e:
    out["seg_metrics"] = dict(error=repr(e))
print("REFERENCE_RESULT " + json.dumps(out))
"#;

/// Runs the suite; `args` may hold the number of repetitions (default 5).
pub fn run(args: &[String]) -> Result<()> {
    let reps: usize = match args.first() {
        Some(s) => s
            .parse()
            .with_context(|| format!("repetitions {s:?} is not a number"))?,
        None => 5,
    };
    if reps == 0 {
        bail!("repetitions must be at least 1");
    }
    let root = workspace_root();
    let dir = root.join("target/bench-metrics");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let shape = format!("{},{},{}", SHAPE[0], SHAPE[1], SHAPE[2]);
    eprintln!("building and running the medseg-metrics side (release)...");
    let out = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "run",
            "--release",
            "-q",
            "-p",
            "medseg-metrics",
            "--example",
            "bench_pair",
            "--",
        ])
        .args(["--shape", &shape, "--repeats", &reps.to_string(), "--write"])
        .arg(&dir)
        .output()
        .context("running cargo")?;
    if !out.status.success() {
        bail!(
            "the medseg-metrics bench failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .context("no result line from the medseg-metrics bench")?;
    let v: serde_json::Value = serde_json::from_str(line).context("parsing the bench result")?;
    let rust = v["median_s"]
        .as_f64()
        .context("no median in the bench result")?;
    println!(
        "pair: {shape} voxels (D,H,W), spacing {SPACING} mm, surfaces with face connectivity; {reps} repetitions"
    );
    println!(
        "medseg-metrics ({} threads): median {:9.1} ms   HD95 pooled {:.6} / max-of-directed {:.6}, ASSD {:.6}",
        v["threads"],
        rust * 1e3,
        v["hd95_pooled"].as_f64().unwrap_or(f64::NAN),
        v["hd95_max_of_directed"].as_f64().unwrap_or(f64::NAN),
        v["assd"].as_f64().unwrap_or(f64::NAN),
    );
    let Some(py) = ensure_venv(&["numpy", "scipy", "medpy", "torch", "monai", "seg-metrics"])?
    else {
        println!("MedPy / MONAI / seg-metrics / wheel: skipped (no Python)");
        return Ok(());
    };
    eprintln!("building the medseg-metrics wheel and installing it into .venv...");
    if let Some(wheel) = build_wheel()? {
        install_wheel(&py, &wheel)?;
    }
    let out = Command::new(&py)
        .args(["-c", PY])
        .arg(&dir)
        .arg(reps.to_string())
        .arg(&shape)
        .arg(SPACING)
        .output()
        .context("running Python")?;
    if !out.status.success() {
        eprintln!(
            "notice: the Python side failed, skipping it:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return Ok(());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("REFERENCE_RESULT "))
        .context("no result line from the Python side")?;
    let r: serde_json::Value = serde_json::from_str(line).context("parsing the Python result")?;
    print_table(&v, &r, rust);
    Ok(())
}

/// The Markdown table: one row per implementation, times relative to the
/// wheel's `hd95` + `assd`, values compared with the wheel's under each
/// library's definition.
fn print_table(v: &serde_json::Value, r: &serde_json::Value, rust_s: f64) {
    let f = |x: &serde_json::Value| x.as_f64().unwrap_or(f64::NAN);
    let w = &r["wheel"];
    let wheel_s = f(&w["median_s"]);
    let rel = |a: f64, b: f64| ((a - b) / b).abs();
    println!();
    println!("| implementation (same Python process, except the first row) | HD95 / ASSD definition | median (ms) | time / wheel | HD95 (mm) | ASSD (mm) | rel. diff. to the wheel, same definition (HD95, ASSD) |");
    println!("|---|---|---:|---:|---:|---:|---|");
    println!(
        "| medseg-metrics (Rust, `bench_pair`, {} threads) | pooled, face | {:.1} | {:.2}x | {:.6} | {:.6} | {:.1e}, {:.1e} |",
        v["threads"],
        rust_s * 1e3,
        rust_s / wheel_s,
        f(&v["hd95_pooled"]),
        f(&v["assd"]),
        rel(f(&v["hd95_pooled"]), f(&w["hd95"])),
        rel(f(&v["assd"]), f(&w["assd"])),
    );
    if let Some(err) = w.get("error") {
        println!("| medseg-metrics wheel | - | skipped ({err}) | | | | |");
    } else {
        println!(
            "| medseg-metrics wheel {}: `hd95()` + `assd()` | pooled, face | {:.1} | 1.00x | {:.6} | {:.6} | - |",
            w["version"].as_str().unwrap_or("?"),
            wheel_s * 1e3,
            f(&w["hd95"]),
            f(&w["assd"]),
        );
        println!(
            "| medseg-metrics wheel: one `evaluate()` (all metrics) | pooled, face | {:.1} | {:.2}x | | | |",
            f(&w["evaluate_median_s"]) * 1e3,
            f(&w["evaluate_median_s"]) / wheel_s,
        );
    }
    for (key, label, def, hd_key, assd_key) in [
        ("medpy", "MedPy `hd95` + `assd`", "pooled, face", "hd95", "assd"),
        (
            "monai",
            "MONAI `compute_hausdorff_distance(percentile=95)` + `compute_average_surface_distance(symmetric=True)`",
            "max-of-directed, face",
            "hd95_max_of_directed",
            "assd",
        ),
        (
            "seg_metrics",
            "seg-metrics `write_metrics(metrics=[\"hd95\", \"msd\"])`",
            "pooled, full",
            "hd95_full",
            "assd_full",
        ),
    ] {
        let e = &r[key];
        if let Some(err) = e.get("error") {
            println!("| {label} | {def} | skipped ({err}) | | | | |");
            continue;
        }
        let t = f(&e["median_s"]);
        let (hd, assd) = (f(&e["hd95"]), f(&e["assd"]));
        println!(
            "| {label} {} | {def} | {:.1} | {:.1}x | {hd:.6} | {assd:.6} | {:.1e}, {:.1e} |",
            e["version"].as_str().unwrap_or("?"),
            t * 1e3,
            t / wheel_s,
            rel(hd, f(&w[hd_key])),
            rel(assd, f(&w[assd_key])),
        );
    }
}
