//! `medseg-data info` (not yet available).

/// Arguments of `medseg-data info`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `medseg-data info`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("medseg-data info is not available yet")
}
