//! `medseg-data synth` (not yet available).

/// Arguments of `medseg-data synth`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `medseg-data synth`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("medseg-data synth is not available yet")
}
