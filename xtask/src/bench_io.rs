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
//!
//! Then peak memory: a 300x512x512 int16 CT-like `.nii.gz` (150 MB of
//! voxels, 300 MB as float32; `target/bench-io/ct_300x512x512_int16.nii.gz`,
//! made on first use) read once per fresh process, by medseg-io
//! (`bench_read FILE --peak`: VmHWM) and by nibabel (`get_fdata(float32)`,
//! `get_fdata()` and `np.asanyarray(dataobj)`: ru_maxrss), with the wall time
//! of each process.

use crate::python::{ensure_venv, workspace_root};
use anyhow::{bail, Context, Result};
use std::process::Command;

const PY_PEAK: &str = r#"
import sys, resource, numpy as np, nibabel as nib
mode = sys.argv[2]
img = nib.load(sys.argv[1])
if mode == 'fdata32':
    a = img.get_fdata(dtype=np.float32)
elif mode == 'fdata':
    a = img.get_fdata()
else:
    a = np.asanyarray(img.dataobj)
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"#;

/// Runs `cmd` once and returns (peak KiB from its `tag` line, wall seconds).
fn peak_of(mut cmd: Command, tag: &str) -> Result<(u64, f64)> {
    let t = std::time::Instant::now();
    let out = cmd.output().context("running a peak-memory reader")?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix(tag))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no peak-memory line")?;
    Ok((kb, secs))
}

/// The peak-memory table (see the module docs).
fn peak_table(root: &std::path::Path) -> Result<()> {
    let file = root.join("target/bench-io/ct_300x512x512_int16.nii.gz");
    let example = root.join("target/release/examples/bench_read");
    let mk = || {
        let mut c = Command::new(&example);
        c.arg(&file).args(["--peak", "--shape", "300,512,512"]);
        c
    };
    if !file.exists() {
        let _ = mk().output();
    }
    let mut rows = vec![(
        "medseg-io read_nifti (float32)".to_string(),
        peak_of(mk(), "MEDSEG_PEAK_KB ")?,
    )];
    if let Some(py) = ensure_venv(&["numpy", "nibabel"])? {
        for (mode, label) in [
            ("fdata32", "nibabel get_fdata(dtype=float32)"),
            ("fdata", "nibabel get_fdata() (float64)"),
            ("dataobj", "nibabel np.asanyarray(dataobj) (int16)"),
        ] {
            let mut c = Command::new(&py);
            c.args(["-c", PY_PEAK]).arg(&file).arg(mode);
            rows.push((label.to_string(), peak_of(c, "PEAK_KB ")?));
        }
    }
    println!();
    println!(
        "peak memory reading {} (150 MB of int16 voxels, 300 MB as float32), one fresh process each:",
        file.display()
    );
    println!("| reader | peak resident memory | wall time of the process |");
    println!("|---|---|---|");
    for (label, (kb, secs)) in rows {
        println!(
            "| {label} | {:.0} MB | {secs:.2} s |",
            kb as f64 * 1024.0 / 1e6
        );
    }
    Ok(())
}

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
        return peak_table(&root);
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
    peak_table(&root)?;
    Ok(())
}
