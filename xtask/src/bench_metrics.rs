//! `cargo xtask` task bench_metrics (not yet available).

/// Runs the task with its extra arguments.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("bench_metrics is not available yet")
}
