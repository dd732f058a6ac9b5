//! `medseg-supervised`: train a segmentation network with full labels from a
//! config file, or print the network summary.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use medseg_config::ExperimentConfig;
use medseg_learners::{build_net, network_config, parse_device, TrainerBuilder};
use std::path::PathBuf;

/// Fully supervised training for medseg.
#[derive(Parser)]
#[command(name = "medseg-supervised", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train from CONFIG: the phantom data set is generated first when
    /// `[dataset.generate]` is set and the data folder is absent. Writes
    /// checkpoints (best and latest), CSV/JSONL logs and PNG curves to
    /// `training.output_dir`.
    Train {
        /// Experiment config (TOML).
        config: PathBuf,
        /// Override a key, e.g. `--set training.iterations=200` (repeatable).
        /// Environment variables `MEDSEG_SECTION__KEY=value` override too.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
        /// Device: `cpu`, `cuda` or `cuda:N` (default: `training.device`, else cpu).
        #[arg(long)]
        device: Option<String>,
    },
    /// Print the network of CONFIG: layers, output shapes, parameter count
    /// and multiply-adds for an input size.
    Summary {
        /// Experiment config (TOML).
        config: PathBuf,
        /// Input shape without the batch axis, e.g. `1,256,256` (default: the
        /// inference patch size, else 128 per spatial axis).
        #[arg(long, value_delimiter = ',')]
        input: Option<Vec<usize>>,
        /// Override a key (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

fn load(
    config: &std::path::Path,
    set: &[String],
    device: Option<String>,
) -> Result<ExperimentConfig> {
    let mut cfg = ExperimentConfig::load(config, set)?;
    if let Some(d) = device {
        cfg.training.device = d;
    }
    let cwd = std::env::current_dir().context("reading the current directory")?;
    cfg.resolve_paths(&cwd);
    Ok(cfg)
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Train {
            config,
            set,
            quiet,
            device,
        } => {
            let cfg = load(&config, &set, device)?;
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
                .learner("supervised")
                .progress(!quiet)
                .build()
                .with_context(|| format!("setting up training from {}", config.display()))?;
            println!("{}", trainer.run()?);
            Ok(())
        }
        Command::Summary { config, input, set } => {
            let cfg = load(&config, &set, None)?;
            let device = parse_device(&cfg.training.device)?;
            let (_vm, net) = build_net(&network_config(&cfg), &device)?;
            let mut shape = vec![1];
            match input {
                Some(i) => shape.extend(i),
                None => {
                    shape.push(cfg.dataset.in_channels);
                    match &cfg.inference.patch_size {
                        Some(p) => shape.extend(p),
                        None => shape.extend(std::iter::repeat_n(128, net.dimension())),
                    }
                }
            }
            let s = medseg_nets::summarize(net.as_ref(), &shape, &device)?;
            println!("{s}");
            Ok(())
        }
    }
}
