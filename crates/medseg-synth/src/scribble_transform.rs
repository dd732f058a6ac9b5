//! `SimulateScribbles`: scribbles drawn from a sample's full label on the
//! fly, as a training transform, for experiments that start from full
//! labels. The scribble of a case depends only on its name and the seed, so
//! every epoch sees the same annotation, as a real annotator's would be.
//!
//! Not a built-in of medseg-transforms (which does not depend on the
//! simulators): register it with [`register_scribble_transform`].

use crate::phantom::named_seed;
use crate::scribble::{scribble, ScribbleConfig, ScribbleMethod};
use medseg_core::{Error, LabelMap, Result, Sample, TransformRecord};
use medseg_transforms::{from_params, Registry, Transform};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

/// Parameters of `SimulateScribbles` (`medseg-data scribble`'s options).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateScribblesParams {
    /// `skeleton` (default, as WSL4MIS's ACDC scribbles) or `random_walk`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Range of the fraction of each structure's pixels to scribble.
    #[serde(default = "default_coverage")]
    pub coverage: [f64; 2],
    /// Erosion radius (pixels) of the region scribbles may use.
    #[serde(default = "default_erosion")]
    pub erosion: f64,
    /// Brush radius (pixels).
    #[serde(default = "default_brush")]
    pub brush: f64,
    /// Scribble the background too.
    #[serde(default = "yes")]
    pub background: bool,
    /// Background scribbles stay within this many pixels of the foreground.
    #[serde(default = "default_margin")]
    pub margin: f64,
    /// Value of unannotated pixels (`dataset.ignore_label`).
    #[serde(default = "default_ignore")]
    pub ignore: u16,
    /// Seed, combined with each case's name.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_method() -> String {
    "skeleton".into()
}
fn default_coverage() -> [f64; 2] {
    [0.05, 0.15]
}
fn default_erosion() -> f64 {
    2.0
}
fn default_brush() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn default_margin() -> f64 {
    12.0
}
fn default_ignore() -> u16 {
    medseg_core::DEFAULT_IGNORE_LABEL
}
fn default_seed() -> u64 {
    1
}

/// Draws a case's simulated annotation from its label and seed.
pub type Simulator = dyn Fn(&LabelMap, u64) -> Result<LabelMap> + Send + Sync;

/// A training transform that replaces a sample's label by a simulated
/// annotation of it (scribbles, a noisy label). The simulation of a case
/// depends only on its name and the seed, never on the pipeline's random
/// generator, so every epoch sees the same annotation.
#[derive(Clone)]
pub struct SimulatedLabels {
    name: &'static str,
    seed: u64,
    simulate: std::sync::Arc<Simulator>,
}

impl std::fmt::Debug for SimulatedLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedLabels")
            .field("name", &self.name)
            .field("seed", &self.seed)
            .finish()
    }
}

impl SimulatedLabels {
    /// The transform `name`, drawing case `c`'s annotation with
    /// `simulate(label, named_seed(seed, c))`.
    pub fn new(
        name: &'static str,
        seed: u64,
        simulate: impl Fn(&LabelMap, u64) -> Result<LabelMap> + Send + Sync + 'static,
    ) -> Self {
        SimulatedLabels {
            name,
            seed,
            simulate: std::sync::Arc::new(simulate),
        }
    }
}

impl Transform for SimulatedLabels {
    fn name(&self) -> &str {
        self.name
    }
    /// Training only (validation and test keep their clean, full labels).
    fn is_random(&self) -> bool {
        true
    }
    fn simulates_labels(&self) -> bool {
        true
    }
    fn apply(&self, mut sample: Sample, _rng: &mut ChaCha8Rng) -> Result<Sample> {
        let label = sample.label.as_ref().ok_or_else(|| {
            Error::invalid(
                self.name,
                format!("case {} has no label to draw from", sample.name),
            )
        })?;
        let simulated = (self.simulate)(label, named_seed(self.seed, &sample.name))?;
        sample.label = Some(simulated);
        sample.history.push(TransformRecord {
            name: self.name.into(),
            params: serde_json::json!({ "seed": self.seed }),
        });
        Ok(sample)
    }
}

/// `SimulateScribbles`: scribbles of the sample's label.
pub fn simulate_scribbles(p: SimulateScribblesParams) -> Result<SimulatedLabels> {
    let method = match p.method.as_str() {
        "skeleton" => ScribbleMethod::Skeleton,
        "random_walk" => ScribbleMethod::RandomWalk,
        other => {
            return Err(Error::invalid(
                "SimulateScribbles.method",
                format!("expected `skeleton` or `random_walk`, got `{other}`"),
            ))
        }
    };
    let cfg = ScribbleConfig {
        method,
        coverage: (p.coverage[0], p.coverage[1]),
        erosion_px: p.erosion,
        brush_px: p.brush,
        background: p.background,
        background_margin_px: p.margin,
        ignore: p.ignore,
        ..ScribbleConfig::default()
    };
    cfg.validate()?;
    Ok(SimulatedLabels::new(
        "SimulateScribbles",
        p.seed,
        move |l, seed| Ok(scribble(l, &cfg, seed)?.0),
    ))
}

/// Adds `SimulateScribbles` to a transform registry.
pub fn register_scribble_transform(registry: &mut Registry) {
    registry.register("SimulateScribbles", |v| {
        let p: SimulateScribblesParams = from_params("SimulateScribbles", v)?;
        Ok(Box::new(simulate_scribbles(p)?))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use medseg_core::Image;
    use rand::SeedableRng;

    fn sample(name: &str) -> Sample {
        let mut lab = ndarray::ArrayD::<u16>::zeros(vec![1, 40, 40]);
        for y in 10..30 {
            for x in 12..28 {
                lab[[0, y, x]] = 1;
            }
        }
        let img = Image::new(lab.mapv(f32::from), Default::default()).unwrap();
        let mut s = Sample::new(name, img);
        s.label = Some(LabelMap::new(lab, Default::default()).unwrap());
        s
    }

    #[test]
    fn scribbles_are_a_fixed_subset_of_the_label_per_case() {
        let mut r = Registry::with_builtins();
        register_scribble_transform(&mut r);
        let spec = serde_json::json!([{ "name": "SimulateScribbles", "seed": 3 }]);
        let p = r.build(spec.as_array().unwrap()).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let a = p.apply(sample("case_a"), &mut rng).unwrap();
        let a2 = p.apply(sample("case_a"), &mut rng).unwrap();
        let b = p.apply(sample("case_b"), &mut rng).unwrap();
        let full = sample("case_a").label.unwrap().data;
        let sa = a.label.unwrap().data;
        // the same case gives the same scribble whatever the pipeline's rng
        assert_eq!(sa, a2.label.unwrap().data);
        assert_ne!(sa, b.label.unwrap().data);
        // every annotated pixel keeps its true class; most are unannotated
        let mut annotated = 0;
        for (s, f) in sa.iter().zip(full.iter()) {
            if *s != 255 {
                assert_eq!(s, f);
                annotated += 1;
            }
        }
        assert!(annotated > 0 && annotated < full.len() / 2, "{annotated}");
        // bad parameters and a missing label are named
        let bad = serde_json::json!([{ "name": "SimulateScribbles", "method": "zigzag" }]);
        assert!(r
            .build(bad.as_array().unwrap())
            .unwrap_err()
            .to_string()
            .contains("zigzag"));
        let mut s = sample("c");
        s.label = None;
        let e = p.apply(s, &mut rng).unwrap_err().to_string();
        assert!(
            e.contains("no label") && e.contains("SimulateScribbles"),
            "{e}"
        );
    }
}
