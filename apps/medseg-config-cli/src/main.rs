//! `medseg-config`: check experiment configs and import PyMIC INI configs.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use medseg_config::{import_pymic, ExperimentConfig};
use std::path::PathBuf;

/// Configuration tools for medseg.
#[derive(Parser)]
#[command(name = "medseg-config", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Translate a PyMIC INI config (v0.5/0.6 keys) into medseg TOML, printed
    /// on stdout (or written with --out); keys that could not be mapped are
    /// listed on stderr.
    ImportPymic {
        /// The PyMIC .cfg file.
        file: PathBuf,
        /// Write the TOML here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Load a medseg config with overrides, validate it, and print the result.
    Check {
        /// The TOML config.
        file: PathBuf,
        /// Override a key, e.g. --set training.lr=0.01 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::ImportPymic { file, out } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let imp =
                import_pymic(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            match out {
                Some(o) => {
                    medseg_core::write_atomic(&o, imp.toml.as_bytes())?;
                }
                None => print!("{}", imp.toml),
            }
            if !imp.unmapped.is_empty() {
                eprintln!("keys not mapped ({}):", imp.unmapped.len());
                for k in &imp.unmapped {
                    eprintln!("  {k}");
                }
            }
            Ok(())
        }
        Command::Check { file, set } => {
            let cfg = ExperimentConfig::load(&file, &set)?;
            print!("{}", cfg.to_toml_string());
            eprintln!("config hash {}", cfg.hash());
            Ok(())
        }
    }
}
