//! `cargo xtask bench transforms [criterion args]`: runs the criterion bench
//! `benches/benches/transforms.rs` (3D augmentation of a 128^3 volume) and
//! `tools/bench_monai_transforms.py` (the same cases with MONAI dictionary
//! transforms), then prints the time per sample side by side. The MONAI side
//! is skipped with a notice when Python (or MONAI) is not available.

use crate::python::{ensure_venv, workspace_root};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;

const GROUP: &str = "transforms_3d_128";
const CASES: &[(&str, &str)] = &[
    ("crop96", "RandomCrop 96^3 of 128^3"),
    ("flip", "RandomFlip, 3 axes"),
    ("rotate", "RandomRotate, 3 planes"),
    ("elastic", "ElasticDeformation"),
    ("pipeline", "crop + flip + rotate + elastic"),
];

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Mean time in seconds of one criterion benchmark, from its estimates file.
fn criterion_mean(case: &str) -> Result<f64> {
    let path = target_dir()
        .join("criterion")
        .join(GROUP)
        .join(case)
        .join("new")
        .join("estimates.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let ns = v["mean"]["point_estimate"]
        .as_f64()
        .with_context(|| format!("{}: no mean.point_estimate", path.display()))?;
    Ok(ns * 1e-9)
}

fn monai_times() -> Result<Option<serde_json::Value>> {
    let Some(py) = ensure_venv(&["numpy", "torch", "monai"])? else {
        return Ok(None);
    };
    let script = workspace_root()
        .join("tools")
        .join("bench_monai_transforms.py");
    let out = Command::new(&py)
        .arg(&script)
        .arg("5")
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        eprintln!(
            "notice: {} failed; skipping the MONAI side:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    Ok(Some(serde_json::from_str(line).with_context(|| {
        format!("parsing the output of {}: {line}", script.display())
    })?))
}

/// Runs the task with its extra arguments (passed on to criterion).
pub fn run(args: &[String]) -> Result<()> {
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace_root())
        .args([
            "bench",
            "-p",
            "medseg-benches",
            "--bench",
            "transforms",
            "--",
        ])
        .args(args)
        .status()
        .context("running cargo bench")?;
    if !st.success() {
        bail!("cargo bench -p medseg-benches --bench transforms failed");
    }
    let monai = monai_times()?;
    println!();
    println!("time per sample, 1x128x128x128 f32 image + u16 label");
    println!(
        "{:<10} {:<32} {:>12} {:>12} {:>9}",
        "case", "what", "medseg ms", "MONAI ms", "speed-up"
    );
    for (case, what) in CASES {
        let ours = criterion_mean(case)?;
        let theirs = monai.as_ref().and_then(|m| m[*case].as_f64());
        match theirs {
            Some(t) => println!(
                "{case:<10} {what:<32} {:>12.1} {:>12.1} {:>8.1}x",
                ours * 1e3,
                t * 1e3,
                t / ours
            ),
            None => println!(
                "{case:<10} {what:<32} {:>12.1} {:>12} {:>9}",
                ours * 1e3,
                "-",
                "-"
            ),
        }
    }
    if let Some(info) = monai.as_ref().map(|m| &m["_info"]) {
        println!("MONAI side: {info}");
    } else {
        println!("MONAI side skipped (no Python with MONAI)");
    }
    println!(
        "threads: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    Ok(())
}
