//! `medseg-federated`: federated training across sites that each labelled
//! different classes, simulated in one process from a config file.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use medseg_federated::simulation::{split_overrides, FederationConfig, Simulation};
use medseg_federated::AggregatorRegistry;
use std::path::PathBuf;

/// Federated training for medseg.
///
/// A federation config (`configs/federated/`) names a base learner config,
/// the sites (each with its own manifests and overrides), the aggregation
/// strategy (FedAvg, FedProx, FedBN, FedAdam, FedYogi, SegViz) and the
/// rounds. Sites with partial labels say which classes each case annotates
/// (`annotated_classes`); the marginal and exclusion losses use them.
#[derive(Parser)]
#[command(name = "medseg-federated", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a federation in this process: each round a seeded sample of
    /// sites (`fraction`, `min_sites`) trains `local_iterations` steps from
    /// the global weights, some drop out (`dropout`), the strategy
    /// aggregates the rest. Writes rounds.csv, rounds.png,
    /// global.safetensors and model.safetensors (one multi-organ network,
    /// for medseg-infer) to federation.output_dir. The phantom federation
    /// is generated first when the base config's `[dataset.generate]` asks
    /// for it.
    Simulate {
        /// Federation config (TOML).
        config: PathBuf,
        /// Override a key (repeatable): `federation.*` keys change the
        /// federation file (e.g. `federation.rounds=5`), any other key
        /// every site's learner config (e.g. `training.lr=0.001`).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Print nothing per round.
        #[arg(long)]
        quiet: bool,
        /// Device of every site: `cpu`, `cuda` or `cuda:N`.
        #[arg(long)]
        device: Option<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Simulate {
            config,
            set,
            quiet,
            device,
        } => {
            let (fed_set, site_set) = split_overrides(&set);
            let cfg = FederationConfig::load(&config, &fed_set)
                .with_context(|| format!("loading {}", config.display()))?;
            let cwd = std::env::current_dir().context("reading the current directory")?;
            let mut site_cfgs = Vec::new();
            for k in 0..cfg.sites.len() {
                let mut c = cfg.site_config(k, &site_set, &cwd)?;
                if let Some(d) = &device {
                    c.training.device = d.clone();
                }
                medseg_cli::ensure_data(&c)?;
                site_cfgs.push(c);
            }
            let mut sim = Simulation::new(
                &cfg,
                site_cfgs,
                &medseg_cli::registries,
                &AggregatorRegistry::with_builtins(),
            )
            .with_context(|| format!("setting up the federation of {}", config.display()))?;
            sim.progress = !quiet;
            let summary = sim.run()?;
            println!("{}: {summary}", cfg.federation.strategy);
            println!("final model: {}", summary.export_note);
            Ok(())
        }
    }
}
