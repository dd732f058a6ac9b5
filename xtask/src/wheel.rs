//! `cargo xtask wheel [--native] [--out DIR] [--test]`: builds the
//! medseg-metrics Python wheel (`bindings/python`, PyO3 abi3 for CPython
//! 3.9+) with the pinned maturin that `tools/wheel/setup_venv.sh` installs
//! from the package index into `target/wheel-venv`, and installs it there.
//! `--test` then runs the wheel's Python test suite (against MedPy live, and
//! MedPy and MONAI through the committed fixtures), as
//! `cargo test -p medseg-metrics --test python_wheel` does.
//!
//! The wheel runs on any x86-64-v2 CPU unless `--native` builds it for this
//! machine's CPU (as the rest of medseg is). Prints the wheel's path.

use crate::python::workspace_root;
use anyhow::{bail, Context, Result};
use std::process::Command;

/// Runs the task.
pub fn run(args: &[String]) -> Result<()> {
    let mut build_args: Vec<String> = Vec::new();
    let mut test = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--native" => build_args.push(a.clone()),
            "--out" => {
                let dir = it.next().context("--out needs a folder")?;
                build_args.push(a.clone());
                build_args.push(dir.clone());
            }
            "--test" => test = true,
            other => bail!("unknown argument {other:?} (expected --native, --out DIR, --test)"),
        }
    }
    let root = workspace_root();
    eprintln!("building the medseg-metrics wheel (maturin, release)...");
    let script = if test {
        "tools/wheel/test.sh"
    } else {
        "tools/wheel/build.sh"
    };
    if test && !build_args.is_empty() {
        bail!("--test builds the default wheel; give --native/--out without --test");
    }
    let st = Command::new("bash")
        .arg(root.join(script))
        .args(&build_args)
        .current_dir(&root)
        .status()
        .with_context(|| format!("running {script} (needs bash and python3)"))?;
    if !st.success() {
        bail!("{script} failed ({st})");
    }
    if !test {
        println!("installed into target/wheel-venv (try: target/wheel-venv/bin/python -c 'import medseg_metrics')");
    }
    Ok(())
}
