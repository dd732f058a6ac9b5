//! A transform of your own in the training pipeline: a type implementing
//! `Transform`, typed parameters, and one registration line in the
//! transform registry; `dataset.train_transforms` then lists it by name.
//!
//! `cargo run -p medseg-learners --example custom_transform`

#[path = "common/mod.rs"]
mod common;

use medseg_core::{Sample, TransformRecord};
use medseg_learners::{Registries, TrainerBuilder};
use medseg_transforms::{from_params, Transform};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Parameters of `RandomInvert`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomInvertParams {
    /// Probability of inverting an image.
    pub p: f64,
}

/// Negates the image intensities with probability `p` (a contrast
/// inversion, as between MR sequences). Counts its inversions.
#[derive(Debug)]
pub struct RandomInvert {
    p: f64,
    inverted: Arc<AtomicUsize>,
}

impl Transform for RandomInvert {
    fn name(&self) -> &str {
        "RandomInvert"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, mut sample: Sample, rng: &mut ChaCha8Rng) -> medseg_core::Result<Sample> {
        // every random number is drawn from `rng`, so a seed gives one run
        let invert = rng.random::<f64>() < self.p;
        if invert {
            sample.image.data.mapv_inplace(|v| -v);
            self.inverted.fetch_add(1, Ordering::Relaxed);
        }
        sample.history.push(TransformRecord {
            name: "RandomInvert".into(),
            params: serde_json::json!({ "inverted": invert }),
        });
        Ok(sample)
    }
}

/// Trains with `RandomInvert` in the pipeline and checks that it ran.
pub fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("data");
    common::tiny_phantom(&root)?;
    let out = dir.path().join("run");
    let tf = r#", { name = "RandomInvert", p = 0.5 }"#;
    let cfg = common::tiny_config(&root, &out, common::UNET, common::DICE_CE, tf, "")?;

    let inverted = Arc::new(AtomicUsize::new(0));
    let counter = inverted.clone();
    let mut registries = Registries::with_builtins();
    // the one registration line
    registries.transforms.register("RandomInvert", move |v| {
        let p: RandomInvertParams = from_params("RandomInvert", v)?;
        Ok(Box::new(RandomInvert {
            p: p.p,
            inverted: counter.clone(),
        }))
    });

    let summary = TrainerBuilder::new(cfg)
        .registries(registries)
        .progress(false)
        .build()?
        .run()?;
    println!("{summary}");
    // 4 steps of 2 labelled images (the loader may prefetch a few more)
    let n = inverted.load(Ordering::Relaxed);
    anyhow::ensure!(n > 0, "RandomInvert never inverted an image");
    println!("RandomInvert inverted {n} images");
    Ok(())
}
