//! `cargo xtask fuzz [TARGET...] [--seconds N] [--seed S]`: mutation
//! fuzzing of the parsers of untrusted files (see the medseg-fuzz crate),
//! each target for `N` seconds (default 60); prints executions, their rate
//! and the findings, and saves each finding to
//! `fuzz/crashes/<target>/<n>-<corpus name>`. Fixed findings belong in
//! `fuzz/regressions/<target>/`, which the tests replay.

use anyhow::{bail, Context, Result};
use medseg_fuzz::{fuzz, repo_root, Target};

/// Runs the task.
pub fn run(args: &[String]) -> Result<()> {
    let mut seconds = 60.0;
    let mut seed = 1u64;
    let mut targets = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it
                    .next()
                    .context("--seconds needs a value")?
                    .parse()
                    .context("--seconds: a number")?
            }
            "--seed" => {
                seed = it
                    .next()
                    .context("--seed needs a value")?
                    .parse()
                    .context("--seed: an integer")?
            }
            name => match Target::from_name(name) {
                Some(t) => targets.push(t),
                None => bail!(
                    "unknown fuzz target {name:?}: expected nifti, raster, manifest, config or pymic"
                ),
            },
        }
    }
    if targets.is_empty() {
        targets = Target::ALL.to_vec();
    }
    let root = repo_root();
    println!("| target | executions | per second | findings |");
    println!("|---|---|---|---|");
    let mut total = 0;
    for t in targets {
        let r = fuzz(t, &root, seed, u64::MAX, seconds).map_err(anyhow::Error::msg)?;
        println!(
            "| {} | {} | {:.0} | {} |",
            t.name(),
            r.executions,
            r.executions as f64 / r.seconds.max(1e-9),
            r.findings.len()
        );
        if !r.findings.is_empty() {
            let dir = root.join("fuzz/crashes").join(t.name());
            std::fs::create_dir_all(&dir)?;
            for (k, (name, bytes, msg)) in r.findings.iter().enumerate() {
                let p = dir.join(format!("{k}-{name}"));
                std::fs::write(&p, bytes)?;
                eprintln!("  {}: {msg}", p.display());
            }
        }
        total += r.findings.len();
    }
    if total > 0 {
        bail!("{total} findings (saved under fuzz/crashes/)");
    }
    Ok(())
}
