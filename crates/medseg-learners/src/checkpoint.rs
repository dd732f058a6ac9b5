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

    /// Saves checkpoint `name` as one unit: the network, the extra
    /// networks, the optimiser state when given, and the metadata.
    ///
    /// A kill at any moment leaves either the previous set or the new one,
    /// never a mix (e.g. new weights with the old optimiser state): every
    /// file is first written into the staging folder `.<name>.staging`,
    /// then a commit record listing them is written there (atomically, by
    /// renaming), and only then are the files renamed into place, the
    /// metadata last. [`CheckpointDir::recover`], which every reader and
    /// writer of the folder runs first, finishes an interrupted set that
    /// has its commit record (the moves left are made) and discards one
    /// that has not (the previous set was not touched).
    pub fn save(
        &self,
        name: &str,
        net: (&VarMap, &serde_json::Value),
        extra: &[(String, VarMap)],
        meta: &CheckpointMeta,
        opt: Option<&Optimizer>,
    ) -> Result<()> {
        self.recover()?;
        let (varmap, net_config) = net;
        let stage = self.dir.join(format!(".{name}{STAGING}"));
        if stage.exists() {
            std::fs::remove_dir_all(&stage).map_err(|e| medseg_core::Error::io(&stage, e))?;
        }
        std::fs::create_dir_all(&stage).map_err(|e| medseg_core::Error::io(&stage, e))?;
        let mut files = Vec::new();
        let f = format!("{name}.safetensors");
        medseg_nets::save_checkpoint(&stage.join(&f), varmap, net_config)?;
        files.push(f);
        test_hook::file_done();
        for (suffix, vm) in extra {
            let f = format!("{name}_{suffix}.safetensors");
            medseg_nets::save_checkpoint(&stage.join(&f), vm, net_config)?;
            files.push(f);
            test_hook::file_done();
        }
        if let Some(opt) = opt {
            let state = opt.state().ctx("exporting optimiser state")?;
            let f = format!("{name}_optim.safetensors");
            let sorted: std::collections::BTreeMap<String, candle_core::Tensor> =
                state.into_iter().collect();
            let bytes = safetensors::serialize(&sorted, None)
                .map_err(|e| LearnError::Other(format!("serialising optimiser state: {e}")))?;
            medseg_core::write_atomic(&stage.join(&f), &bytes)?;
            files.push(f);
            test_hook::file_done();
        }
        let text =
            serde_json::to_string_pretty(meta).map_err(|e| LearnError::Other(e.to_string()))?;
        let f = format!("{name}.json");
        medseg_core::write_atomic(&stage.join(&f), text.as_bytes())?;
        files.push(f);
        test_hook::file_done();
        medseg_core::write_atomic(&stage.join(COMMIT), files.join("\n").as_bytes())?;
        test_hook::file_done();
        finish(&self.dir, &stage)
    }

    /// Finishes or discards checkpoint sets whose saving was interrupted
    /// (see [`CheckpointDir::save`]); a folder that does not exist holds
    /// nothing to recover.
    ///
    /// # Errors
    /// A staging folder that cannot be read, moved or removed.
    pub fn recover(&self) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with('.') && n.ends_with(STAGING) && e.path().is_dir() {
                let stage = e.path();
                if stage.join(COMMIT).exists() {
                    finish(&self.dir, &stage)?;
                } else {
                    std::fs::remove_dir_all(&stage)
                        .map_err(|err| medseg_core::Error::io(&stage, err))?;
                }
            }
        }
        Ok(())
    }

    /// The metadata of checkpoint `name`, or `None` when it does not exist.
    pub fn meta(&self, name: &str) -> Result<Option<CheckpointMeta>> {
        self.recover()?;
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

    /// Loads checkpoint `name` into the network's weights, the extra
    /// networks' (`<name>_<suffix>.safetensors`, e.g. a teacher) and the
    /// optimiser's state, each when its file exists.
    pub fn restore(
        &self,
        name: &str,
        net: (&VarMap, &serde_json::Value),
        extra: &[(String, VarMap)],
        opt: &mut Optimizer,
        device: &Device,
    ) -> Result<()> {
        self.recover()?;
        medseg_nets::load_checkpoint(
            &self.dir.join(format!("{name}.safetensors")),
            net.0,
            Some(net.1),
        )?;
        for (suffix, vm) in extra {
            let p = self.dir.join(format!("{name}_{suffix}.safetensors"));
            if p.exists() {
                medseg_nets::load_checkpoint(&p, vm, Some(net.1))?;
            }
        }
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

/// Suffix of a checkpoint set's staging folder (`.<name>.staging`).
const STAGING: &str = ".staging";
/// The commit record of a staged set: the names of its files, one a line.
const COMMIT: &str = "COMMIT";

/// Moves the files a staged set's commit record lists into `dir` (those
/// not moved yet; the metadata is listed, and so moved, last), then
/// removes the staging folder.
fn finish(dir: &Path, stage: &Path) -> Result<()> {
    let list = stage.join(COMMIT);
    let text = std::fs::read_to_string(&list).map_err(|e| medseg_core::Error::io(&list, e))?;
    for f in text.lines().filter(|l| !l.is_empty()) {
        if f.contains('/') || f.contains('\\') || f.starts_with('.') {
            return Err(medseg_core::Error::format(
                &list,
                format!("`{f}` is not a checkpoint file name"),
            )
            .into());
        }
        let src = stage.join(f);
        if src.exists() {
            let dst = dir.join(f);
            std::fs::rename(&src, &dst).map_err(|e| medseg_core::Error::io(&dst, e))?;
            test_hook::file_done();
        }
    }
    std::fs::remove_dir_all(stage).map_err(|e| medseg_core::Error::io(stage, e))?;
    Ok(())
}

/// Test-only fault injection: with `TEST_MEDSEG_ABORT_AFTER_CHECKPOINT_FILE=N`
/// in the environment (not `MEDSEG_...`: that prefix sets config keys), the process aborts (as if killed) right after the
/// N-th file operation of checkpoint saving (staged file, commit record or
/// move into place), counted over the whole run. Used by the interruption
/// tests; nothing else reads this variable.
mod test_hook {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;

    static DONE: AtomicUsize = AtomicUsize::new(0);
    static LIMIT: OnceLock<Option<usize>> = OnceLock::new();

    pub(super) fn file_done() {
        let limit = LIMIT.get_or_init(|| {
            std::env::var("TEST_MEDSEG_ABORT_AFTER_CHECKPOINT_FILE")
                .ok()
                .and_then(|v| v.parse().ok())
        });
        let n = DONE.fetch_add(1, Ordering::SeqCst) + 1;
        if *limit == Some(n) {
            eprintln!("test hook: aborting after checkpoint file operation {n}");
            std::process::abort();
        }
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
