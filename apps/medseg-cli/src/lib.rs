#![doc = include_str!("../README.md")]
//! What the trainer binaries (`medseg-supervised`, `medseg-semi`,
//! `medseg-weak`, `medseg-noisy`) share: the arguments of `train` and the run itself
//! (load the config, generate the phantom data on first use, build the
//! trainer from the registries, train, print the summary). Argument parsing
//! and calls into the crates, nothing else.

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use medseg_config::ExperimentConfig;
use medseg_learners::{Registries, TrainerBuilder};
use std::path::PathBuf;

/// The arguments of `train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Experiment config (TOML).
    pub config: PathBuf,
    /// Override a key, e.g. `--set training.iterations=200` (repeatable).
    /// Environment variables `MEDSEG_SECTION__KEY=value` override too.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Device: `cpu`, `cuda` or `cuda:N` (default: `training.device`, else cpu).
    #[arg(long)]
    pub device: Option<String>,
}

/// Which learner a trainer binary runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Regime {
    /// The supervised learner, whatever the config's method sections say.
    Supervised,
    /// `semi.method` (the `[semi]` section is required).
    Semi,
    /// `weak.method` (the `[weak]` section is required).
    Weak,
    /// `noisy.method` (the `[noisy]` section is required).
    Noisy,
}

/// Loads `config` with the overrides of `set`, resolves its paths against
/// the current folder and applies `device`.
pub fn load_config(
    config: &std::path::Path,
    set: &[String],
    device: Option<&str>,
) -> Result<ExperimentConfig> {
    let mut cfg = ExperimentConfig::load(config, set)
        .with_context(|| format!("loading {}", config.display()))?;
    if let Some(d) = device {
        cfg.training.device = d.to_string();
    }
    let cwd = std::env::current_dir().context("reading the current directory")?;
    cfg.resolve_paths(&cwd);
    Ok(cfg)
}

/// The built-in registries plus the simulators' transforms
/// (`SimulateScribbles`, `CorruptLabels`).
pub fn registries() -> Registries {
    let mut r = Registries::with_builtins();
    medseg_synth::register_scribble_transform(&mut r.transforms);
    medseg_synth::register_noise_transform(&mut r.transforms);
    r
}

/// The registered learners of a section's methods (every learner but
/// `supervised`), for error messages.
fn method_names() -> String {
    let r = registries();
    let names: Vec<&str> = r
        .learners
        .names()
        .into_iter()
        .filter(|n| *n != "supervised")
        .collect();
    names.join(", ")
}

/// Generates the phantom data set of `[dataset.generate]` into
/// `dataset.root` when its training manifest does not exist yet.
pub fn ensure_data(cfg: &ExperimentConfig) -> Result<()> {
    if let Some(g) = &cfg.dataset.generate {
        let train = medseg_learners::manifest_path(cfg, &cfg.dataset.train_csv);
        medseg_synth::ensure_phantom_dataset(
            &cfg.dataset.root,
            &train,
            &g.kind,
            g.subjects,
            g.seed,
        )?;
    }
    Ok(())
}

/// Runs `train`: generates the phantom data set when `[dataset.generate]`
/// is set and the training manifest is absent, trains the learner of
/// `regime` and prints the summary.
pub fn train(args: &TrainArgs, regime: Regime) -> Result<()> {
    let cfg = load_config(&args.config, &args.set, args.device.as_deref())?;
    let file = args.config.display();
    let (section, method) = match regime {
        Regime::Supervised => ("", Some("supervised".to_string())),
        Regime::Semi => ("semi", cfg.semi.as_ref().map(|s| s.method.clone())),
        Regime::Weak => ("weak", cfg.weak.as_ref().map(|s| s.method.clone())),
        Regime::Noisy => ("noisy", cfg.noisy.as_ref().map(|s| s.method.clone())),
    };
    let method = method.with_context(|| {
        format!(
            "{file}: a [{section}] section with `method` ({}) is required",
            method_names()
        )
    })?;
    ensure_data(&cfg)?;
    // a method with a preparation stage (CL-SLSR's confident learning) runs
    // it first; other configs pass unchanged
    let cfg = medseg_learners::noisy::prepare(&cfg, &registries, !args.quiet)
        .with_context(|| format!("preparing {method} from {file}"))?;
    let mut trainer = TrainerBuilder::new(cfg)
        .registries(registries())
        .learner(&method)
        .progress(!args.quiet)
        .build()
        .with_context(|| format!("setting up {method} from {file}"))?;
    let summary = trainer.run()?;
    match regime {
        Regime::Supervised => println!("{summary}"),
        _ => println!("{method}: {summary}"),
    }
    Ok(())
}

/// Runs self-supervised pre-training (`medseg-pretrain train`): generates
/// the phantom data when needed, pre-trains the encoder of `[network]` as
/// `[pretrain]` says and prints where the encoder went.
pub fn pretrain(args: &TrainArgs) -> Result<medseg_learners::selfsup::PretrainSummary> {
    let cfg = load_config(&args.config, &args.set, args.device.as_deref())?;
    pretrain_config(&args.config, cfg, args.quiet)
}

fn pretrain_config(
    file: &std::path::Path,
    cfg: ExperimentConfig,
    quiet: bool,
) -> Result<medseg_learners::selfsup::PretrainSummary> {
    let method = cfg
        .pretrain
        .as_ref()
        .map(|p| p.method.clone())
        .with_context(|| {
            format!(
                "{}: a [pretrain] section with `method` ({}) is required",
                file.display(),
                medseg_learners::selfsup::PretrainRegistry::with_builtins()
                    .names()
                    .join(", ")
            )
        })?;
    ensure_data(&cfg)?;
    let r = registries();
    let summary = medseg_learners::selfsup::Pretrainer::new(cfg)
        .networks(r.networks)
        .transforms(r.transforms)
        .progress(!quiet)
        .run()
        .with_context(|| format!("pre-training {method} from {}", file.display()))?;
    println!(
        "{method}: {} iterations, loss {:.4} -> {:.4} (first and last tenth); encoder ({} tensors) written to {}",
        summary.iterations,
        summary.first_loss,
        summary.final_loss,
        summary.encoder_tensors,
        summary.encoder_path.display()
    );
    Ok(summary)
}

/// Runs the SAS chain (`medseg-pretrain sas`): pre-training as
/// [`pretrain`], then training of the same config with `network.pretrained`
/// set to the encoder just written (the `[semi]` method when the config
/// has one, else supervised).
pub fn sas(args: &TrainArgs) -> Result<()> {
    let cfg = load_config(&args.config, &args.set, args.device.as_deref())?;
    let summary = pretrain_config(&args.config, cfg.clone(), args.quiet)?;
    let mut cfg = cfg;
    if let Some(o) = cfg.network.as_object_mut() {
        o.insert(
            medseg_learners::selfsup::PRETRAINED_KEY.to_string(),
            serde_json::Value::String(summary.encoder_path.display().to_string()),
        );
    }
    let method = cfg
        .semi
        .as_ref()
        .map_or("supervised".to_string(), |s| s.method.clone());
    let mut trainer = TrainerBuilder::new(cfg)
        .registries(registries())
        .learner(&method)
        .progress(!args.quiet)
        .build()
        .with_context(|| format!("setting up {method} from {}", args.config.display()))?;
    let s = trainer.run()?;
    println!("{method} from the pre-trained encoder: {s}");
    Ok(())
}

/// A trainer binary with one subcommand, `train`.
#[derive(Parser)]
struct TrainCli {
    #[command(subcommand)]
    command: TrainCommand,
}

#[derive(Subcommand)]
enum TrainCommand {
    /// Train from CONFIG: the phantom data set is generated first when
    /// `[dataset.generate]` is set and the data folder is absent. Writes
    /// checkpoints (best and latest, plus the extra networks of a method:
    /// `_teacher`, `_net2`), CSV/JSONL logs (terms `sup`, `unsup`, `weight`
    /// and the method's own) and PNG curves to `training.output_dir`.
    Train(TrainArgs),
}

/// The `main` of a trainer binary whose only subcommand is `train`:
/// `name` and `about` (its `--help` text) are the binary's.
pub fn train_main(name: &'static str, about: &'static str, regime: Regime) -> Result<()> {
    let matches = TrainCli::command()
        .name(name)
        .bin_name(name)
        .version(env!("CARGO_PKG_VERSION"))
        .about(about)
        .get_matches();
    let cli = TrainCli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        TrainCommand::Train(args) => train(&args, regime),
    }
}
