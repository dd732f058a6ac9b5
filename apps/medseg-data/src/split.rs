//! `medseg-data split` (not yet available).

/// Arguments of `medseg-data split`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `medseg-data split`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("medseg-data split is not available yet")
}
