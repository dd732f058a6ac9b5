//! `cargo xtask` task bench_ops (not yet available).

/// Runs the task with its extra arguments.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("bench_ops is not available yet")
}
