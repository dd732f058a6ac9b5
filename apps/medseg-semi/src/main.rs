//! `medseg-semi`: semi-supervised training (a few labelled and many
//! unlabelled images) from a config file with a `[semi]` section.

use anyhow::Result;
use clap::{Parser, Subcommand};
use medseg_cli::{train, Regime, TrainArgs};

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
    Train(TrainArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Train(args) => train(&args, Regime::Semi),
    }
}
