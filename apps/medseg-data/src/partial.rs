//! `medseg-data partial` (not yet available).

/// Arguments of `medseg-data partial`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `medseg-data partial`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("medseg-data partial is not available yet")
}
