//! `cargo xtask` task bench_io (not yet available).

/// Runs the task with its extra arguments.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("bench_io is not available yet")
}
