//! `medseg-config`: check experiment configs and import PyMIC INI configs.

mod check;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use medseg_config::{import_pymic, ExperimentConfig, PymicOptions};
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
    /// Translate a PyMIC 0.6 INI config into medseg TOML, printed on stdout
    /// (or written with --out). Keys that could not be mapped, or were mapped
    /// approximately, are listed on stderr with the reason; the import fails
    /// when a key that changes the results cannot be mapped, unless
    /// --allow-unmapped is given.
    ImportPymic {
        /// The PyMIC .cfg file.
        file: PathBuf,
        /// Write the TOML here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The folder PyMIC ran from, which its relative paths start from
        /// (default: the current folder). Use the TOML from the same folder.
        #[arg(long)]
        pymic_dir: Option<PathBuf>,
        /// Translate even when keys that change the results cannot be mapped.
        #[arg(long)]
        allow_unmapped: bool,
    },
    /// Load a medseg config with overrides, validate it, check that its
    /// manifests and the files they name exist (unless the data is generated)
    /// and that its transforms build, and print the result.
    Check {
        /// The TOML config.
        file: PathBuf,
        /// Override a key, e.g. --set training.lr=0.01 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Check the keys only, not the data files.
        #[arg(long)]
        no_data: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::ImportPymic {
            file,
            out,
            pymic_dir,
            allow_unmapped,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let working_dir = match pymic_dir {
                Some(d) => std::path::absolute(&d)?,
                None => std::env::current_dir()?,
            };
            let opts = PymicOptions {
                working_dir,
                allow_unmapped,
            };
            let imp = import_pymic(&text, &opts)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            match out {
                Some(o) => medseg_core::write_atomic(&o, imp.toml.as_bytes())?,
                None => print!("{}", imp.toml),
            }
            if !imp.notes.is_empty() {
                eprintln!("keys not mapped or approximated ({}):", imp.notes.len());
                for n in &imp.notes {
                    eprintln!("  {n}");
                }
            }
            Ok(())
        }
        Command::Check { file, set, no_data } => {
            let cfg = ExperimentConfig::load(&file, &set)?;
            check::transforms(&cfg)?;
            if !no_data {
                let n = check::data(&cfg)?;
                eprintln!("data: {n} manifest(s) and the files they name exist");
            }
            print!("{}", cfg.to_toml_string());
            eprintln!("config hash {}", cfg.hash());
            Ok(())
        }
    }
}
