//! `medseg-supervised`: train a segmentation network with full labels from a
//! config file, or print the network summary.

use anyhow::Result;
use clap::{Parser, Subcommand};
use medseg_cli::{load_config, train, Regime, TrainArgs};
use medseg_learners::{build_net, network_config, parse_device};
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
    Train(TrainArgs),
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

fn main() -> Result<()> {
    // large tensor buffers: keep freed memory in the heap (docs/performance.md)
    medseg_core::runtime::tune_allocator();
    match Cli::parse().command {
        Command::Train(args) => train(&args, Regime::Supervised),
        Command::Summary { config, input, set } => {
            let cfg = load_config(&config, &set, None)?;
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
