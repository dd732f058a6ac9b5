//! Aggregators by name: config names to constructors from JSON
//! parameters. Users add their own with [`AggregatorRegistry::register`].

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::aggregator::Aggregator;
use crate::error::{FedError, Result};
use crate::strategies::fedavg::{FedAvg, FedProx};
use crate::strategies::fedbn::FedBN;
use crate::strategies::fedopt::{FedAdam, FedYogi};
use crate::strategies::segviz::SegViz;

/// Builds an aggregator from its JSON parameters (`null` when the config
/// gives none).
pub type AggregatorCtor =
    Arc<dyn Fn(&serde_json::Value) -> Result<Box<dyn Aggregator>> + Send + Sync>;

/// Maps aggregator names to constructors. [`AggregatorRegistry::with_builtins`]
/// holds `FedAvg`, `FedProx`, `FedBN`, `FedAdam`, `FedYogi` and `SegViz`.
/// Names are looked up exactly first, then ignoring ASCII case (`fedavg`
/// finds `FedAvg`).
#[derive(Clone, Default)]
pub struct AggregatorRegistry {
    ctors: BTreeMap<String, AggregatorCtor>,
}

impl std::fmt::Debug for AggregatorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregatorRegistry")
            .field("names", &self.names())
            .finish()
    }
}

impl AggregatorRegistry {
    /// A registry with no aggregator.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The built-in strategies: `FedAvg`, `FedProx`, `FedBN`, `FedAdam`,
    /// `FedYogi`, `SegViz`.
    pub fn with_builtins() -> Self {
        let mut r = Self::empty();
        r.register("FedAvg", |p| Ok(Box::new(FedAvg::from_json(p)?)));
        r.register("FedProx", |p| Ok(Box::new(FedProx::from_json(p)?)));
        r.register("FedBN", |p| Ok(Box::new(FedBN::from_json(p)?)));
        r.register("FedAdam", |p| Ok(Box::new(FedAdam::from_json(p)?)));
        r.register("FedYogi", |p| Ok(Box::new(FedYogi::from_json(p)?)));
        r.register("SegViz", |p| Ok(Box::new(SegViz::from_json(p)?)));
        r
    }

    /// Adds (or replaces) the aggregator `name`.
    pub fn register<F>(&mut self, name: &str, ctor: F)
    where
        F: Fn(&serde_json::Value) -> Result<Box<dyn Aggregator>> + Send + Sync + 'static,
    {
        self.ctors.insert(name.to_string(), Arc::new(ctor));
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.ctors.keys().map(String::as_str).collect()
    }

    /// Whether `name` is registered (exactly or ignoring case).
    pub fn contains(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    fn lookup(&self, name: &str) -> Option<&AggregatorCtor> {
        self.ctors.get(name).or_else(|| {
            self.ctors
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, c)| c)
        })
    }

    /// Builds the aggregator `name` from `params` (an object of its typed
    /// parameters, or `null` for the defaults).
    ///
    /// # Errors
    /// An unknown name (listing the registered ones); unknown parameter
    /// keys or bad values (naming the key).
    pub fn build(&self, name: &str, params: &serde_json::Value) -> Result<Box<dyn Aggregator>> {
        let ctor = self
            .lookup(name)
            .ok_or_else(|| FedError::UnknownAggregator {
                name: name.to_string(),
                known: self.names().join(", "),
            })?;
        ctor(params)
    }

    /// Builds from one flat object: the `name` key selects the aggregator,
    /// the other keys are its parameters, e.g.
    /// `{"name": "FedProx", "mu": 0.01}`.
    ///
    /// # Errors
    /// A missing `name`, then as [`AggregatorRegistry::build`].
    pub fn build_config(&self, config: &serde_json::Value) -> Result<Box<dyn Aggregator>> {
        let obj = config.as_object().ok_or_else(|| FedError::Params {
            name: "(unnamed)".into(),
            msg: format!("an aggregator config must be an object, got {config}"),
        })?;
        let name = obj
            .get("name")
            .and_then(|v| v.as_str())
            .ok_or_else(|| FedError::Params {
                name: "(unnamed)".into(),
                msg: format!("missing string key `name` in aggregator config {config}"),
            })?;
        let mut params = obj.clone();
        params.remove("name");
        self.build(name, &serde_json::Value::Object(params))
    }
}
