//! Self-supervised pre-training of a network's encoder on images without
//! labels: MoCo v2 ([`moco`]), SimCLR ([`simclr`]) and Model Genesis
//! restoration ([`genesis`]), run by one engine ([`Pretrainer`]) that
//! writes the encoder's weights for `network.pretrained`.
//!
//! A method is one file that reads as its paper's algorithm: it builds its
//! networks and heads from a [`PretrainInit`], computes one step's loss
//! from the views the engine makes ([`ViewScheme`]), and updates what the
//! optimiser does not (a momentum encoder, a queue) after each step. The
//! data, optimiser, schedule, logs, checkpoints and export are the
//! engine's. Register your own in a [`PretrainRegistry`].

mod engine;
pub mod genesis;
mod head;
pub mod moco;
mod queue;
pub mod simclr;

pub use engine::{PretrainSummary, Pretrainer};
pub use head::{encoder_representation, global_avg_pool, ProjectionHead};
pub use medseg_nets::{FREEZE_KEY, PRETRAINED_KEY};
pub use queue::KeyQueue;

use crate::error::{LearnError, Result, TensorContext};
use crate::learner::StepOutput;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use medseg_config::ExperimentConfig;
use medseg_nets::{NetRegistry, SegNetwork};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How the engine turns one image into a step's input: the view
/// pipeline (`pretrain.view_transforms`) runs after the dataset's training
/// transforms, and the results are stacked on the channel axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewScheme {
    /// Two independent draws of the view pipeline (contrastive methods).
    TwoViews,
    /// One draw of the view pipeline (the corrupted input), then the image
    /// without it (the restoration target).
    CorruptedAndClean,
}

/// One pre-training method. Only the step is specific.
pub trait SelfSupMethod: Send {
    /// The method's name, as written in logs and in the exported file.
    fn name(&self) -> &str;

    /// The views a step needs.
    fn views(&self) -> ViewScheme;

    /// Every tensor the optimiser updates, named (network and heads).
    fn params(&self) -> Result<Vec<(String, Var)>>;

    /// The loss of one step from the views `[N, C, ...]` (two of them, in
    /// [`ViewScheme`] order).
    fn step(&mut self, views: &[Tensor], iteration: usize) -> candle_core::Result<StepOutput>;

    /// Called after the optimiser step (momentum encoder, queue).
    fn after_update(&mut self, _iteration: usize) -> candle_core::Result<()> {
        Ok(())
    }

    /// The network whose encoder is exported, and its weights.
    fn encoder(&self) -> (&VarMap, &dyn SegNetwork);

    /// Every set of weights to checkpoint, by name (e.g. `net`, `head`).
    fn varmaps(&self) -> Vec<(String, VarMap)>;
}

/// What a method is built from.
pub struct PretrainInit<'a> {
    /// The experiment configuration (its `[pretrain]` section is set).
    pub config: &'a ExperimentConfig,
    /// The device of every tensor.
    pub device: &'a Device,
    /// The network registry of the run.
    pub networks: &'a NetRegistry,
    /// The network table, without `pretrained`, `freeze_encoder` and `stn`
    /// (the bare network's encoder is pre-trained), with seed, channels and
    /// classes filled in.
    pub network_config: serde_json::Value,
}

impl PretrainInit<'_> {
    /// `pretrain.params`, typed; unknown keys are errors naming them.
    pub fn params<P: DeserializeOwned>(&self) -> Result<P> {
        let map = self
            .config
            .pretrain
            .as_ref()
            .map(|p| p.params.clone())
            .unwrap_or_default();
        serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| LearnError::Config(format!("pretrain.params: {e}")))
    }

    /// Builds the network (with `overrides` merged into its table, e.g.
    /// `class_num`) into a fresh VarMap.
    pub fn build_network(
        &self,
        overrides: &[(&str, serde_json::Value)],
    ) -> Result<(VarMap, Box<dyn SegNetwork>)> {
        let mut cfg = self.network_config.clone();
        if let Some(o) = cfg.as_object_mut() {
            for (k, v) in overrides {
                o.insert((*k).to_string(), v.clone());
            }
        }
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, self.device);
        let net = self.networks.build(&cfg, vb)?;
        Ok((varmap, net))
    }

    /// A fresh VarMap and a VarBuilder on it, for heads.
    pub fn new_varmap(&self) -> (VarMap, VarBuilder<'static>) {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, self.device);
        (vm, vb)
    }

    /// The run's seed (`training.seed`).
    pub fn seed(&self) -> u64 {
        self.config.training.seed
    }
}

/// Builds a method from its init.
pub type PretrainCtor = Arc<dyn Fn(&PretrainInit) -> Result<Box<dyn SelfSupMethod>> + Send + Sync>;

/// Maps method names (`pretrain.method`) to constructors.
/// [`PretrainRegistry::with_builtins`] holds `MoCo` (alias `MoCoV2`),
/// `SimCLR` and `ModelGenesis`.
#[derive(Clone, Default)]
pub struct PretrainRegistry {
    ctors: BTreeMap<String, PretrainCtor>,
}

impl std::fmt::Debug for PretrainRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PretrainRegistry")
            .field("names", &self.names())
            .finish()
    }
}

impl PretrainRegistry {
    /// The built-in methods.
    pub fn with_builtins() -> Self {
        let mut r = Self::default();
        r.register("MoCo", |i| Ok(Box::new(moco::MoCo::new(i)?)));
        r.register("MoCoV2", |i| Ok(Box::new(moco::MoCo::new(i)?)));
        r.register("SimCLR", |i| Ok(Box::new(simclr::SimClr::new(i)?)));
        r.register("ModelGenesis", |i| {
            Ok(Box::new(genesis::ModelGenesis::new(i)?))
        });
        r
    }

    /// Adds (or replaces) the method `name`.
    pub fn register<F>(&mut self, name: &str, ctor: F)
    where
        F: Fn(&PretrainInit) -> Result<Box<dyn SelfSupMethod>> + Send + Sync + 'static,
    {
        self.ctors.insert(name.to_string(), Arc::new(ctor));
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.ctors.keys().map(String::as_str).collect()
    }

    /// Builds the method `name`; an unknown name is an error listing the
    /// registered ones.
    pub fn build(&self, name: &str, init: &PretrainInit) -> Result<Box<dyn SelfSupMethod>> {
        let ctor = self.ctors.get(name).ok_or_else(|| {
            LearnError::Config(format!(
                "pretrain.method \"{name}\" is unknown; registered methods: {}",
                self.names().join(", ")
            ))
        })?;
        ctor(init)
    }
}

/// The trainable tensors of the encoder of `net` in `vm` (running
/// statistics left out), sorted by name.
pub fn encoder_trainables(vm: &VarMap, net: &dyn SegNetwork) -> Result<Vec<(String, Var)>> {
    let prefixes = net.encoder_prefixes();
    if prefixes.is_empty() {
        return Err(LearnError::Config(format!(
            "network {} does not expose its encoder for pre-training",
            net.config()
                .get("name")
                .and_then(|v| v.as_str())
                .unwrap_or("?")
        )));
    }
    Ok(crate::learner::trainable_vars(vm, "")
        .ctx("listing the encoder tensors")?
        .into_iter()
        .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p.as_str())))
        .collect())
}

/// The trainable tensors of the encoder of `net` in `vm`, then those of a
/// projection head in `head_vm` (named `head.<name>`): what a contrastive
/// method optimises, and what MoCo's momentum encoder follows.
pub fn encoder_and_head(
    vm: &VarMap,
    net: &dyn SegNetwork,
    head_vm: &VarMap,
) -> Result<Vec<(String, Var)>> {
    let mut v = encoder_trainables(vm, net)?;
    v.extend(crate::learner::trainable_vars(head_vm, "head.").ctx("listing the head tensors")?);
    Ok(v)
}
