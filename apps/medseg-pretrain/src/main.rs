//! `medseg-pretrain`: self-supervised pre-training of a network's encoder
//! on images without labels, and the SAS chain (pre-training, then training
//! from the pre-trained encoder), from a config file with a `[pretrain]`
//! section.

use clap::{Parser, Subcommand};
use medseg_cli::TrainArgs;

/// Self-supervised pre-training for medseg.
///
/// The [pretrain] section selects the method (method = MoCo, SimCLR or
/// ModelGenesis), its iterations, learning rate and batch size (defaults
/// from [training] and [dataset]), the transforms making each view
/// (view_transforms, after dataset.train_transforms), where the encoder is
/// written (output, default <training.output_dir>/pretrain/encoder.safetensors)
/// and method parameters (params: queue_size, momentum, temperature,
/// proj_dim, hidden_dim). Images come from pretrain.csv, else
/// dataset.train_unlabelled_csv, else dataset.train_csv (labels unread).
/// Any trainer loads the encoder with network.pretrained = PATH, and
/// network.freeze_encoder = N keeps it fixed for the first N iterations.
#[derive(Parser)]
#[command(name = "medseg-pretrain", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pre-train the encoder of [network] as [pretrain] says; writes the
    /// encoder weights, the loss log (CSV, JSONL) and its curve (PNG).
    Train(TrainArgs),
    /// Pre-train, then train the same config (its [semi] method if any,
    /// else supervised) with network.pretrained set to the new encoder: the
    /// SAS chain of configs/selfsup/sas.toml.
    Sas(TrainArgs),
}

fn main() -> anyhow::Result<()> {
    // large tensor buffers: keep freed memory in the heap (docs/performance.md)
    medseg_core::runtime::tune_allocator();
    match Cli::parse().command {
        Command::Train(args) => medseg_cli::pretrain(&args).map(|_| ()),
        Command::Sas(args) => medseg_cli::sas(&args),
    }
}
