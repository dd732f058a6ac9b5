//! `CorruptLabels`: noisy labels made from a sample's clean label on the
//! fly, as a training transform, for noisy-label experiments. The corruption
//! of a case depends only on its name and the seed, so every epoch sees the
//! same noisy label, as a real annotation would be.
//!
//! Not a built-in of medseg-transforms: register it with
//! [`register_noise_transform`].

use crate::noisy::{corrupt, NoisyConfig};
use crate::scribble_transform::SimulatedLabels;
use medseg_core::Result;
use medseg_transforms::{from_params, Registry};
use serde::Deserialize;

/// Parameters of `CorruptLabels` (`medseg-data noisy`'s options).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorruptLabelsParams {
    /// Probability that a case is corrupted (default 1).
    #[serde(default = "one")]
    pub probability: f64,
    /// Allow dilation/erosion of the boundaries (default true).
    #[serde(default = "yes")]
    pub dilate_erode: bool,
    /// Allow elastic boundary distortion (default true).
    #[serde(default = "yes")]
    pub elastic: bool,
    /// Allow shifts (default false).
    #[serde(default)]
    pub shift: bool,
    /// Bring each corrupted case's mean foreground Dice against its clean
    /// label into this range (e.g. `[0.55, 0.65]`).
    #[serde(default)]
    pub target_dice: Option<[f64; 2]>,
    /// Seed, combined with each case's name (default 1).
    #[serde(default = "seed1")]
    pub seed: u64,
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn seed1() -> u64 {
    1
}

/// `CorruptLabels`: a corrupted copy of the sample's label.
pub fn corrupt_labels(p: CorruptLabelsParams) -> Result<SimulatedLabels> {
    let cfg = NoisyConfig {
        probability: p.probability,
        dilate_erode: p.dilate_erode,
        elastic: p.elastic,
        shift: p.shift,
        flip_probability: 0.0,
        target_dice: p.target_dice.map(|t| (t[0], t[1])),
        ..NoisyConfig::default()
    };
    cfg.validate()?;
    Ok(SimulatedLabels::new(
        "CorruptLabels",
        p.seed,
        move |l, seed| Ok(corrupt(l, &cfg, seed)?.0),
    ))
}

/// Adds `CorruptLabels` to a transform registry.
pub fn register_noise_transform(registry: &mut Registry) {
    registry.register("CorruptLabels", |v| {
        let p: CorruptLabelsParams = from_params("CorruptLabels", v)?;
        Ok(Box::new(corrupt_labels(p)?))
    });
}
