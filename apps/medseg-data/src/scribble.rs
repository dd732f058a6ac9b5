//! `medseg-data scribble` (not yet available).

/// Arguments of `medseg-data scribble`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `medseg-data scribble`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("medseg-data scribble is not available yet")
}
