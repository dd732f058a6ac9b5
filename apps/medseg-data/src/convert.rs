//! `medseg-data convert` (not yet available).

/// Arguments of `medseg-data convert`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `medseg-data convert`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("medseg-data convert is not available yet")
}
