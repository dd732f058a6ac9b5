//! The [`Learner`] trait: what one learning method supplies to the engine,
//! and what it is given at construction ([`LearnerInit`]) and at each step
//! ([`StepContext`]).

use crate::collate::TensorBatch;
use crate::error::{LearnError, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use medseg_config::ExperimentConfig;
use medseg_losses::Loss;
use medseg_nets::{NetRegistry, SegNetwork};

/// What a learner sees in one training step.
pub struct StepContext<'a> {
    /// Zero-based iteration.
    pub iteration: usize,
    /// Total iterations of the run.
    pub iterations: usize,
    /// The network being trained (the student).
    pub net: &'a dyn SegNetwork,
    /// The configured supervised loss.
    pub loss: &'a dyn Loss,
    /// The labelled (or scribbled, or partially labelled) batch.
    pub labelled: &'a TensorBatch,
    /// The unlabelled batch, for learners that ask for one.
    pub unlabelled: Option<&'a TensorBatch>,
    /// The noisy-label batch (`dataset.train_noisy_csv`), for learners that
    /// ask for one; `labelled` then holds the clean images.
    pub noisy: Option<&'a TensorBatch>,
    /// The experiment configuration.
    pub config: &'a ExperimentConfig,
}

/// What a training step returns.
pub struct StepOutput {
    /// The total loss to minimise (a scalar tensor).
    pub loss: Tensor,
    /// Named parts of the loss, for the logs (e.g. `sup`, `unsup`, `weight`).
    pub terms: Vec<(String, f64)>,
}

/// One learning method. Only the training step is specific; data, the
/// optimiser, validation, checkpoints and logs are the engine's.
///
/// A learner is built by a constructor in the [`LearnerRegistry`](crate::LearnerRegistry)
/// from a [`LearnerInit`], which gives it the student's weights, the
/// device and a way to build further networks (a teacher, peers), so that
/// nothing has to be bound after construction.
pub trait Learner: Send {
    /// The method's name, as written in logs and checkpoints.
    fn name(&self) -> &str;

    /// Whether the engine must load an unlabelled batch for each step.
    fn needs_unlabelled(&self) -> bool {
        false
    }

    /// Whether the engine must load a batch of `dataset.train_noisy_csv`
    /// (noisy labels) for each step, beside the clean one.
    fn needs_noisy(&self) -> bool {
        false
    }

    /// Trainable parameters besides the main network's (e.g. a second network).
    fn extra_params(&self) -> Vec<(String, Var)> {
        Vec::new()
    }

    /// Computes the loss of one step. The engine then back-propagates, clips
    /// and applies the optimiser.
    fn train_step(&mut self, ctx: &StepContext) -> candle_core::Result<StepOutput>;

    /// Called after the optimiser step (e.g. to update a teacher by EMA).
    fn after_update(&mut self, _ctx: &StepContext) -> candle_core::Result<()> {
        Ok(())
    }

    /// Extra weights to save with checkpoints, by suffix (e.g. the teacher).
    fn extra_varmaps(&self) -> Vec<(String, VarMap)> {
        Vec::new()
    }
}

/// Everything a learner may need when it is built: the configuration, the
/// device, the student network the engine trains (and its weights), and the
/// network registry of the run, so that extra networks are built the same
/// way as the student.
pub struct LearnerInit<'a> {
    /// The experiment configuration.
    pub config: &'a ExperimentConfig,
    /// The device of every tensor of the run.
    pub device: &'a Device,
    /// The student's weights (shared with the engine, not a copy).
    pub student: &'a VarMap,
    /// The student network.
    pub student_net: &'a dyn SegNetwork,
    /// The network table of the student (with seed, channels and classes filled in).
    pub network_config: &'a serde_json::Value,
    /// The network registry of the run.
    pub networks: &'a NetRegistry,
}

impl LearnerInit<'_> {
    /// Builds another network of the student's configuration into a fresh
    /// [`VarMap`] on the run's device. `seed_offset` 0 gives the student's
    /// initial weights (a teacher); any other offset adds to the seed (a peer
    /// with different initial weights).
    pub fn build_network(&self, seed_offset: u64) -> Result<(VarMap, Box<dyn SegNetwork>)> {
        let mut nc = self.network_config.clone();
        if seed_offset != 0 {
            let seed = nc.get("seed").and_then(|v| v.as_u64()).unwrap_or(1);
            nc["seed"] = serde_json::json!(seed.wrapping_add(seed_offset));
        }
        self.build_network_from(&nc)
    }

    /// Builds a network from an explicit network table through the run's
    /// registry, on the run's device.
    pub fn build_network_from(
        &self,
        config: &serde_json::Value,
    ) -> Result<(VarMap, Box<dyn SegNetwork>)> {
        // `network.pretrained` is loaded into every network of the run (a
        // teacher starts where the student starts)
        crate::setup::build_net_with(self.networks, config, self.device)
    }

    /// The network's registry name (`network.name`).
    pub fn network_name(&self) -> &str {
        self.network_config
            .get("name")
            .and_then(|v| v.as_str())
            .unwrap_or("")
    }

    /// An error unless `network.name` is one of `names`; `who` names the
    /// method in the message.
    pub fn require_network(&self, who: &str, names: &[&str]) -> Result<()> {
        let name = self.network_name();
        if names.is_empty() || names.contains(&name) {
            return Ok(());
        }
        Err(LearnError::Config(format!(
            "{who} needs network.name = {} (got \"{name}\")",
            names
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(" or ")
        )))
    }
}

/// Every tensor of a VarMap, sorted by name.
pub fn sorted_vars(vm: &VarMap) -> candle_core::Result<Vec<(String, Var)>> {
    let data = vm
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?;
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// True for BatchNorm running statistics (not trained by the optimiser).
pub fn is_running_stat(name: &str) -> bool {
    name.ends_with("running_mean")
        || name.ends_with("running_var")
        || name.ends_with("num_batches_tracked")
}

/// The trainable tensors of a VarMap (running statistics left out), sorted
/// by name, each name prefixed with `prefix` (empty for none).
pub fn trainable_vars(vm: &VarMap, prefix: &str) -> candle_core::Result<Vec<(String, Var)>> {
    Ok(sorted_vars(vm)?
        .into_iter()
        .filter(|(k, _)| !is_running_stat(k))
        .map(|(k, v)| (format!("{prefix}{k}"), v))
        .collect())
}

/// A scalar tensor as f64.
pub fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}
