//! `medseg-data augment` (not yet available).

/// Arguments of `medseg-data augment`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `medseg-data augment`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("medseg-data augment is not available yet")
}
