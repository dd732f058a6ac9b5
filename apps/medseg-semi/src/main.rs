//! `medseg-semi`: semi-supervised training (a few labelled and many
//! unlabelled images) from a config file with a `[semi]` section.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use medseg_config::ExperimentConfig;
use medseg_learners::{LearnerRegistry, TrainerBuilder};
use std::path::PathBuf;

/// Semi-supervised training for medseg.
///
/// The `[semi]` section selects the method (`method` = EntropyMinimization,
/// MeanTeacher, UAMT, CCT, CPS, URPC or MCNet), the maximum weight of the
/// unsupervised loss (`regularize_w`), its sigmoid ramp-up (`rampup_start`,
/// `rampup_end`, fractions of `training.iterations`), the teacher's EMA
/// decay (`ema_decay`, Mean Teacher and UA-MT) and method parameters
/// (`params`). Labelled images come from `dataset.train_csv` in batches of
/// `dataset.train_batch_size`, unlabelled ones from
/// `dataset.train_unlabelled_csv` in batches of `dataset.train_batch_size_unlab`.
/// CCT, URPC and MCNet need the networks `CCTNet`, `URPC` and `MCNet`.
#[derive(Parser)]
#[command(name = "medseg-semi", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train from CONFIG: the phantom data set is generated first when
    /// `[dataset.generate]` is set and the data folder is absent. Writes
    /// checkpoints (best and latest, plus `_teacher` or `_net2` weights for
    /// Mean Teacher, UA-MT and CPS), CSV/JSONL logs (terms `sup`, `unsup`,
    /// `weight`) and PNG curves to `training.output_dir`.
    Train {
        /// Experiment config (TOML) with a `[semi]` section.
        config: PathBuf,
        /// Override a key, e.g. `--set semi.method=CPS` or
        /// `--set training.iterations=200` (repeatable). Environment
        /// variables `MEDSEG_SECTION__KEY=value` override too.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
        /// Device: `cpu`, `cuda` or `cuda:N` (default: `training.device`, else cpu).
        #[arg(long)]
        device: Option<String>,
    },
}

/// The registered semi-supervised methods (every learner but `supervised`).
fn semi_methods() -> Vec<String> {
    LearnerRegistry::with_builtins()
        .names()
        .into_iter()
        .filter(|n| *n != "supervised")
        .map(String::from)
        .collect()
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Train {
            config,
            set,
            quiet,
            device,
        } => {
            let mut cfg = ExperimentConfig::load(&config, &set)
                .with_context(|| format!("loading {}", config.display()))?;
            if let Some(d) = device {
                cfg.training.device = d;
            }
            let cwd = std::env::current_dir().context("reading the current directory")?;
            cfg.resolve_paths(&cwd);
            let method = cfg
                .semi
                .as_ref()
                .map(|s| s.method.clone())
                .with_context(|| {
                    format!(
                        "{}: a [semi] section with `method` ({}) is required",
                        config.display(),
                        semi_methods().join(", ")
                    )
                })?;
            if let Some(g) = &cfg.dataset.generate {
                let train = medseg_learners::manifest_path(&cfg, &cfg.dataset.train_csv);
                medseg_synth::ensure_phantom_dataset(
                    &cfg.dataset.root,
                    &train,
                    &g.kind,
                    g.subjects,
                    g.seed,
                )?;
            }
            let mut trainer = TrainerBuilder::new(cfg)
                .progress(!quiet)
                .build()
                .with_context(|| format!("setting up {method} from {}", config.display()))?;
            println!("{method}: {}", trainer.run()?);
            Ok(())
        }
    }
}
