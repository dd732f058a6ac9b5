//! `medseg-infer`: predict segmentations with trained checkpoints.
//!
//! Two ways to call it:
//! - `medseg-infer CONFIG`: the checkpoints, test manifest, transforms and
//!   settings of an experiment config;
//! - `medseg-infer --checkpoint CKPT --input FILE... --output DIR`: explicit
//!   files; the run's `config.toml` beside the checkpoint folder supplies the
//!   test transforms when present.

use anyhow::{bail, Context, Result};
use clap::Parser;
use medseg_config::{ExperimentConfig, InferenceConfig, LargestComponent};
use medseg_infer::{InferenceJob, LargestComponentMode, Predictor, SlidingWindow};
use medseg_transforms::{build_pipeline, Mode};
use std::path::{Path, PathBuf};

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
    /// A checkpoint (.safetensors); repeat to ensemble. Overrides the config's.
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
}

fn checkpoint_path(name: &str, cfg: Option<&ExperimentConfig>) -> Result<PathBuf> {
    match (name, cfg) {
        ("best" | "latest", Some(c)) => Ok(c
            .training
            .output_dir
            .join("checkpoints")
            .join(format!("{name}.safetensors"))),
        ("best" | "latest", None) => bail!("checkpoint `{name}` needs a config to locate the run"),
        (p, _) => Ok(PathBuf::from(p)),
    }
}

/// The run config stored beside a checkpoint (`<run>/config.toml` for
/// `<run>/checkpoints/x.safetensors`).
fn run_config_of(ckpt: &Path) -> Option<ExperimentConfig> {
    let p = ckpt.parent()?.parent()?.join("config.toml");
    let text = std::fs::read_to_string(p).ok()?;
    ExperimentConfig::from_toml_str(&text).ok()
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let cfg = match &cli.config {
        Some(p) => {
            let mut c = ExperimentConfig::load(p, &cli.set)?;
            c.resolve_paths(&std::env::current_dir().context("reading the current directory")?);
            Some(c)
        }
        None => None,
    };
    let ckpts: Vec<PathBuf> = if !cli.checkpoint.is_empty() {
        cli.checkpoint.clone()
    } else if let Some(c) = &cfg {
        c.inference
            .checkpoints
            .iter()
            .map(|n| checkpoint_path(n, Some(c)))
            .collect::<Result<_>>()?
    } else {
        bail!("give a CONFIG or at least one --checkpoint");
    };
    for c in &ckpts {
        if !c.is_file() {
            bail!(
                "checkpoint {} not found (train first, or check inference.checkpoints)",
                c.display()
            );
        }
    }
    // settings: explicit flags > config > the run's config > defaults
    let run_cfg = cfg.clone().or_else(|| run_config_of(&ckpts[0]));
    let inf: InferenceConfig = run_cfg
        .as_ref()
        .map(|c| c.inference.clone())
        .unwrap_or_default();
    let test_specs = run_cfg
        .as_ref()
        .map(|c| c.dataset.test_transforms.clone())
        .unwrap_or_default();
    let pipeline = build_pipeline(&test_specs)
        .context("dataset.test_transforms")?
        .with_mode(Mode::Inference);

    let device = candle_core::Device::Cpu;
    let mut nets = Vec::new();
    let mut varmaps = Vec::new();
    for c in &ckpts {
        let (vm, net) = medseg_nets::load_network(c, &device)
            .with_context(|| format!("loading {}", c.display()))?;
        varmaps.push(vm);
        nets.push(net);
    }
    let window = SlidingWindow {
        patch_size: cli.patch_size.clone().or(inf.patch_size.clone()),
        overlap: inf.overlap,
        gaussian: inf.gaussian,
        sigma_scale: inf.sigma_scale,
        batch_size: inf.sw_batch_size,
    };
    let lcc = match cli.largest_component.as_deref() {
        Some("per_class") => Some(LargestComponentMode::PerClass),
        Some("union") => Some(LargestComponentMode::Union),
        Some("none") => None,
        Some(other) => bail!("--largest-component {other}: expected per_class, union or none"),
        None => match inf.largest_component {
            LargestComponent::PerClass => Some(LargestComponentMode::PerClass),
            LargestComponent::Union => Some(LargestComponentMode::Union),
            LargestComponent::None => None,
        },
    };
    let out_dir = cli
        .output
        .clone()
        .or(inf.output_dir.clone())
        .or(cfg
            .as_ref()
            .map(|c| c.training.output_dir.join("predictions")))
        .unwrap_or_else(|| PathBuf::from("predictions"));
    let job = InferenceJob {
        predictor: Predictor::new(
            nets.iter().map(|n| n.as_ref()).collect(),
            device,
            window,
            cli.tta || inf.tta_flip,
        )?,
        pipeline: &pipeline,
        largest_component: lcc,
        save_probabilities: cli.save_probabilities || inf.save_probabilities,
        overlays: !cli.no_overlays && inf.overlays,
        out_dir: out_dir.clone(),
    };

    // cases: explicit inputs, else the config's test manifest
    // (name, image files, ground truth if the manifest has one)
    let cases: Vec<(String, Vec<PathBuf>, Option<PathBuf>)> = if !cli.input.is_empty() {
        cli.input
            .iter()
            .map(|p| (medseg_io::file_stem(p), vec![p.clone()], None))
            .collect()
    } else if let Some(c) = &cfg {
        let test = c
            .dataset
            .test_csv
            .as_ref()
            .context("no --input and no dataset.test_csv in the config")?;
        let m = medseg_learners::read_manifest(c, test)?;
        m.rows
            .iter()
            .map(|r| {
                let files: Vec<PathBuf> = r.images.iter().map(|p| m.resolve(p)).collect();
                (
                    medseg_io::file_stem(&files[0]),
                    files,
                    r.label.as_ref().map(|l| m.resolve(l)),
                )
            })
            .collect()
    } else {
        bail!("give --input files or a CONFIG with dataset.test_csv");
    };
    let pb = indicatif::ProgressBar::new(cases.len() as u64);
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut listing = medseg_io::Manifest::new(&out_dir);
    for (name, files, gt) in &cases {
        let out = job
            .run_case(files, name)
            .with_context(|| format!("case {name} ({})", files[0].display()))?;
        let mut row = medseg_io::ManifestRow::new(abs(&files[0]));
        row.label = gt.as_deref().map(abs);
        row.extra.insert(
            "prediction".into(),
            abs(&out.label).to_string_lossy().into_owned(),
        );
        listing.rows.push(row);
        pb.inc(1);
    }
    pb.finish_and_clear();
    // image, label (when known) and prediction of every case, for medseg-eval --manifest
    listing.write(&out_dir.join("predictions.csv"))?;
    println!(
        "{} predictions written to {} (listed in predictions.csv)",
        cases.len(),
        out_dir.display()
    );
    Ok(())
}
