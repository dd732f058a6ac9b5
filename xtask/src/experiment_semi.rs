//! `cargo xtask` task experiment_semi (not yet available).

/// Runs the task with its extra arguments.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("experiment_semi is not available yet")
}
