//! `CorruptLabels`: noisy labels made from a sample's clean label on the
//! fly, as a training transform, for noisy-label experiments. The corruption
//! of a case depends only on its name and the seed, so every epoch sees the
//! same noisy label, as a real annotation would be.
//!
//! Not a built-in of medseg-transforms: register it with
//! [`register_noise_transform`].

use crate::noisy::{corrupt, NoisyConfig};
use crate::phantom::named_seed;
use medseg_core::{Error, Result, Sample, TransformRecord};
use medseg_transforms::{from_params, Registry, Transform};
use rand_chacha::ChaCha8Rng;
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

/// Replaces the sample's label by a corrupted copy.
#[derive(Debug, Clone)]
pub struct CorruptLabels {
    cfg: NoisyConfig,
    seed: u64,
}

impl CorruptLabels {
    /// Checks the parameters.
    pub fn new(p: CorruptLabelsParams) -> Result<Self> {
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
        Ok(CorruptLabels { cfg, seed: p.seed })
    }
}

impl Transform for CorruptLabels {
    fn name(&self) -> &str {
        "CorruptLabels"
    }
    /// Training only (validation and test keep their clean labels).
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, mut sample: Sample, _rng: &mut ChaCha8Rng) -> Result<Sample> {
        let label = sample.label.as_ref().ok_or_else(|| {
            Error::invalid(
                "CorruptLabels",
                format!("case {} has no label to corrupt", sample.name),
            )
        })?;
        let (noisy, _) = corrupt(label, &self.cfg, named_seed(self.seed, &sample.name))?;
        sample.label = Some(noisy);
        sample.history.push(TransformRecord {
            name: "CorruptLabels".into(),
            params: serde_json::json!({ "seed": self.seed }),
        });
        Ok(sample)
    }
}

/// Adds `CorruptLabels` to a transform registry.
pub fn register_noise_transform(registry: &mut Registry) {
    registry.register("CorruptLabels", |v| {
        let p: CorruptLabelsParams = from_params("CorruptLabels", v)?;
        Ok(Box::new(CorruptLabels::new(p)?))
    });
}
