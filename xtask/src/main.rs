//! `cargo xtask <task>`: benchmark suites that run medseg and the Python
//! reference side by side, experiments and fixture generation.
//!
//! ```text
//! cargo xtask bench io|metrics|ops|unet|unet3d|sliding|transforms
//! cargo xtask experiment semi|weak|noisy|federated|flower|selfsup|zoo
//! cargo xtask cuda-build [--compute-cap 90] [--cudnn] [--bins a,b] [--pack DIR]
//! cargo xtask cuda-parity [--device cuda:N] [--tol 1e-4]
//! cargo xtask fuzz [nifti|raster|manifest|config|pymic] [--seconds N] [--seed S]
//! ```

mod bench_io;
mod bench_metrics;
mod bench_ops;
mod bench_sliding;
mod bench_transforms;
mod bench_unet;
mod bench_unet3d;
mod cuda_build;
mod cuda_parity;
mod experiment;
mod experiment_federated;
mod experiment_flower;
mod experiment_noisy_overlay;
mod experiment_overlay;
mod experiment_selfsup;
mod experiment_zoo;
mod fuzz;
mod python;
mod wheel;

use anyhow::{bail, Result};

fn usage() -> &'static str {
    "usage: cargo xtask bench <io|metrics|ops|unet|unet3d|sliding|transforms> [args]\n       cargo xtask experiment <semi|weak|weak-overlay|noisy|noisy-overlay|federated|flower|selfsup|zoo> [args]\n       cargo xtask cuda-build [--compute-cap 90] [--cudnn] [--bins a,b] [--target-dir DIR] [--pack DIR]\n       cargo xtask cuda-parity [--device cuda:N] [--tol 1e-4]\n       cargo xtask fuzz [nifti|raster|manifest|config|pymic] [--seconds N] [--seed S]"
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((t, r)) => (t.as_str(), r),
        None => bail!("{}", usage()),
    };
    match (task, rest.first().map(String::as_str)) {
        ("bench", Some("io")) => bench_io::run(&rest[1..]),
        ("bench", Some("metrics")) => bench_metrics::run(&rest[1..]),
        ("bench", Some("ops")) => bench_ops::run(&rest[1..]),
        ("bench", Some("unet")) => bench_unet::run(&rest[1..]),
        ("bench", Some("unet-child")) => bench_unet::child(&rest[1..]),
        ("bench", Some("unet3d")) => bench_unet3d::run(&rest[1..]),
        ("bench", Some("sliding")) => bench_sliding::run(&rest[1..]),
        ("bench", Some("sliding-child")) => bench_sliding::child(&rest[1..]),
        ("bench", Some("transforms")) => bench_transforms::run(&rest[1..]),
        ("experiment", Some("semi")) => experiment::run(&experiment::SEMI, &rest[1..]),
        ("experiment", Some("weak")) => experiment::run(&experiment::WEAK, &rest[1..]),
        ("experiment", Some("noisy")) => experiment::run(&experiment::NOISY, &rest[1..]),
        ("experiment", Some("weak-overlay")) => experiment_overlay::run(&rest[1..]),
        ("experiment", Some("noisy-overlay")) => experiment_noisy_overlay::run(&rest[1..]),
        ("experiment", Some("federated")) => experiment_federated::run(&rest[1..]),
        ("experiment", Some("flower")) => experiment_flower::run(&rest[1..]),
        ("experiment", Some("selfsup")) => experiment_selfsup::run(&rest[1..]),
        ("experiment", Some("zoo")) => experiment_zoo::run(&rest[1..]),
        ("cuda-build", _) => cuda_build::run(rest),
        ("cuda-parity", _) => cuda_parity::run(rest),
        ("wheel", _) => wheel::run(rest),
        ("fuzz", _) => fuzz::run(rest),
        _ => bail!("unknown task {:?}\n{}", args, usage()),
    }
}
