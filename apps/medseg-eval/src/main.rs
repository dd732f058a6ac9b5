//! medseg-eval (not yet available).

fn main() -> anyhow::Result<()> {
    anyhow::bail!("this application is not available yet")
}
