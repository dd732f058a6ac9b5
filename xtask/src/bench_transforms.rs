//! `cargo xtask` task bench_transforms (not yet available).

/// Runs the task with its extra arguments.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("bench_transforms is not available yet")
}
