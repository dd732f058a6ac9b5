//! `medseg-data`: inspect and convert medical images, generate phantom data,
//! simulate imperfect annotations, split datasets, preview augmentation and
//! make "photographed" copies of test sets.
//!
//! Each subcommand lives in its own module with a clap `Args` struct and a
//! `run` function; this file only dispatches.

use clap::{Parser, Subcommand};

mod augment;
mod convert;
mod info;
mod noisy;
mod partial;
mod photograph;
mod scribble;
mod split;
mod synth;

/// Data tools for medseg.
#[derive(Parser)]
#[command(name = "medseg-data", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print JSON per file: shape, data type, spacing, origin, direction, affine, qform/sform codes and value range.
    Info(info::Args),
    /// Convert between NIfTI (.nii/.nii.gz) and PNG/JPEG/TIFF, keeping the geometry.
    Convert(convert::Args),
    /// Generate phantom images and labels with manifests.
    Synth(synth::Args),
    /// Simulate scribble annotations from full labels in a manifest.
    Scribble(scribble::Args),
    /// Simulate noisy labels from clean labels in a manifest.
    Noisy(noisy::Args),
    /// Keep only some classes per image or per site (partial labels).
    Partial(partial::Args),
    /// Split a manifest into train/valid/test and labelled/unlabelled parts, by subject.
    Split(split::Args),
    /// Render a grid of augmented samples with label overlays.
    Augment(augment::Args),
    /// Make a "photographed" copy of a data set (screen photo: perspective, colour cast, moiré, blur, JPEG, noise).
    Photograph(photograph::Args),
}

fn main() -> anyhow::Result<()> {
    // large tensor buffers: keep freed memory in the heap (docs/performance.md)
    medseg_core::runtime::tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Info(a) => info::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Scribble(a) => scribble::run(a),
        Command::Noisy(a) => noisy::run(a),
        Command::Partial(a) => partial::run(a),
        Command::Split(a) => split::run(a),
        Command::Augment(a) => augment::run(a),
        Command::Photograph(a) => photograph::run(a),
    }
}
