//! `cargo xtask` task bench_unet (not yet available).

/// Runs the task with its extra arguments.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("bench_unet is not available yet")
}
