//! The learner registry: method names (as written in a config) to
//! constructors. Users register their own methods and train them with the
//! same engine and apps.

use crate::error::{LearnError, Result};
use crate::learner::{Learner, LearnerInit};
use crate::semi::{SemiLearner, SemiMethod};
use crate::supervised::SupervisedLearner;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Builds a learner from what the engine gives it.
pub type LearnerCtor = Arc<dyn Fn(&LearnerInit) -> Result<Box<dyn Learner>> + Send + Sync>;

/// Maps learner names to constructors. [`LearnerRegistry::with_builtins`]
/// holds `supervised` and every semi- and weakly supervised method.
#[derive(Clone, Default)]
pub struct LearnerRegistry {
    ctors: BTreeMap<String, LearnerCtor>,
}

impl std::fmt::Debug for LearnerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LearnerRegistry")
            .field("names", &self.names())
            .finish()
    }
}

impl LearnerRegistry {
    /// A registry with no learner.
    pub fn empty() -> Self {
        Self::default()
    }

    /// `supervised` and the built-in semi-supervised methods.
    pub fn with_builtins() -> Self {
        let mut r = Self::empty();
        r.register("supervised", |_| Ok(Box::new(SupervisedLearner)));
        crate::semi::register_builtins(&mut r);
        crate::weak::register_builtins(&mut r);
        crate::noisy::register_builtins(&mut r);
        r
    }

    /// Adds (or replaces) the learner `name`.
    pub fn register<F>(&mut self, name: &str, ctor: F)
    where
        F: Fn(&LearnerInit) -> Result<Box<dyn Learner>> + Send + Sync + 'static,
    {
        self.ctors.insert(name.to_string(), Arc::new(ctor));
    }

    /// Registers the semi-supervised method `M` under `name`: the generic
    /// [`SemiLearner`] (data split, supervised loss, ramp-up, logging) with
    /// `M`'s unsupervised term and typed parameters (read from `semi.params`).
    pub fn register_semi<M: SemiMethod>(&mut self, name: &str) {
        let owned = name.to_string();
        self.register(name, move |init| {
            Ok(Box::new(SemiLearner::<M>::new(&owned, init)?))
        });
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.ctors.keys().map(String::as_str).collect()
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.ctors.contains_key(name)
    }

    /// Builds the learner `name`; an unknown name is an error listing the
    /// registered ones.
    pub fn build(&self, name: &str, init: &LearnerInit) -> Result<Box<dyn Learner>> {
        let ctor = self.ctors.get(name).ok_or_else(|| {
            LearnError::Config(format!(
                "learner \"{name}\" is unknown; registered learners: {}",
                self.names().join(", ")
            ))
        })?;
        ctor(init)
    }
}
