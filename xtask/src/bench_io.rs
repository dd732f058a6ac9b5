//! `cargo xtask bench io [REPS]`: reading a 256x256x180 int16 `.nii.gz`,
//! medseg-io against nibabel's `get_fdata()`, on the same file in one run.
//!
//! The file (a CT-like phantom written by medseg-io) lives at
//! `target/bench-io/ct_256x256x180_int16.nii.gz` and is made on first use.
//! The Rust side is `cargo run --release -p medseg-io --example bench_read`;
//! the Python side loads the file afresh each repetition and calls
//! `get_fdata()` (float64, as nibabel users do). Prints both medians and the
//! ratio (nibabel / medseg; above 1 means medseg is faster). Without Python
//! the reference side is skipped with a notice.

use crate::python::{ensure_venv, workspace_root};
use anyhow::{bail, Context, Result};
use std::process::Command;

const PY: &str = r#"
import sys, time, statistics
import nibabel as nib
path, reps = sys.argv[1], int(sys.argv[2])
img = nib.load(path); a = img.get_fdata(); assert a.shape == (256, 256, 180), a.shape
times = []
for _ in range(reps):
    t = time.perf_counter()
    a = nib.load(path).get_fdata()
    times.append(time.perf_counter() - t)
print("NIBABEL_MEDIAN", statistics.median(times), nib.__version__)
"#;

/// Runs the suite; `args` may hold the number of repetitions (default 15).
pub fn run(args: &[String]) -> Result<()> {
    let reps: usize = match args.first() {
        Some(s) => s
            .parse()
            .with_context(|| format!("repetitions {s:?} is not a number"))?,
        None => 15,
    };
    let root = workspace_root();
    let file = root.join("target/bench-io/ct_256x256x180_int16.nii.gz");
    eprintln!("building and running the medseg-io reader (release)...");
    let out = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "run",
            "--release",
            "-q",
            "-p",
            "medseg-io",
            "--example",
            "bench_read",
            "--",
        ])
        .arg(&file)
        .arg(reps.to_string())
        .output()
        .context("running cargo")?;
    if !out.status.success() {
        bail!(
            "the medseg-io bench failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("MEDSEG_BENCH_IO "))
        .context("no result line from the medseg-io bench")?;
    let v: serde_json::Value = serde_json::from_str(line).context("parsing the bench result")?;
    let rust = v["median_s"]
        .as_f64()
        .context("no median in the bench result")?;
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    println!(
        "file: {} ({:.1} MB compressed, 23.6 MB of int16 voxels)",
        file.display(),
        size as f64 / 1e6
    );
    println!(
        "medseg-io read_image (f32):      median {:8.1} ms over {reps} reads",
        rust * 1e3
    );
    let Some(py) = ensure_venv(&["numpy", "nibabel"])? else {
        println!("nibabel: skipped (no Python)");
        return Ok(());
    };
    let out = Command::new(&py)
        .args(["-c", PY])
        .arg(&file)
        .arg(reps.to_string())
        .output()
        .context("running Python")?;
    if !out.status.success() {
        eprintln!(
            "notice: the nibabel side failed, skipping it:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return Ok(());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut parts = stdout
        .lines()
        .find_map(|l| l.strip_prefix("NIBABEL_MEDIAN "))
        .context("no result line from the nibabel side")?
        .split_whitespace();
    let nib: f64 = parts.next().context("no median")?.parse()?;
    let version = parts.next().unwrap_or("?");
    println!(
        "nibabel {version} get_fdata (f64):  median {:8.1} ms over {reps} reads",
        nib * 1e3
    );
    println!(
        "ratio nibabel / medseg-io: {:.2}x ({})",
        nib / rust,
        if nib >= rust {
            "medseg-io is not slower"
        } else {
            "medseg-io is SLOWER"
        }
    );
    Ok(())
}
