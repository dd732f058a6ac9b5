//! Checkpoints: weights (safetensors), optimiser state and a JSON
//! description of where training stands, written atomically so that a run
//! interrupted at any moment leaves the previous checkpoint whole.

use crate::error::{LearnError, Result, TensorContext};
use crate::optim::Optimizer;
use crate::schedule::LrSchedule;
use crate::summary::ValidResult;
use candle_core::Device;
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Metadata stored beside each checkpoint (`<name>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Steps done when it was saved.
    pub iteration: usize,
    /// Validation mean Dice at that time (`null` if never validated).
    #[serde(with = "finite_or_null")]
    pub metric: f64,
    /// Best validation mean Dice so far (`null` if never validated).
    #[serde(with = "finite_or_null")]
    pub best_metric: f64,
    /// Iteration of the best validation.
    pub best_iteration: usize,
    /// SHA-256 of the experiment configuration.
    pub config_hash: String,
    /// The learner's name.
    pub learner: String,
    /// Loader position: epoch and batches consumed in it.
    pub epoch: u64,
    /// Batches consumed in `epoch`.
    pub batch_in_epoch: usize,
    /// Plateau scheduler: factor applied to the rate.
    pub plateau_factor: f64,
    /// Plateau scheduler: best metric seen (`null` before the first validation).
    #[serde(with = "finite_or_null")]
    pub plateau_best: f64,
    /// Plateau scheduler: validations without improvement.
    pub plateau_bad: usize,
    /// The network configuration.
    pub network: serde_json::Value,
}

/// Non-finite floats are written as JSON `null` and read back as NaN.
mod finite_or_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// The checkpoint folder of a run: `<dir>/<name>.safetensors` (the
/// network), `<name>_<suffix>.safetensors` (a learner's extra networks),
/// `<name>_optim.safetensors` (optimiser state, `latest` only) and
/// `<name>.json` ([`CheckpointMeta`]).
pub struct CheckpointDir {
    dir: PathBuf,
}

impl CheckpointDir {
    /// The folder `dir` (created by [`CheckpointDir::create`]).
    pub fn new(dir: PathBuf) -> Self {
        CheckpointDir { dir }
    }

    /// Creates the folder.
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| medseg_core::Error::io(&self.dir, e))?;
        Ok(())
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Saves checkpoint `name`: the network, the extra networks, the
    /// optimiser state when given, and the metadata last (a reader that
    /// finds the JSON finds the weights it describes).
    pub fn save(
        &self,
        name: &str,
        net: (&VarMap, &serde_json::Value),
        extra: &[(String, VarMap)],
        meta: &CheckpointMeta,
        opt: Option<&Optimizer>,
    ) -> Result<()> {
        let (varmap, net_config) = net;
        medseg_nets::save_checkpoint(
            &self.dir.join(format!("{name}.safetensors")),
            varmap,
            net_config,
        )?;
        for (suffix, vm) in extra {
            medseg_nets::save_checkpoint(
                &self.dir.join(format!("{name}_{suffix}.safetensors")),
                vm,
                net_config,
            )?;
        }
        if let Some(opt) = opt {
            let state = opt.state().ctx("exporting optimiser state")?;
            let dst = self.dir.join(format!("{name}_optim.safetensors"));
            let sorted: std::collections::BTreeMap<String, candle_core::Tensor> =
                state.into_iter().collect();
            let bytes = safetensors::serialize(&sorted, None)
                .map_err(|e| LearnError::Other(format!("serialising optimiser state: {e}")))?;
            medseg_core::write_atomic(&dst, &bytes)?;
        }
        let text =
            serde_json::to_string_pretty(meta).map_err(|e| LearnError::Other(e.to_string()))?;
        medseg_core::write_atomic(&self.dir.join(format!("{name}.json")), text.as_bytes())?;
        Ok(())
    }

    /// The metadata of checkpoint `name`, or `None` when it does not exist.
    pub fn meta(&self, name: &str) -> Result<Option<CheckpointMeta>> {
        let p = self.dir.join(format!("{name}.json"));
        if !p.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&p).map_err(|e| medseg_core::Error::io(&p, e))?;
        let meta = serde_json::from_str(&text).map_err(|e| {
            medseg_core::Error::format(&p, format!("not a checkpoint description: {e}"))
        })?;
        Ok(Some(meta))
    }

    /// Loads checkpoint `name` into the network's weights (and the
    /// optimiser's state when the file exists).
    pub fn restore(
        &self,
        name: &str,
        net: (&VarMap, &serde_json::Value),
        opt: &mut Optimizer,
        device: &Device,
    ) -> Result<()> {
        medseg_nets::load_checkpoint(
            &self.dir.join(format!("{name}.safetensors")),
            net.0,
            Some(net.1),
        )?;
        let optp = self.dir.join(format!("{name}_optim.safetensors"));
        if optp.exists() {
            let state =
                candle_core::safetensors::load(&optp, device).ctx("loading optimiser state")?;
            opt.load_state(&state.into_iter().collect())
                .ctx("restoring optimiser state")?;
        }
        Ok(())
    }
}

/// Where training stands after loading a checkpoint's metadata.
pub(crate) struct ResumePoint {
    pub(crate) iteration: usize,
    pub(crate) epoch: u64,
    pub(crate) skip: usize,
    pub(crate) best: Option<ValidResult>,
}

impl ResumePoint {
    /// The fresh start.
    pub(crate) fn start() -> Self {
        ResumePoint {
            iteration: 0,
            epoch: 0,
            skip: 0,
            best: None,
        }
    }

    /// The position recorded in `meta`; restores the plateau state of `sched`.
    pub(crate) fn from_meta(meta: &CheckpointMeta, sched: &mut LrSchedule) -> Self {
        sched.set_plateau_state((
            meta.plateau_factor,
            if meta.plateau_best.is_nan() {
                f64::NEG_INFINITY
            } else {
                meta.plateau_best
            },
            meta.plateau_bad,
        ));
        ResumePoint {
            iteration: meta.iteration,
            epoch: meta.epoch,
            skip: meta.batch_in_epoch,
            best: meta.best_metric.is_finite().then(|| ValidResult {
                iteration: meta.best_iteration,
                class_dice: vec![],
                mean_dice: meta.best_metric,
            }),
        }
    }
}
