//! Building losses by name from JSON parameters; users register their own.
//!
//! Parameters are deserialised with unknown keys rejected, then validated.
//! `null` parameters mean "all defaults".
//!
//! ```
//! use medseg_losses::LossRegistry;
//! let reg = LossRegistry::with_builtins();
//! let loss = reg
//!     .build("CombinedLoss", &serde_json::json!({"terms": [
//!         {"loss": "DiceLoss", "weight": 0.5},
//!         {"loss": "CrossEntropyLoss", "weight": 0.5, "params": {"label_smoothing": 0.1}}
//!     ]}))
//!     .unwrap();
//! # let _ = loss;
//! assert!(reg.build("DiceLoss", &serde_json::json!({"smoth_nr": 1.0})).is_err());
//! ```

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::{
    CombinedLoss, ConsistencyKlLoss, ConsistencyMseLoss, CrossEntropyLoss, DeepSupervisionLoss,
    DiceLoss, EntropyLoss, Error, ExclusionLoss, ExpLogLoss, FocalDiceLoss, FocalLoss,
    GatedCrfLoss, GeneralizedCeLoss, GeneralizedDiceLoss, Loss, MaeLoss, MarginalLoss, MseLoss,
    MumfordShahLoss, NoiseRobustDiceLoss, SlsrLoss, TotalVariationLoss, TverskyLoss,
};

/// A constructor: parameters (JSON) and the registry (for wrappers) to a loss.
pub type LossCtor =
    Box<dyn Fn(&Value, &LossRegistry) -> Result<Box<dyn Loss>, Error> + Send + Sync>;

/// Maps loss names to constructors.
pub struct LossRegistry {
    ctors: BTreeMap<String, LossCtor>,
}

impl std::fmt::Debug for LossRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LossRegistry")
            .field("names", &self.names())
            .finish()
    }
}

/// One entry of `CombinedLoss`'s `terms`, or `DeepSuperviseLoss`'s `base`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TermSpec {
    loss: String,
    #[serde(default = "one")]
    weight: f64,
    #[serde(default)]
    params: Value,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CombinedSpec {
    terms: Vec<TermSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeepSupSpec {
    base: TermSpec,
    #[serde(default)]
    weights: Option<Vec<f64>>,
}

fn parse<T: DeserializeOwned>(name: &str, params: &Value) -> Result<T, Error> {
    let v = if params.is_null() {
        Value::Object(Default::default())
    } else {
        params.clone()
    };
    serde_json::from_value(v).map_err(|e| Error::InvalidParams {
        loss: name.to_string(),
        message: e.to_string(),
    })
}

fn checked<T: Loss + 'static>(
    name: &str,
    l: T,
    validate: impl Fn(&T) -> Result<(), String>,
) -> Result<Box<dyn Loss>, Error> {
    validate(&l).map_err(|message| Error::InvalidParams {
        loss: name.to_string(),
        message,
    })?;
    Ok(Box::new(l))
}

fn ok<T>(_: &T) -> Result<(), String> {
    Ok(())
}

impl LossRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            ctors: BTreeMap::new(),
        }
    }

    /// A registry holding every loss of this crate under PyMIC-style names:
    /// `CrossEntropyLoss`, `PartialCrossEntropyLoss` (same loss; restrict it
    /// with an ignore value or pixel weights), `DiceLoss`, `JaccardLoss`,
    /// `GeneralizedDiceLoss`, `FocalLoss`, `FocalDiceLoss`, `TverskyLoss`,
    /// `ExpLogLoss`, `MSELoss`, `MAELoss`, `GeneralizedCELoss`,
    /// `NoiseRobustDiceLoss`, `SLSRLoss`, `MarginalLoss` and `ExclusionLoss`
    /// (partial labels: read the target's `annotated` classes),
    /// `EntropyLoss`, `TotalVariationLoss`,
    /// `MumfordShahLoss`, `GatedCRFLoss`, `ConsistencyMSELoss`,
    /// `ConsistencyKLLoss`, `CombinedLoss` (`{"terms": [{"loss", "weight",
    /// "params"}]}`) and `DeepSuperviseLoss` (`{"base": {"loss", "params"},
    /// "weights": [...]}`).
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        macro_rules! simple {
            ($name:expr, $ty:ty, $val:expr) => {
                r.register($name, |p, _| {
                    let l: $ty = parse($name, p)?;
                    checked($name, l, $val)
                });
            };
        }
        simple!(
            "CrossEntropyLoss",
            CrossEntropyLoss,
            CrossEntropyLoss::validate
        );
        simple!(
            "PartialCrossEntropyLoss",
            CrossEntropyLoss,
            CrossEntropyLoss::validate
        );
        simple!("DiceLoss", DiceLoss, DiceLoss::validate);
        r.register("JaccardLoss", |p, _| {
            let mut l: DiceLoss = parse("JaccardLoss", p)?;
            l.jaccard = true;
            checked("JaccardLoss", l, DiceLoss::validate)
        });
        simple!(
            "GeneralizedDiceLoss",
            GeneralizedDiceLoss,
            GeneralizedDiceLoss::validate
        );
        simple!("FocalLoss", FocalLoss, FocalLoss::validate);
        simple!("FocalDiceLoss", FocalDiceLoss, FocalDiceLoss::validate);
        simple!("TverskyLoss", TverskyLoss, TverskyLoss::validate);
        simple!("ExpLogLoss", ExpLogLoss, ExpLogLoss::validate);
        simple!("MSELoss", MseLoss, ok);
        simple!("MAELoss", MaeLoss, ok);
        simple!(
            "GeneralizedCELoss",
            GeneralizedCeLoss,
            GeneralizedCeLoss::validate
        );
        simple!(
            "NoiseRobustDiceLoss",
            NoiseRobustDiceLoss,
            NoiseRobustDiceLoss::validate
        );
        simple!("SLSRLoss", SlsrLoss, SlsrLoss::validate);
        simple!("MarginalLoss", MarginalLoss, MarginalLoss::validate);
        simple!("ExclusionLoss", ExclusionLoss, ExclusionLoss::validate);
        simple!("EntropyLoss", EntropyLoss, ok);
        simple!("TotalVariationLoss", TotalVariationLoss, ok);
        simple!(
            "MumfordShahLoss",
            MumfordShahLoss,
            MumfordShahLoss::validate
        );
        simple!("GatedCRFLoss", GatedCrfLoss, GatedCrfLoss::validate);
        simple!("ConsistencyMSELoss", ConsistencyMseLoss, ok);
        simple!("ConsistencyKLLoss", ConsistencyKlLoss, ok);
        r.register("CombinedLoss", |p, reg| {
            let spec: CombinedSpec = parse("CombinedLoss", p)?;
            if spec.terms.is_empty() {
                return Err(Error::InvalidParams {
                    loss: "CombinedLoss".into(),
                    message: "`terms` must not be empty".into(),
                });
            }
            let mut c = CombinedLoss::new();
            for t in spec.terms {
                if !t.weight.is_finite() {
                    return Err(Error::InvalidParams {
                        loss: "CombinedLoss".into(),
                        message: format!("weight of `{}` must be finite", t.loss),
                    });
                }
                let l = reg.build(&t.loss, &t.params)?;
                c = c.with(t.weight, t.loss, l);
            }
            Ok(Box::new(c))
        });
        r.register("DeepSuperviseLoss", |p, reg| {
            let spec: DeepSupSpec = parse("DeepSuperviseLoss", p)?;
            if let Some(w) = &spec.weights {
                if w.is_empty() || w.iter().any(|x| !x.is_finite() || *x < 0.0) {
                    return Err(Error::InvalidParams {
                        loss: "DeepSuperviseLoss".into(),
                        message: format!("`weights` must be non-empty, finite and >= 0, got {w:?}"),
                    });
                }
            }
            let base = reg.build(&spec.base.loss, &spec.base.params)?;
            Ok(Box::new(DeepSupervisionLoss {
                base,
                weights: spec.weights,
            }))
        });
        r
    }

    /// Adds (or replaces) the constructor for `name`.
    pub fn register<F>(&mut self, name: &str, ctor: F)
    where
        F: Fn(&Value, &LossRegistry) -> Result<Box<dyn Loss>, Error> + Send + Sync + 'static,
    {
        self.ctors.insert(name.to_string(), Box::new(ctor));
    }

    /// Builds the loss `name` from `params` (a JSON object, or `null` for defaults).
    pub fn build(&self, name: &str, params: &Value) -> Result<Box<dyn Loss>, Error> {
        match self.ctors.get(name) {
            Some(c) => c(params, self),
            None => Err(Error::UnknownLoss {
                name: name.to_string(),
                known: self.names().join(", "),
            }),
        }
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.ctors.keys().map(String::as_str).collect()
    }
}

impl Default for LossRegistry {
    fn default() -> Self {
        Self::with_builtins()
    }
}
