//! `cargo xtask cuda-build [--compute-cap 90] [--cudnn] [--bins a,b,...] [--target-dir DIR] [--pack DIR]`:
//! builds the release binaries with candle's CUDA back end on a machine without
//! a CUDA toolkit or GPU.
//!
//! It runs `xtask/cuda/build-with-cuda.sh`, which installs nvcc, the CUDA
//! headers and libcudart from the Python package index into a venv
//! (`~/.cache/medseg-cuda/venv`, or `CUDA_VENV`), builds once (the final link
//! fails), makes link stubs with the right sonames for libcuda, cuBLAS, cuRAND,
//! NVRTC (and cuDNN) from the symbols the compiled rlibs reference, and links
//! again. The real libraries are loaded on the GPU machine at run time.
//!
//! Defaults: compute capability 90 (H100/H200), the binaries
//! `medseg-supervised`, `medseg-semi`, `medseg-weak`, `medseg-infer` and
//! `xtask`, the target
//! directory `target/cuda` (or `CARGO_TARGET_DIR`), so the CPU build in
//! `target/` is neither blocked nor invalidated. `--pack DIR` writes each
//! binary stripped and gzipped to `DIR/<name>.gz`, ready to carry to a GPU
//! machine (see docs/cuda.md).

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// A binary and the package (with a `cuda` feature) that builds it.
const BINS: [(&str, &str); 5] = [
    ("medseg-supervised", "medseg-supervised"),
    ("medseg-semi", "medseg-semi"),
    ("medseg-weak", "medseg-weak"),
    ("medseg-infer", "medseg-infer-app"),
    ("xtask", "xtask"),
];

/// Runs the task.
pub fn run(args: &[String]) -> Result<()> {
    let mut cap = "90".to_string();
    let mut feature = "cuda";
    let mut bins: Vec<String> = BINS.iter().map(|(b, _)| b.to_string()).collect();
    let mut target_dir: Option<PathBuf> = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from);
    let mut pack: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--compute-cap" => cap = val("--compute-cap")?.clone(),
            "--cudnn" => feature = "cudnn",
            "--bins" => bins = val("--bins")?.split(',').map(str::to_string).collect(),
            "--target-dir" => target_dir = Some(PathBuf::from(val("--target-dir")?)),
            "--pack" => pack = Some(PathBuf::from(val("--pack")?)),
            other => bail!("cuda-build: unknown argument {other:?}"),
        }
    }
    if cap.is_empty() || !cap.chars().all(|c| c.is_ascii_digit()) {
        bail!("cuda-build: --compute-cap takes digits such as 90 (Hopper) or 80 (Ampere), got {cap:?}");
    }
    let root = crate::python::workspace_root();
    let target_dir = target_dir.unwrap_or_else(|| root.join("target").join("cuda"));
    let mut cargo_args = vec!["--release".to_string()];
    let mut features = Vec::new();
    for b in &bins {
        let Some((_, pkg)) = BINS.iter().find(|(name, _)| name == b) else {
            bail!(
                "cuda-build: unknown binary {b:?}; known: {}",
                BINS.map(|(b, _)| b).join(", ")
            );
        };
        cargo_args.extend(["-p".to_string(), pkg.to_string()]);
        features.push(format!("{pkg}/{feature}"));
    }
    cargo_args.extend(["--features".to_string(), features.join(",")]);
    let script = root.join("xtask/cuda/build-with-cuda.sh");
    eprintln!(
        "building {} for compute capability {cap} ({feature}) into {}",
        bins.join(", "),
        target_dir.display()
    );
    let st = Command::new("bash")
        .arg(&script)
        .arg(&root)
        .args(&cargo_args)
        .env("CUDA_COMPUTE_CAP", &cap)
        .env("CARGO_TARGET_DIR", &target_dir)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !st.success() {
        bail!("cuda-build: {} failed ({st})", script.display());
    }
    let release = target_dir.join("release");
    if let Some(dir) = pack {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for b in &bins {
            let src = release.join(b);
            let dst = dir.join(format!("{b}.gz"));
            // strip into DIR/<name>, then gzip replaces it with DIR/<name>.gz
            let st = Command::new("sh")
                .args(["-c", "strip -o \"$2\" \"$1\" && gzip -9f \"$2\"", "pack"])
                .arg(&src)
                .arg(dir.join(b))
                .status()
                .context("running strip and gzip")?;
            if !st.success() {
                bail!("cuda-build: packing {} failed", src.display());
            }
            eprintln!("packed {}", dst.display());
        }
    }
    for b in &bins {
        println!("{}", release.join(b).display());
    }
    Ok(())
}
