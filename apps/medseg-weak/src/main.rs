//! `medseg-weak`: weakly supervised training from scribbles, from a config
//! file with a `[weak]` section.

use anyhow::Result;
use clap::{Parser, Subcommand};
use medseg_cli::{train, Regime, TrainArgs};

/// Weakly supervised (scribble) training for medseg.
///
/// The training labels are scribbles: every unannotated pixel holds
/// `dataset.ignore_label` (default 255), so the configured loss (use
/// `CrossEntropyLoss`) is the partial cross-entropy. Scribbles come from the
/// manifest's `label` column, from another column (`dataset.label_column =
/// "scribble"`), or are drawn from full labels on the fly by the
/// `SimulateScribbles` transform (first in `dataset.train_transforms`).
///
/// The `[weak]` section selects the method (`method` = pCE, EntropyMinimization,
/// TotalVariation, MumfordShah, GatedCRF, USTM or DMPLS), the maximum weight
/// of its regularisation (`regularize_w`), its sigmoid ramp-up
/// (`rampup_start`, `rampup_end`), the teacher's EMA decay (`ema_decay`,
/// USTM) and method parameters (`params`). DMPLS needs `DualDecoderUNet`.
/// Predict and evaluate with `medseg-infer` and `medseg-eval`.
#[derive(Parser)]
#[command(name = "medseg-weak", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train from CONFIG: the phantom data set is generated first when
    /// `[dataset.generate]` is set and the data folder is absent. Writes
    /// checkpoints (best and latest, plus `_teacher` weights for USTM),
    /// CSV/JSONL logs (terms `sup`, `unsup`, `weight`) and PNG curves to
    /// `training.output_dir`.
    Train(TrainArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Train(args) => train(&args, Regime::Weak),
    }
}
