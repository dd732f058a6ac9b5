//! The [`Transform`] trait, [`Pipeline`] and the name -> constructor [`Registry`].

use medseg_core::{Error, Result, Sample, TransformRecord};
use rand_chacha::ChaCha8Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One step of a pipeline: takes a sample, returns the transformed sample and
/// appends a [`TransformRecord`] to `sample.history`.
///
/// Implementations draw every random number from `rng` (serially, before any
/// parallel work), so that a pipeline is deterministic for a seed.
pub trait Transform: Send + Sync + std::fmt::Debug {
    /// The registry name, e.g. `"RandomFlip"`.
    fn name(&self) -> &str;
    /// True for random augmentations, which by default run at training time only.
    fn is_random(&self) -> bool;
    /// True for steps that stand in for an annotator: they replace the
    /// label with a simulated one (scribbles, noisy labels), the same for a
    /// case at every epoch. Confident learning uses them to see the labels
    /// training sees. False by default.
    fn simulates_labels(&self) -> bool {
        false
    }
    /// Applies the transform.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the parameter when it does not fit the
    /// sample (wrong number of axes, missing label...), [`Error::Shape`] when
    /// arrays disagree.
    fn apply(&self, sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample>;
}

/// When a pipeline step runs. Configured per transform with the key
/// `stage`; the default is `train` for random transforms and `both` for
/// deterministic ones (normalisation, resampling, label conversion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Only when the pipeline runs in [`Mode::Train`].
    Train,
    /// Only when the pipeline runs in [`Mode::Inference`].
    Inference,
    /// Always.
    Both,
}

/// What a pipeline is being used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Training: every step whose stage is `train` or `both` runs.
    #[default]
    Train,
    /// Validation, testing and inference: steps whose stage is `inference` or `both`.
    Inference,
}

impl Stage {
    /// Whether a step of this stage runs in `mode`.
    pub fn runs_in(self, mode: Mode) -> bool {
        matches!(
            (self, mode),
            (Stage::Both, _) | (Stage::Train, Mode::Train) | (Stage::Inference, Mode::Inference)
        )
    }
}

#[derive(Debug)]
struct Step {
    transform: Box<dyn Transform>,
    stage: Stage,
}

/// An ordered list of transforms with their stages.
#[derive(Debug, Default)]
pub struct Pipeline {
    steps: Vec<Step>,
    mode: Mode,
}

impl Pipeline {
    /// An empty pipeline in [`Mode::Train`].
    pub fn new() -> Self {
        Pipeline::default()
    }

    /// Appends a transform; `stage` `None` means the default for it (train
    /// for random transforms, both otherwise).
    pub fn push(&mut self, transform: Box<dyn Transform>, stage: Option<Stage>) {
        let stage = stage.unwrap_or(if transform.is_random() {
            Stage::Train
        } else {
            Stage::Both
        });
        self.steps.push(Step { transform, stage });
    }

    /// The same pipeline set to run in `mode`.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The mode [`Pipeline::apply`] uses.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Number of steps (in any stage).
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// True when there is no step.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Names and stages of the steps, in order.
    pub fn steps(&self) -> Vec<(&str, Stage)> {
        self.steps
            .iter()
            .map(|s| (s.transform.name(), s.stage))
            .collect()
    }

    /// The pipeline reduced to its label-simulating steps
    /// ([`Transform::simulates_labels`]), in order, in [`Mode::Train`]: what
    /// turns a stored label into the label training sees.
    pub fn label_simulation(self) -> Pipeline {
        Pipeline {
            steps: self
                .steps
                .into_iter()
                .filter(|s| s.transform.simulates_labels())
                .collect(),
            mode: Mode::Train,
        }
    }

    /// The pipeline without its label-simulating steps (for training on
    /// labels that were simulated once and written).
    pub fn without_label_simulation(self) -> Pipeline {
        Pipeline {
            steps: self
                .steps
                .into_iter()
                .filter(|s| !s.transform.simulates_labels())
                .collect(),
            mode: self.mode,
        }
    }

    /// Applies the steps that run in the pipeline's mode, in order.
    ///
    /// # Errors
    /// The first step's error; an [`Error::InvalidValue`] key is prefixed
    /// with `transforms[i].Name.` so that it points at the config entry.
    pub fn apply(&self, sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        self.apply_in(sample, rng, self.mode)
    }

    /// Like [`Pipeline::apply`], in the given mode.
    pub fn apply_in(&self, mut sample: Sample, rng: &mut ChaCha8Rng, mode: Mode) -> Result<Sample> {
        sample.validate()?;
        for (i, step) in self.steps.iter().enumerate() {
            if !step.stage.runs_in(mode) {
                continue;
            }
            sample = step.transform.apply(sample, rng).map_err(|e| match e {
                Error::InvalidValue { key, message } => Error::InvalidValue {
                    key: format!("transforms[{i}].{}.{key}", step.transform.name()),
                    message,
                },
                other => other,
            })?;
        }
        Ok(sample)
    }
}

/// Builds a transform from its JSON parameters (the spec without `name` and `stage`).
pub type Constructor = Arc<dyn Fn(serde_json::Value) -> Result<Box<dyn Transform>> + Send + Sync>;

/// Maps transform names to constructors. [`Registry::with_builtins`] holds
/// every transform of this crate; users add their own with
/// [`Registry::register`].
#[derive(Clone, Default)]
pub struct Registry {
    map: BTreeMap<String, Constructor>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("names", &self.names())
            .finish()
    }
}

/// Deserialises a transform's parameters (serde with `deny_unknown_fields`
/// on the target type) into `T`, with an error naming the transform.
///
/// Useful for user constructors passed to [`Registry::register`].
pub fn from_params<T: DeserializeOwned>(name: &str, params: serde_json::Value) -> Result<T> {
    serde_json::from_value(params).map_err(|e| Error::invalid(name, e.to_string()))
}

impl Registry {
    /// A registry with no transform.
    pub fn empty() -> Self {
        Registry::default()
    }

    /// A registry holding every built-in transform.
    pub fn with_builtins() -> Self {
        let mut r = Registry::empty();
        crate::register_builtins(&mut r);
        r
    }

    /// Adds (or replaces) the constructor for `name`.
    pub fn register<F>(&mut self, name: impl Into<String>, constructor: F)
    where
        F: Fn(serde_json::Value) -> Result<Box<dyn Transform>> + Send + Sync + 'static,
    {
        self.map.insert(name.into(), Arc::new(constructor));
    }

    /// Registers a transform whose parameters deserialise into `T` (which
    /// should use `#[serde(deny_unknown_fields)]`) and validate.
    pub(crate) fn register_de<T>(&mut self, name: &'static str)
    where
        T: Transform + DeserializeOwned + Validate + 'static,
    {
        self.register(name, move |v| {
            let t: T = from_params(name, v)?;
            t.validate().map_err(|e| match e {
                Error::InvalidValue { key, message } => {
                    Error::invalid(format!("{name}.{key}"), message)
                }
                other => other,
            })?;
            Ok(Box::new(t) as Box<dyn Transform>)
        });
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.map.keys().map(String::as_str).collect()
    }

    /// Builds one transform from a spec object `{"name": ..., params...}`;
    /// `stage` is read and returned too.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] when the spec is not an object, has no
    /// `name`, names an unknown transform, or has an unknown or ill-typed
    /// parameter; the message names it.
    pub fn build_one(
        &self,
        spec: &serde_json::Value,
    ) -> Result<(Box<dyn Transform>, Option<Stage>)> {
        let obj = spec.as_object().ok_or_else(|| {
            Error::invalid("transform", format!("expected an object, got {spec}"))
        })?;
        let name = obj
            .get("name")
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::invalid("name", "missing transform name (a string)"))?;
        let ctor = self.map.get(name).ok_or_else(|| {
            Error::invalid(
                "name",
                format!(
                    "unknown transform `{name}`; known: {}",
                    self.names().join(", ")
                ),
            )
        })?;
        let mut params = obj.clone();
        params.remove("name");
        let stage = match params.remove("stage") {
            None => None,
            Some(v) => Some(serde_json::from_value::<Stage>(v.clone()).map_err(|_| {
                Error::invalid(
                    format!("{name}.stage"),
                    format!("expected \"train\", \"inference\" or \"both\", got {v}"),
                )
            })?),
        };
        let t = ctor(serde_json::Value::Object(params))?;
        Ok((t, stage))
    }

    /// Builds a pipeline from a list of specs, as found in an experiment
    /// config (`[[transforms]]` tables converted to JSON).
    ///
    /// # Errors
    /// As [`Registry::build_one`], with the key prefixed by `transforms[i].`.
    pub fn build(&self, specs: &[serde_json::Value]) -> Result<Pipeline> {
        let mut p = Pipeline::new();
        for (i, spec) in specs.iter().enumerate() {
            let (t, stage) = self.build_one(spec).map_err(|e| match e {
                Error::InvalidValue { key, message } => Error::InvalidValue {
                    key: format!("transforms[{i}].{key}"),
                    message,
                },
                other => other,
            })?;
            p.push(t, stage);
        }
        Ok(p)
    }
}

/// Builds a pipeline of built-in transforms from specs such as
/// `{"name": "RandomFlip", "axes": [1, 2], "p": 0.5}`.
///
/// # Errors
/// See [`Registry::build`].
pub fn build_pipeline(specs: &[serde_json::Value]) -> Result<Pipeline> {
    Registry::with_builtins().build(specs)
}

/// Parameter checks run once when a transform is built from its config.
pub(crate) trait Validate {
    /// Returns an [`Error::InvalidValue`] naming the first bad parameter.
    fn validate(&self) -> Result<()>;
}

/// Appends a record to the sample's history.
/// Records that a random transform was not applied and returns the sample.
pub(crate) fn skipped(mut sample: Sample, name: &str) -> Sample {
    record(&mut sample, name, serde_json::json!({ "applied": false }));
    sample
}

pub(crate) fn record(sample: &mut Sample, name: &str, params: serde_json::Value) {
    sample.history.push(TransformRecord {
        name: name.to_string(),
        params,
    });
}

/// Checks a probability parameter.
pub(crate) fn check_p(key: &str, p: f64) -> Result<()> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::invalid(key, format!("must be in [0, 1], got {p}")))
    }
}

/// Checks a `[lo, hi]` range parameter.
pub(crate) fn check_range(key: &str, r: [f64; 2]) -> Result<()> {
    if r[0].is_finite() && r[1].is_finite() && r[0] <= r[1] {
        Ok(())
    } else {
        Err(Error::invalid(
            key,
            format!("must be [low, high] with low <= high, got {r:?}"),
        ))
    }
}
