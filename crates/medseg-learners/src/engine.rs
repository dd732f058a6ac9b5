//! The training engine: one loop for every learning regime. A [`Learner`]
//! overrides only the training step; data loading, optimisation, validation,
//! checkpoints, logs and plots are shared.

use crate::collate::{collate, TensorBatch};
use crate::error::{LearnError, Result, TensorContext};
use crate::logging::RunLog;
use crate::{clip_grad_norm, LrSchedule, Optimizer, OptimizerSettings};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use medseg_config::ExperimentConfig;
use medseg_core::{Batch, Sample};
use medseg_infer::{argmax, Predictor, SlidingWindow};
use medseg_io::{
    Dataset, EpochIter, LabelledDataset, Loader, LoaderConfig, Manifest, UnlabelledDataset,
};
use medseg_losses::{Loss, LossRegistry};
use medseg_nets::{build_network, SegNetwork};
use medseg_transforms::{build_pipeline, invert_prediction, Mode, Pipeline};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a learner sees in one training step.
pub struct StepContext<'a> {
    /// Zero-based iteration.
    pub iteration: usize,
    /// Total iterations of the run.
    pub iterations: usize,
    /// The network being trained.
    pub net: &'a dyn SegNetwork,
    /// The configured supervised loss.
    pub loss: &'a dyn Loss,
    /// The labelled (or scribbled, or partially labelled) batch.
    pub labelled: &'a TensorBatch,
    /// The unlabelled batch, for learners that ask for one.
    pub unlabelled: Option<&'a TensorBatch>,
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

/// One learning method. Only the training step is specific; everything else
/// is the engine's.
pub trait Learner {
    /// The method's name, as written in logs and checkpoints.
    fn name(&self) -> &str;

    /// Whether the engine must load an unlabelled batch for each step.
    fn needs_unlabelled(&self) -> bool {
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

/// The plain supervised learner: the configured loss on the network's
/// output (with deep supervision when the network provides it).
#[derive(Debug, Default)]
pub struct SupervisedLearner;

impl Learner for SupervisedLearner {
    fn name(&self) -> &str {
        "supervised"
    }

    fn train_step(&mut self, ctx: &StepContext) -> candle_core::Result<StepOutput> {
        let out = ctx.net.forward_t(&ctx.labelled.image, true)?;
        let loss = if out.deep.is_empty() {
            ctx.loss.forward(
                &medseg_losses::Prediction::logits(out.logits),
                &ctx.labelled.target,
            )?
        } else {
            let mut preds = vec![medseg_losses::Prediction::logits(out.logits)];
            preds.extend(out.deep.into_iter().map(medseg_losses::Prediction::logits));
            ctx.loss.forward_multi(&preds, &ctx.labelled.target)?
        };
        let v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        Ok(StepOutput {
            loss,
            terms: vec![("sup".into(), v)],
        })
    }
}

/// Validation scores at one iteration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ValidResult {
    /// The iteration (one-based count of steps done).
    pub iteration: usize,
    /// Mean Dice over cases, per foreground class (index 0 is class 1).
    pub class_dice: Vec<f64>,
    /// Mean of `class_dice`: the model-selection metric.
    pub mean_dice: f64,
}

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

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Steps done in total (including resumed ones).
    pub iterations: usize,
    /// Best validation result, if validation ran.
    pub best: Option<ValidResult>,
    /// Last validation result.
    pub last: Option<ValidResult>,
    /// Whether early stopping ended the run.
    pub early_stopped: bool,
    /// The run folder (checkpoints, logs, plots).
    pub out_dir: PathBuf,
    /// Mean training loss over the last 10% of steps.
    pub final_loss: f64,
    /// Mean training loss over the first 10% of steps of this invocation.
    pub first_loss: f64,
}

impl std::fmt::Display for TrainSummary {
    /// The lines the training apps print at the end of a run: iterations,
    /// first and last training loss, the best validation, where the results are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "trained {} iterations{}",
            self.iterations,
            if self.early_stopped {
                " (early stop)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "training loss: first 10% {:.4}, last 10% {:.4}",
            self.first_loss, self.final_loss
        )?;
        if let Some(b) = &self.best {
            let per: Vec<String> = b
                .class_dice
                .iter()
                .enumerate()
                .map(|(i, d)| format!("class {}: {d:.4}", i + 1))
                .collect();
            writeln!(
                f,
                "best validation mean Dice {:.4} at iteration {} ({})",
                b.mean_dice,
                b.iteration,
                per.join(", ")
            )?;
        }
        writeln!(
            f,
            "checkpoints: {}",
            self.out_dir.join("checkpoints").display()
        )?;
        write!(f, "logs and curves: {}", self.out_dir.display())
    }
}

/// Path of a manifest named in the config (relative to the dataset root).
pub fn manifest_path(cfg: &ExperimentConfig, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cfg.dataset.root.join(p)
    }
}

/// Loads the manifest `p` of the config, with paths relative to the root.
pub fn read_manifest(cfg: &ExperimentConfig, p: &Path) -> Result<Manifest> {
    Ok(Manifest::read(
        &manifest_path(cfg, p),
        Some(&cfg.dataset.root),
    )?)
}

/// Builds the loss of `training.loss` (a table with `name` and parameters).
pub fn build_loss(spec: &serde_json::Value) -> Result<Box<dyn Loss>> {
    let obj = spec
        .as_object()
        .ok_or_else(|| LearnError::Config("training.loss must be a table with a `name`".into()))?;
    let name = obj
        .get("name")
        .and_then(|v| v.as_str())
        .ok_or_else(|| LearnError::Config("training.loss.name is missing".into()))?;
    let mut params = obj.clone();
    params.remove("name");
    Ok(LossRegistry::with_builtins().build(name, &serde_json::Value::Object(params))?)
}

/// The network table of the config with the training seed filled in.
pub fn network_config(cfg: &ExperimentConfig) -> serde_json::Value {
    let mut net = cfg.network.clone();
    if let Some(o) = net.as_object_mut() {
        o.entry("seed")
            .or_insert(serde_json::json!(cfg.training.seed));
        o.entry("in_chns")
            .or_insert(serde_json::json!(cfg.dataset.in_channels));
        o.entry("class_num")
            .or_insert(serde_json::json!(cfg.dataset.class_num));
    }
    net
}

/// Builds a network from the config into a fresh VarMap.
pub fn build_net(
    cfg: &serde_json::Value,
    device: &Device,
) -> Result<(VarMap, Box<dyn SegNetwork>)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let net = build_network(cfg, vb)?;
    Ok((varmap, net))
}

/// The test-time pipeline of the config (normalisation and other
/// deterministic steps), in inference mode.
pub fn test_pipeline(cfg: &ExperimentConfig) -> Result<Pipeline> {
    Ok(build_pipeline(&cfg.dataset.test_transforms)?.with_mode(Mode::Inference))
}

/// Scores one prediction against its label: Dice per foreground class
/// `1..class_num` (1 when both are empty, as PyMIC's smoothed Dice).
pub fn dice_per_class(
    pred: &ndarray::ArrayD<u16>,
    gt: &ndarray::ArrayD<u16>,
    class_num: usize,
    ignore: u16,
) -> Vec<f64> {
    (1..class_num as u16)
        .map(|c| {
            let (mut tp, mut np, mut ng) = (0u64, 0u64, 0u64);
            for (&p, &g) in pred.iter().zip(gt.iter()) {
                if g == ignore {
                    continue;
                }
                let (a, b) = (p == c, g == c);
                tp += (a && b) as u64;
                np += a as u64;
                ng += b as u64;
            }
            if np + ng == 0 {
                1.0
            } else {
                2.0 * tp as f64 / (np + ng) as f64
            }
        })
        .collect()
}

/// Validation data prepared once: transformed images and original labels.
pub struct ValidationSet {
    cases: Vec<(Sample, ndarray::ArrayD<u16>)>,
}

impl ValidationSet {
    /// Loads every case of `manifest` and applies the test pipeline.
    /// Label values must be classes `0..class_num` or `ignore`.
    pub fn load(
        manifest: Manifest,
        pipeline: &Pipeline,
        class_num: usize,
        ignore: u16,
    ) -> Result<Self> {
        let ds = LabelledDataset::new(manifest)?;
        let mut cases = Vec::with_capacity(ds.len());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        for i in 0..ds.len() {
            let s = ds.get(i)?;
            let gt = s
                .label
                .as_ref()
                .ok_or_else(|| {
                    LearnError::Other(format!("validation case {} has no label", s.name))
                })?
                .data
                .index_axis(ndarray::Axis(0), 0)
                .to_owned();
            crate::collate::check_label_range(&s, class_num, ignore).map_err(LearnError::Other)?;
            let t = pipeline.apply_in(s, &mut rng, Mode::Inference)?;
            cases.push((t, gt));
        }
        Ok(ValidationSet { cases })
    }

    /// Number of cases.
    pub fn len(&self) -> usize {
        self.cases.len()
    }

    /// True when there is no case.
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }

    /// Mean Dice per class over the cases, predicted by `predictor`.
    pub fn evaluate(
        &self,
        predictor: &Predictor,
        class_num: usize,
        ignore: u16,
    ) -> Result<Vec<f64>> {
        let mut sums = vec![0.0; class_num - 1];
        for (s, gt) in &self.cases {
            let probs = predictor.predict(s.image.data.view())?;
            let probs = invert_prediction(&s.history, probs)?;
            let pred = argmax(probs.view());
            if pred.shape() != gt.shape() {
                return Err(LearnError::Other(format!(
                    "{}: prediction shape {:?} differs from label shape {:?}",
                    s.name,
                    pred.shape(),
                    gt.shape()
                )));
            }
            for (a, d) in sums
                .iter_mut()
                .zip(dice_per_class(&pred, gt, class_num, ignore))
            {
                *a += d;
            }
        }
        let n = self.cases.len().max(1) as f64;
        Ok(sums.into_iter().map(|s| s / n).collect())
    }
}

/// Endless batches from a loader, epoch after epoch.
struct BatchStream {
    loader: Loader,
    epoch: u64,
    consumed: usize,
    iter: Option<EpochIter>,
}

impl BatchStream {
    fn new(loader: Loader, epoch: u64, skip: usize) -> Result<Self> {
        let mut s = BatchStream {
            loader,
            epoch,
            consumed: 0,
            iter: None,
        };
        for _ in 0..skip {
            s.next()?;
        }
        Ok(s)
    }

    fn next(&mut self) -> Result<Batch> {
        for _ in 0..2 {
            if self.iter.is_none() {
                self.iter = Some(self.loader.epoch(self.epoch));
            }
            match self.iter.as_mut().expect("set above").next() {
                Some(b) => {
                    self.consumed += 1;
                    return Ok(b?);
                }
                None => {
                    self.iter = None;
                    self.epoch += 1;
                    self.consumed = 0;
                }
            }
        }
        Err(LearnError::Other("the training set yields no batch (is it empty, or smaller than the batch size with drop_last?)".into()))
    }
}

fn train_transform(specs: &[serde_json::Value]) -> Result<medseg_io::TransformFn> {
    let p = Arc::new(build_pipeline(specs)?.with_mode(Mode::Train));
    Ok(Arc::new(move |s, rng| p.apply(s, rng)))
}

fn save_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| LearnError::Other(e.to_string()))?;
    atomic_write(path, text.as_bytes())
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    std::fs::write(&tmp, bytes).map_err(|e| medseg_core::Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| medseg_core::Error::io(path, e))?;
    Ok(())
}

/// The engine: owns the network, optimiser, data and logs of one run.
pub struct Trainer {
    cfg: ExperimentConfig,
    device: Device,
    varmap: VarMap,
    net: Box<dyn SegNetwork>,
    net_config: serde_json::Value,
    loss: Box<dyn Loss>,
    learner: Box<dyn Learner>,
    out_dir: PathBuf,
    /// Show a progress bar.
    pub progress: bool,
}

impl Trainer {
    /// Builds the network, loss and learner of `cfg`. Paths in `cfg` must be
    /// resolved already ([`ExperimentConfig::resolve_paths`]).
    pub fn new(cfg: ExperimentConfig, learner: Box<dyn Learner>) -> Result<Self> {
        let device = Device::Cpu;
        let net_config = network_config(&cfg);
        let (varmap, net) = build_net(&net_config, &device)?;
        if net.class_num() != cfg.dataset.class_num {
            return Err(LearnError::Config(format!(
                "network.class_num is {} but dataset.class_num is {}",
                net.class_num(),
                cfg.dataset.class_num
            )));
        }
        if net.in_chns() != cfg.dataset.in_channels {
            return Err(LearnError::Config(format!(
                "network.in_chns is {} but dataset.in_channels is {}",
                net.in_chns(),
                cfg.dataset.in_channels
            )));
        }
        let loss = build_loss(&cfg.training.loss)?;
        let out_dir = cfg.training.output_dir.clone();
        Ok(Trainer {
            cfg,
            device,
            varmap,
            net,
            net_config,
            loss,
            learner,
            out_dir,
            progress: true,
        })
    }

    /// The network being trained.
    pub fn network(&self) -> &dyn SegNetwork {
        self.net.as_ref()
    }

    /// The network's weights.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The folder of checkpoints (`<output_dir>/checkpoints`).
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.out_dir.join("checkpoints")
    }

    /// What a checkpoint records besides the weights: where training stands
    /// (iteration, loader position, plateau state) and the scores so far.
    fn checkpoint_meta(
        &self,
        cfg: &ExperimentConfig,
        iteration: usize,
        metric: f64,
        best: Option<&ValidResult>,
        stream: &BatchStream,
        sched: &LrSchedule,
    ) -> CheckpointMeta {
        let (plateau_factor, plateau_best, plateau_bad) = sched.plateau_state();
        CheckpointMeta {
            iteration,
            metric,
            best_metric: best.map_or(f64::NAN, |v| v.mean_dice),
            best_iteration: best.map_or(0, |v| v.iteration),
            config_hash: cfg.hash(),
            learner: self.learner.name().to_string(),
            epoch: stream.epoch,
            batch_in_epoch: stream.consumed,
            plateau_factor,
            plateau_best,
            plateau_bad,
            network: self.net_config.clone(),
        }
    }

    fn save_checkpoint(
        &self,
        name: &str,
        meta: &CheckpointMeta,
        opt: Option<&Optimizer>,
    ) -> Result<()> {
        let dir = self.checkpoint_dir();
        medseg_nets::save_checkpoint(
            &dir.join(format!("{name}.safetensors")),
            &self.varmap,
            &self.net_config,
        )?;
        for (suffix, vm) in self.learner.extra_varmaps() {
            medseg_nets::save_checkpoint(
                &dir.join(format!("{name}_{suffix}.safetensors")),
                &vm,
                &self.net_config,
            )?;
        }
        if let Some(opt) = opt {
            let state = opt.state().ctx("exporting optimiser state")?;
            let tmp = dir.join(format!("{name}_optim.safetensors.tmp"));
            candle_core::safetensors::save(&state, &tmp).ctx("saving optimiser state")?;
            let dst = dir.join(format!("{name}_optim.safetensors"));
            std::fs::rename(&tmp, &dst).map_err(|e| medseg_core::Error::io(&dst, e))?;
        }
        save_json(&dir.join(format!("{name}.json")), meta)
    }

    /// Runs the training loop to `training.iterations`, validating, logging
    /// and checkpointing as configured.
    pub fn run(&mut self) -> Result<TrainSummary> {
        let cfg = self.cfg.clone();
        let t = &cfg.training;
        let d = &cfg.dataset;
        std::fs::create_dir_all(self.checkpoint_dir())
            .map_err(|e| medseg_core::Error::io(self.checkpoint_dir(), e))?;
        atomic_write(
            &self.out_dir.join("config.toml"),
            cfg.to_toml_string().as_bytes(),
        )?;

        // data
        let train_manifest = read_manifest(&cfg, &d.train_csv)?;
        let lcfg = |bs: usize, seed: u64| LoaderConfig {
            batch_size: bs,
            shuffle: true,
            seed,
            workers: d.num_workers,
            prefetch: 2,
            drop_last: true,
        };
        let train_ds: Arc<dyn Dataset> = Arc::new(LabelledDataset::new(train_manifest)?);
        let train_tf = train_transform(&d.train_transforms)?;
        let valid = match &d.valid_csv {
            Some(p) if t.validate_every > 0 => Some(ValidationSet::load(
                read_manifest(&cfg, p)?,
                &test_pipeline(&cfg)?,
                d.class_num,
                d.ignore_label,
            )?),
            _ => None,
        };
        let unl_loader = if self.learner.needs_unlabelled() {
            let p = d.train_unlabelled_csv.as_ref().ok_or_else(|| {
                LearnError::Config(format!(
                    "the {} learner needs dataset.train_unlabelled_csv",
                    self.learner.name()
                ))
            })?;
            let ds: Arc<dyn Dataset> = Arc::new(UnlabelledDataset::new(read_manifest(&cfg, p)?)?);
            Some(Loader::new(
                ds,
                lcfg(d.train_batch_size_unlab, t.seed ^ 0x5bd1_e995),
                train_tf.clone(),
            ))
        } else {
            None
        };

        // optimisation
        let mut params: Vec<(String, Var)> = {
            let data = self
                .varmap
                .data()
                .lock()
                .map_err(|_| LearnError::Other("varmap lock poisoned".into()))?;
            let mut v: Vec<(String, Var)> = data
                .iter()
                .filter(|(k, _)| {
                    !k.ends_with("running_mean")
                        && !k.ends_with("running_var")
                        && !k.ends_with("num_batches_tracked")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        params.extend(self.learner.extra_params());
        let mut opt = Optimizer::new(params, OptimizerSettings::from_config(t));
        let mut sched = LrSchedule::from_config(t);

        // resume
        let mut start = 0usize;
        let mut best: Option<ValidResult> = None;
        let (mut epoch, mut skip) = (0u64, 0usize);
        let latest_json = self.checkpoint_dir().join("latest.json");
        if t.resume && latest_json.exists() {
            let text = std::fs::read_to_string(&latest_json)
                .map_err(|e| medseg_core::Error::io(&latest_json, e))?;
            let meta: CheckpointMeta = serde_json::from_str(&text).map_err(|e| {
                medseg_core::Error::format(
                    &latest_json,
                    format!("not a checkpoint description: {e}"),
                )
            })?;
            medseg_nets::load_checkpoint(
                &self.checkpoint_dir().join("latest.safetensors"),
                &self.varmap,
                Some(&self.net_config),
            )?;
            let optp = self.checkpoint_dir().join("latest_optim.safetensors");
            if optp.exists() {
                let state = candle_core::safetensors::load(&optp, &self.device)
                    .ctx("loading optimiser state")?;
                opt.load_state(&state.into_iter().collect())
                    .ctx("restoring optimiser state")?;
            }
            start = meta.iteration;
            epoch = meta.epoch;
            skip = meta.batch_in_epoch;
            sched.set_plateau_state((
                meta.plateau_factor,
                if meta.plateau_best.is_nan() {
                    f64::NEG_INFINITY
                } else {
                    meta.plateau_best
                },
                meta.plateau_bad,
            ));
            if meta.best_metric.is_finite() {
                best = Some(ValidResult {
                    iteration: meta.best_iteration,
                    class_dice: vec![],
                    mean_dice: meta.best_metric,
                });
            }
            if meta.config_hash != cfg.hash() {
                eprintln!(
                    "note: resuming {} with a changed configuration",
                    latest_json.display()
                );
            }
        }
        let mut stream = BatchStream::new(
            Loader::new(train_ds, lcfg(d.train_batch_size, t.seed), train_tf),
            epoch,
            skip,
        )?;
        let mut unl_stream = match unl_loader {
            Some(l) => Some(BatchStream::new(l, epoch, skip)?),
            None => None,
        };

        let mut log = RunLog::open(&self.out_dir, d.class_num, start > 0)?;
        let pb = if self.progress {
            indicatif::ProgressBar::new(t.iterations as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {pos}/{len} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb.set_position(start as u64);
        let mut last: Option<ValidResult> = None;
        let mut early_stopped = false;
        let mut losses: Vec<f64> = Vec::new();
        let mut it = start;
        while it < t.iterations {
            let lr = sched.lr(it);
            let batch = stream.next()?;
            for smp in &batch.samples {
                crate::collate::check_label_range(smp, d.class_num, d.ignore_label)
                    .map_err(LearnError::Other)?;
            }
            let tb =
                collate(&batch, d.ignore_label, &self.device).ctx("collating a training batch")?;
            let ub = match unl_stream.as_mut() {
                Some(s) => Some(
                    collate(&s.next()?, d.ignore_label, &self.device)
                        .ctx("collating an unlabelled batch")?,
                ),
                None => None,
            };
            let ctx = StepContext {
                iteration: it,
                iterations: t.iterations,
                net: self.net.as_ref(),
                loss: self.loss.as_ref(),
                labelled: &tb,
                unlabelled: ub.as_ref(),
                config: &cfg,
            };
            let out = self
                .learner
                .train_step(&ctx)
                .ctx(&format!("training step {it}"))?;
            let loss_v = out
                .loss
                .to_dtype(DType::F64)
                .and_then(|l| l.to_scalar::<f64>())
                .ctx("reading the loss")?;
            if !loss_v.is_finite() {
                return Err(LearnError::Other(format!(
                    "the loss became {loss_v} at iteration {it}; lower training.lr or check the labels"
                )));
            }
            let mut grads = out.loss.backward().ctx("back-propagation")?;
            if let Some(c) = t.grad_clip {
                clip_grad_norm(opt.params(), &mut grads, c).ctx("gradient clipping")?;
            }
            opt.step(&grads, lr).ctx("optimiser step")?;
            self.learner.after_update(&ctx).ctx("after-update hook")?;
            it += 1;
            losses.push(loss_v);
            log.train(it, lr, loss_v, &out.terms)?;
            pb.set_position(it as u64);
            let vd = last
                .as_ref()
                .map(|v| format!(" dice {:.3}", v.mean_dice))
                .unwrap_or_default();
            pb.set_message(format!("loss {loss_v:.4} lr {lr:.2e}{vd}"));

            let validate_now =
                valid.is_some() && (it % t.validate_every == 0 || it == t.iterations);
            if validate_now {
                let vs = valid.as_ref().expect("checked");
                let predictor = Predictor::new(
                    vec![self.net.as_ref()],
                    self.device.clone(),
                    SlidingWindow {
                        patch_size: cfg.inference.patch_size.clone(),
                        overlap: cfg.inference.overlap,
                        gaussian: cfg.inference.gaussian,
                        sigma_scale: cfg.inference.sigma_scale,
                        batch_size: cfg.inference.sw_batch_size,
                    },
                    false,
                )?;
                let class_dice = vs.evaluate(&predictor, d.class_num, d.ignore_label)?;
                let mean_dice = class_dice.iter().sum::<f64>() / class_dice.len().max(1) as f64;
                let vr = ValidResult {
                    iteration: it,
                    class_dice,
                    mean_dice,
                };
                log.valid(&vr)?;
                sched.observe(mean_dice);
                let improved = best.as_ref().is_none_or(|b| mean_dice > b.mean_dice);
                if improved {
                    best = Some(vr.clone());
                }
                let b = best.as_ref().expect("set above");
                let meta = self.checkpoint_meta(&cfg, it, mean_dice, Some(b), &stream, &sched);
                if improved {
                    self.save_checkpoint("best", &meta, None)?;
                }
                log.plot()?;
                last = Some(vr);
                if let Some(p) = t.early_stop_patience {
                    if it - b.iteration >= p && it < t.iterations {
                        early_stopped = true;
                        pb.println(format!(
                            "early stop at iteration {it}: no improvement since iteration {}",
                            b.iteration
                        ));
                    }
                }
            }
            let save_now = it == t.iterations
                || early_stopped
                || (t.checkpoint_every > 0 && it % t.checkpoint_every == 0);
            if save_now {
                let metric = last.as_ref().map_or(f64::NAN, |v| v.mean_dice);
                let meta = self.checkpoint_meta(&cfg, it, metric, best.as_ref(), &stream, &sched);
                self.save_checkpoint("latest", &meta, Some(&opt))?;
            }
            if early_stopped {
                break;
            }
        }
        pb.finish_and_clear();
        log.plot()?;
        let tenth = (losses.len() / 10).max(1);
        let mean = |s: &[f64]| {
            if s.is_empty() {
                f64::NAN
            } else {
                s.iter().sum::<f64>() / s.len() as f64
            }
        };
        Ok(TrainSummary {
            iterations: it,
            best,
            last,
            early_stopped,
            out_dir: self.out_dir.clone(),
            first_loss: mean(&losses[..tenth.min(losses.len())]),
            final_loss: mean(&losses[losses.len().saturating_sub(tenth)..]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_text_names_the_figures_and_folders() {
        let s = TrainSummary {
            iterations: 40,
            best: Some(ValidResult {
                iteration: 30,
                class_dice: vec![0.5, 0.25],
                mean_dice: 0.375,
            }),
            last: None,
            early_stopped: true,
            out_dir: PathBuf::from("runs/x"),
            final_loss: 0.125,
            first_loss: 1.5,
        };
        let text = s.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "trained 40 iterations (early stop)");
        assert_eq!(lines[1], "training loss: first 10% 1.5000, last 10% 0.1250");
        assert_eq!(
            lines[2],
            "best validation mean Dice 0.3750 at iteration 30 (class 1: 0.5000, class 2: 0.2500)"
        );
        assert!(lines[3].ends_with("checkpoints") && lines[4].ends_with("runs/x"));
        let none = TrainSummary {
            best: None,
            early_stopped: false,
            ..s
        };
        assert!(!none.to_string().contains("validation"));
    }
}
