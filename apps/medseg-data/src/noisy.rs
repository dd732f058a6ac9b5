//! `medseg-data noisy` (not yet available).

/// Arguments of `medseg-data noisy`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `medseg-data noisy`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("medseg-data noisy is not available yet")
}
