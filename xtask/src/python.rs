//! Finding (or making) the Python used for side-by-side reference runs.
//!
//! The reference side of every benchmark runs in a virtual environment at
//! `.venv` in the workspace root. `ensure_venv` creates it and installs the
//! packages a suite needs when Python is present; when it is not, suites skip
//! the reference side with a notice.

#![allow(dead_code)]

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

/// Returns the venv's python, creating the venv and installing `packages`
/// (pip names) if needed. `Ok(None)` when no system Python exists or the
/// install fails; the reason is printed.
pub fn ensure_venv(packages: &[&str]) -> Result<Option<PathBuf>> {
    let root = workspace_root();
    let venv = root.join(".venv");
    let py = venv.join("bin").join("python");
    if !py.exists() {
        let sys = ["python3", "python"]
            .into_iter()
            .find(|p| Command::new(p).arg("--version").output().is_ok());
        let Some(sys) = sys else {
            eprintln!("notice: no Python found; skipping the reference side");
            return Ok(None);
        };
        let st = Command::new(sys)
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .context("creating .venv")?;
        if !st.success() {
            eprintln!("notice: could not create .venv; skipping the reference side");
            return Ok(None);
        }
    }
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            let module = match *p {
                "SimpleITK" => "SimpleITK",
                "scikit-image" => "skimage",
                other => other,
            };
            !Command::new(&py)
                .args(["-c", &format!("import {}", module.replace('-', "_"))])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .collect();
    if !missing.is_empty() {
        eprintln!("installing into .venv: {}", missing.join(" "));
        let st = Command::new(&py)
            .args(["-m", "pip", "install", "-q"])
            .args(&missing)
            .status()
            .context("running pip")?;
        if !st.success() {
            eprintln!("notice: pip install failed; skipping the reference side");
            return Ok(None);
        }
    }
    Ok(Some(py))
}

/// Builds the medseg-metrics wheel with `tools/wheel/build.sh` (pinned
/// maturin in `target/wheel-venv`) and returns its path; `Ok(None)` with a
/// notice when the build fails (no Python, no network for the first venv).
pub fn build_wheel() -> Result<Option<PathBuf>> {
    let root = workspace_root();
    let out = Command::new("bash")
        .arg(root.join("tools/wheel/build.sh"))
        .current_dir(&root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running tools/wheel/build.sh")?;
    if !out.status.success() {
        eprintln!("notice: building the medseg-metrics wheel failed; skipping it");
        return Ok(None);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(stdout.lines().last().map(|l| PathBuf::from(l.trim())))
}

/// Installs `wheel` into the venv of `py` (replacing an installed version,
/// without touching its dependencies). `Ok(false)` with a notice on failure.
pub fn install_wheel(py: &Path, wheel: &Path) -> Result<bool> {
    let st = Command::new(py)
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--force-reinstall",
            "--no-deps",
        ])
        .arg(wheel)
        .status()
        .context("running pip")?;
    if !st.success() {
        eprintln!("notice: installing {} failed", wheel.display());
    }
    Ok(st.success())
}
