//! `cargo xtask bench metrics [REPS]`: HD95 + ASSD on a 3D pair of
//! 128x256x256 voxels (D, H, W; spacing 2.0 x 0.8 x 0.8 mm), medseg-metrics
//! against MedPy 0.5 and MONAI 1.6 on the same masks in one run.
//!
//! The Rust side is `cargo run --release -p medseg-metrics --example
//! bench_pair`, which also writes the pair to `target/bench-metrics/` as raw
//! `u8`; the Python side reads those files. MedPy is timed as users call it
//! (`hd95(...)` then `assd(...)`), MONAI as `compute_hausdorff_distance(
//! percentile=95)` then `compute_average_surface_distance(symmetric=True)`;
//! medseg computes both from one `surface_distances` call. Prints the medians,
//! the ratios and the values (MedPy's pooled HD95 and MONAI's max-of-directed
//! HD95 differ by definition). Without Python the reference side is skipped
//! with a notice.

use crate::python::{ensure_venv, workspace_root};
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
    let Some(py) = ensure_venv(&["numpy", "scipy", "medpy", "torch", "monai"])? else {
        println!("MedPy / MONAI: skipped (no Python)");
        return Ok(());
    };
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
    for (key, label, ours_hd95) in [
        ("medpy", "MedPy hd95+assd", "hd95_pooled"),
        ("monai", "MONAI HD(95)+ASD(sym)", "hd95_max_of_directed"),
    ] {
        let e = &r[key];
        if let Some(err) = e.get("error") {
            println!("{label}: skipped ({err})");
            continue;
        }
        let t = e["median_s"].as_f64().unwrap_or(f64::NAN);
        let hd = e["hd95"].as_f64().unwrap_or(f64::NAN);
        let assd = e["assd"].as_f64().unwrap_or(f64::NAN);
        let ours_hd = v[ours_hd95].as_f64().unwrap_or(f64::NAN);
        let ours_assd = v["assd"].as_f64().unwrap_or(f64::NAN);
        println!(
            "{label:<22} {}: median {:9.1} ms   HD95 {hd:.6} (rel. diff {:.1e}), ASSD {assd:.6} (rel. diff {:.1e})",
            e["version"].as_str().unwrap_or("?"),
            t * 1e3,
            ((hd - ours_hd) / hd).abs(),
            ((assd - ours_assd) / assd).abs(),
        );
        println!(
            "  ratio {key} / medseg: {:.1}x ({})",
            t / rust,
            if t / rust >= 10.0 {
                "target of 10x met"
            } else {
                "BELOW the 10x target"
            }
        );
    }
    Ok(())
}
