//! `medseg-infer`: predict segmentations with trained checkpoints.
//!
//! Two ways to call it:
//! - `medseg-infer CONFIG`: the checkpoints, test manifest, transforms and
//!   settings of an experiment config;
//! - `medseg-infer --checkpoint CKPT --input FILE... --output DIR`: explicit
//!   files; the run's `config.toml` beside the checkpoint folder supplies the
//!   test transforms when present.
//!
//! The resolution (checkpoints, settings precedence, cases, output folder,
//! device) and the run live in `medseg_infer::InferencePlan`; this file only
//! parses arguments.

use anyhow::Result;
use clap::Parser;
use medseg_infer::{load_config, InferenceOverrides, InferencePlan, PREDICTIONS_CSV};
use std::path::PathBuf;

/// Predict segmentations with trained medseg checkpoints.
#[derive(Parser)]
#[command(name = "medseg-infer", version, about, long_about = None)]
struct Cli {
    /// Experiment config (TOML). Uses `inference.checkpoints` (`best`,
    /// `latest` or paths; several are ensembled), `dataset.test_csv`,
    /// `dataset.test_transforms` and the `[inference]` settings.
    config: Option<PathBuf>,
    /// Override a config key, e.g. `--set inference.tta_flip=true` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// A checkpoint: medseg's .safetensors, or a PyTorch .pt/.pth (e.g.
    /// PyMIC's `*_best.pt`) whose network the config's [network] describes;
    /// repeat to ensemble. Overrides the config's.
    #[arg(long)]
    checkpoint: Vec<PathBuf>,
    /// Input image files (one case each); overrides the config's test manifest.
    #[arg(long, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Output folder (default: `inference.output_dir`, else
    /// `<training.output_dir>/predictions`, else `predictions`).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Sliding-window size per spatial axis, e.g. `128,128` (default: whole image).
    #[arg(long, value_delimiter = ',')]
    patch_size: Option<Vec<usize>>,
    /// Average over flips along every subset of spatial axes.
    #[arg(long)]
    tta: bool,
    /// Keep the largest connected component: `per_class`, `union` or `none`.
    #[arg(long)]
    largest_component: Option<String>,
    /// Also write class probabilities (`<case>_prob.nii.gz`).
    #[arg(long)]
    save_probabilities: bool,
    /// Do not write overlay PNGs.
    #[arg(long)]
    no_overlays: bool,
    /// Device: `cpu`, `cuda` or `cuda:N` (default: the config's
    /// `training.device`, else `cpu`; CUDA needs a build with `--features cuda`).
    #[arg(long)]
    device: Option<String>,
}

fn main() -> Result<()> {
    // large tensor buffers: keep freed memory in the heap (docs/performance.md)
    medseg_core::runtime::tune_allocator();
    let cli = Cli::parse();
    let cfg = match &cli.config {
        Some(p) => Some(load_config(p, &cli.set)?),
        None => None,
    };
    let overrides = InferenceOverrides {
        checkpoints: cli.checkpoint,
        inputs: cli.input,
        output: cli.output,
        patch_size: cli.patch_size,
        tta: cli.tta,
        largest_component: cli.largest_component,
        save_probabilities: cli.save_probabilities,
        no_overlays: cli.no_overlays,
        device: cli.device,
    };
    let plan = InferencePlan::resolve(cfg.as_ref(), &overrides)?;
    let pb = indicatif::ProgressBar::new(plan.cases.len() as u64);
    plan.run(&mut |_, _| pb.inc(1))?;
    pb.finish_and_clear();
    println!(
        "{} predictions written to {} (listed in {PREDICTIONS_CSV})",
        plan.cases.len(),
        plan.out_dir.display()
    );
    Ok(())
}
