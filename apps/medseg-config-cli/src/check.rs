//! What `medseg-config check` verifies beyond the keys: the transforms build
//! and the data named by the manifests exists.

use anyhow::{bail, Context, Result};
use medseg_config::ExperimentConfig;
use medseg_io::Manifest;
use medseg_transforms::Registry;
use std::path::PathBuf;

/// Builds every transform list with the built-in registry.
pub fn transforms(cfg: &ExperimentConfig) -> Result<()> {
    let reg = Registry::with_builtins();
    let d = &cfg.dataset;
    for (key, specs) in [
        ("dataset.train_transforms", &d.train_transforms),
        ("dataset.test_transforms", &d.test_transforms),
        ("dataset.noisy_transforms", &d.noisy_transforms),
    ] {
        reg.build(specs).with_context(|| key.to_string())?;
    }
    Ok(())
}

/// Reads every manifest of the config (relative to `dataset.root`, as the
/// learners read them) and checks that the files they name exist. Returns
/// the number of manifests; nothing is checked when the data is generated
/// on first use (`dataset.generate`).
pub fn data(cfg: &ExperimentConfig) -> Result<usize> {
    let d = &cfg.dataset;
    if d.generate.is_some() {
        return Ok(0);
    }
    if !d.root.is_dir() {
        bail!("dataset.root: folder {} not found", d.root.display());
    }
    let manifests: Vec<(&str, &PathBuf)> = [
        ("dataset.train_csv", Some(&d.train_csv)),
        ("dataset.valid_csv", d.valid_csv.as_ref()),
        ("dataset.test_csv", d.test_csv.as_ref()),
        (
            "dataset.train_unlabelled_csv",
            d.train_unlabelled_csv.as_ref(),
        ),
        ("dataset.train_noisy_csv", d.train_noisy_csv.as_ref()),
    ]
    .into_iter()
    .filter_map(|(k, p)| p.map(|p| (k, p)))
    .collect();
    for (key, p) in &manifests {
        let path = if p.is_absolute() {
            (*p).clone()
        } else {
            d.root.join(p)
        };
        Manifest::read(&path, Some(&d.root)).with_context(|| key.to_string())?;
    }
    Ok(manifests.len())
}
