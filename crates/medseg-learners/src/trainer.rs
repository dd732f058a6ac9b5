//! The training loop: one loop for every learning regime. A [`Learner`]
//! supplies only the training step; data loading, optimisation, validation,
//! checkpoints, logs and plots are here.

use crate::checkpoint::{CheckpointDir, CheckpointMeta, ResumePoint};
use crate::collate::{check_label_range, collate, collate_with_classes, TensorBatch};
use crate::error::{LearnError, Result, TensorContext};
use crate::learner::{trainable_vars, Learner, StepContext};
use crate::logging::RunLog;
use crate::setup::{read_manifest, test_pipeline_with};
use crate::stream::BatchStream;
use crate::summary::{TrainSummary, ValidResult};
use crate::validation::ValidationSet;
use crate::{clip_grad_norm, LrSchedule, Optimizer, OptimizerSettings};
use candle_core::Device;
use candle_nn::VarMap;
use medseg_config::ExperimentConfig;
use medseg_infer::{Predictor, SlidingWindow};
use medseg_io::{Dataset, LabelledDataset, Loader, LoaderConfig, UnlabelledDataset};
use medseg_losses::Loss;
use medseg_nets::SegNetwork;
use medseg_transforms::{Mode, Registry as TransformRegistry};
use std::path::PathBuf;
use std::sync::Arc;

mod rounds;
pub use rounds::{ExtraTerm, LocalSession, RoundStats};

/// The engine: owns the network, loss, learner, data and logs of one run.
/// Built by [`TrainerBuilder`](crate::TrainerBuilder).
pub struct Trainer {
    cfg: ExperimentConfig,
    device: Device,
    varmap: VarMap,
    net: Box<dyn SegNetwork>,
    net_config: serde_json::Value,
    loss: Box<dyn Loss>,
    learner: Box<dyn Learner>,
    transforms: TransformRegistry,
    out_dir: PathBuf,
    frozen: Frozen,
    /// Show a progress bar.
    pub progress: bool,
}

/// Tensors kept fixed for the first iterations (`network.freeze_encoder`:
/// the ones loaded from `network.pretrained`).
#[derive(Default)]
pub(crate) struct Frozen {
    /// The frozen tensors.
    pub vars: Vec<candle_core::Var>,
    /// Iterations `0..until` leave them unchanged.
    pub until: usize,
}

/// The data of a run: the training streams and the validation set.
struct RunData {
    labelled: BatchStream,
    unlabelled: Option<BatchStream>,
    noisy: Option<BatchStream>,
    valid: Option<ValidationSet>,
}

/// Where the loop stands: best and last validation, losses of this invocation.
struct Progress {
    best: Option<ValidResult>,
    last: Option<ValidResult>,
    losses: Vec<f64>,
    early_stopped: bool,
}

impl Trainer {
    /// Assembles a trainer from parts built by [`TrainerBuilder`](crate::TrainerBuilder).
    pub(crate) fn from_parts(
        cfg: ExperimentConfig,
        device: Device,
        net: (VarMap, Box<dyn SegNetwork>, serde_json::Value),
        loss: Box<dyn Loss>,
        learner: Box<dyn Learner>,
        transforms: TransformRegistry,
        progress: bool,
    ) -> Self {
        let (varmap, net, net_config) = net;
        let out_dir = cfg.training.output_dir.clone();
        Trainer {
            cfg,
            device,
            varmap,
            net,
            net_config,
            loss,
            learner,
            transforms,
            out_dir,
            frozen: Frozen::default(),
            progress,
        }
    }

    /// Keeps `frozen.vars` fixed for the first `frozen.until` iterations.
    pub(crate) fn with_frozen(mut self, frozen: Frozen) -> Self {
        self.frozen = frozen;
        self
    }

    /// The network being trained.
    pub fn network(&self) -> &dyn SegNetwork {
        self.net.as_ref()
    }

    /// The network's weights.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The learner.
    pub fn learner(&self) -> &dyn Learner {
        self.learner.as_ref()
    }

    /// The device every tensor of the run lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The folder of checkpoints (`<output_dir>/checkpoints`).
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.out_dir.join("checkpoints")
    }

    fn checkpoints(&self) -> CheckpointDir {
        CheckpointDir::new(self.checkpoint_dir())
    }

    /// What a checkpoint records besides the weights: where training stands
    /// (iteration, loader position, plateau state) and the scores so far.
    fn checkpoint_meta(
        &self,
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
            config_hash: self.cfg.hash(),
            learner: self.learner.name().to_string(),
            epoch: stream.epoch,
            batch_in_epoch: stream.consumed,
            plateau_factor,
            plateau_best,
            plateau_bad,
            network: self.net_config.clone(),
        }
    }

    fn save(&self, name: &str, meta: &CheckpointMeta, opt: Option<&Optimizer>) -> Result<()> {
        self.checkpoints().save(
            name,
            (&self.varmap, &self.net_config),
            &self.learner.extra_varmaps(),
            meta,
            opt,
        )
    }

    fn loader_config(&self, batch_size: usize, seed: u64) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            shuffle: true,
            seed,
            workers: self.cfg.dataset.num_workers,
            prefetch: 2,
            drop_last: true,
        }
    }

    /// The training transform of the config, from the run's registry.
    fn train_transform(&self) -> Result<medseg_io::TransformFn> {
        let p = Arc::new(
            self.transforms
                .build(&self.cfg.dataset.train_transforms)?
                .with_mode(Mode::Train),
        );
        Ok(Arc::new(move |s, rng| p.apply(s, rng)))
    }

    /// The validation set, when `dataset.valid_csv` is set and validation is on.
    fn validation_set(&self) -> Result<Option<ValidationSet>> {
        let d = &self.cfg.dataset;
        match &d.valid_csv {
            Some(p) if self.cfg.training.validate_every > 0 => Ok(Some(ValidationSet::load(
                read_manifest(&self.cfg, p)?,
                &test_pipeline_with(&self.transforms, &self.cfg)?,
                d.class_num,
                d.ignore_label,
            )?)),
            _ => Ok(None),
        }
    }

    /// The manifest `dataset.<key>` that the learner needs, or an error
    /// naming the key.
    fn required_manifest(&self, path: Option<&PathBuf>, key: &str) -> Result<medseg_io::Manifest> {
        let p = path.ok_or_else(|| {
            LearnError::Config(format!(
                "the {} learner needs dataset.{key}",
                self.learner.name()
            ))
        })?;
        read_manifest(&self.cfg, p)
    }

    /// The unlabelled loader, for learners that ask for one.
    fn unlabelled_loader(&self, tf: &medseg_io::TransformFn) -> Result<Option<Loader>> {
        if !self.learner.needs_unlabelled() {
            return Ok(None);
        }
        let d = &self.cfg.dataset;
        let m = self.required_manifest(d.train_unlabelled_csv.as_ref(), "train_unlabelled_csv")?;
        let ds: Arc<dyn Dataset> = Arc::new(UnlabelledDataset::new(m)?);
        let seed = self.cfg.training.seed ^ 0x5bd1_e995;
        let lc = self.loader_config(d.train_batch_size_unlab, seed);
        Ok(Some(Loader::new(ds, lc, tf.clone())))
    }

    /// The noisy-label loader, for learners that ask for one: the noisy
    /// transforms, then the training transforms.
    fn noisy_loader(&self) -> Result<Option<Loader>> {
        if !self.learner.needs_noisy() {
            return Ok(None);
        }
        let d = &self.cfg.dataset;
        let m = self.required_manifest(d.train_noisy_csv.as_ref(), "train_noisy_csv")?;
        let mut specs = d.noisy_transforms.clone();
        specs.extend(d.train_transforms.iter().cloned());
        let pipe = Arc::new(self.transforms.build(&specs)?.with_mode(Mode::Train));
        let tf: medseg_io::TransformFn = Arc::new(move |s, rng| pipe.apply(s, rng));
        let ds: Arc<dyn Dataset> = Arc::new(LabelledDataset::new(m)?);
        let seed = self.cfg.training.seed ^ 0x6e_015e;
        let lc = self.loader_config(d.train_batch_size_noisy, seed);
        Ok(Some(Loader::new(ds, lc, tf)))
    }

    /// Every trainable tensor: the network's, sorted by name, then the learner's.
    fn parameters(&self) -> Result<Vec<(String, candle_core::Var)>> {
        let mut params = trainable_vars(&self.varmap, "").ctx("listing the parameters")?;
        params.extend(self.learner.extra_params());
        Ok(params)
    }

    /// Restores `latest` when `training.resume` is set; a resume with no
    /// `latest` to resume from is an error (it would otherwise start again
    /// from iteration 1 and overwrite the logs without a word).
    fn resume(&self, opt: &mut Optimizer, sched: &mut LrSchedule) -> Result<ResumePoint> {
        if !self.cfg.training.resume {
            return Ok(ResumePoint::start());
        }
        let ck = self.checkpoints();
        let Some(meta) = ck.meta("latest")? else {
            return Err(LearnError::Config(format!(
                "training.resume = true, but {} holds no `latest` checkpoint to resume from; \
                 set training.resume = false (or `--set training.resume=false`) to start afresh",
                ck.path().display()
            )));
        };
        ck.restore(
            "latest",
            (&self.varmap, &self.net_config),
            &self.learner.extra_varmaps(),
            opt,
            &self.device,
        )?;
        if meta.config_hash != self.cfg.hash() {
            eprintln!(
                "note: resuming {} with a changed configuration",
                ck.path().join("latest.json").display()
            );
        }
        Ok(ResumePoint::from_meta(&meta, sched))
    }

    /// Opens the data: the validation set, the unlabelled loader and the
    /// training streams at the resumed position.
    fn open_data(&self, at: &ResumePoint) -> Result<RunData> {
        let d = &self.cfg.dataset;
        let mut train_manifest = read_manifest(&self.cfg, &d.train_csv)?;
        if let Some(col) = &d.label_column {
            use_label_column(&mut train_manifest, col)?;
        }
        if self.cfg.weak.is_some() {
            crate::weak::check_scribbles(&train_manifest, d.class_num, d.ignore_label)?;
        }
        let train_ds: Arc<dyn Dataset> = Arc::new(LabelledDataset::new(train_manifest)?);
        let tf = self.train_transform()?;
        let valid = self.validation_set()?;
        let unl = self.unlabelled_loader(&tf)?;
        let labelled = BatchStream::new(
            Loader::new(
                train_ds,
                self.loader_config(d.train_batch_size, self.cfg.training.seed),
                tf,
            ),
            at.epoch,
            at.skip,
        )?;
        let unlabelled = match unl {
            Some(l) => Some(BatchStream::new(l, at.epoch, at.skip)?),
            None => None,
        };
        let noisy = match self.noisy_loader()? {
            Some(l) => Some(BatchStream::new(l, at.epoch, at.skip)?),
            None => None,
        };
        Ok(RunData {
            labelled,
            unlabelled,
            noisy,
            valid,
        })
    }

    /// One optimisation step at iteration `it`: the learner's loss,
    /// back-propagation, clipping, the optimiser and the learner's
    /// after-update hook. Returns the loss and the learner's terms.
    fn step(
        &mut self,
        it: usize,
        lr: f64,
        data: &mut RunData,
        opt: &mut Optimizer,
    ) -> Result<(f64, Vec<(String, f64)>)> {
        self.step_with(it, lr, data, opt, None)
    }

    /// [`Trainer::step`] with an extra term added to the learner's loss.
    fn step_with(
        &mut self,
        it: usize,
        lr: f64,
        data: &mut RunData,
        opt: &mut Optimizer,
        extra: Option<ExtraTerm<'_>>,
    ) -> Result<(f64, Vec<(String, f64)>)> {
        // dropout masks as a function of the seed and the step, so that a
        // resumed run draws what the uninterrupted run drew
        medseg_nets::set_dropout_step(Some(it as u64 + 1));
        let d = &self.cfg.dataset;
        // labels are checked against the classes before they become tensors
        let labelled_batch = |b: medseg_core::Batch, what: &str| -> Result<TensorBatch> {
            for smp in &b.samples {
                check_label_range(smp, d.class_num, d.ignore_label).map_err(LearnError::Other)?;
            }
            collate_with_classes(&b, d.ignore_label, d.class_num, &self.device)
                .ctx(&format!("collating a {what} batch"))
        };
        let tb = labelled_batch(data.labelled.next()?, "training")?;
        let ub = match data.unlabelled.as_mut() {
            Some(s) => Some(
                collate(&s.next()?, d.ignore_label, &self.device)
                    .ctx("collating an unlabelled batch")?,
            ),
            None => None,
        };
        let nb = match data.noisy.as_mut() {
            Some(s) => Some(labelled_batch(s.next()?, "noisy")?),
            None => None,
        };
        let ctx = StepContext {
            iteration: it,
            iterations: self.cfg.training.iterations,
            net: self.net.as_ref(),
            loss: self.loss.as_ref(),
            labelled: &tb,
            unlabelled: ub.as_ref(),
            noisy: nb.as_ref(),
            config: &self.cfg,
        };
        let mut out = self
            .learner
            .train_step(&ctx)
            .ctx(&format!("training step {it}"))?;
        if let Some(f) = extra {
            let term = f(opt.params()).ctx("the extra loss term")?;
            out.loss = (out.loss + term).ctx("adding the extra loss term")?;
        }
        let loss_v =
            crate::logging::finite_loss(&out.loss, it, "lower training.lr or check the labels")?;
        let mut grads = out.loss.backward().ctx("back-propagation")?;
        if it < self.frozen.until {
            // no gradient, no update (the optimiser skips tensors without
            // one, so their moments do not move either)
            for v in &self.frozen.vars {
                grads.remove(v.as_tensor());
            }
        }
        if let Some(c) = self.cfg.training.grad_clip {
            clip_grad_norm(opt.params(), &mut grads, c).ctx("gradient clipping")?;
        }
        opt.step(&grads, lr).ctx("optimiser step")?;
        self.learner.after_update(&ctx).ctx("after-update hook")?;
        Ok((loss_v, out.terms))
    }

    /// Validates the network after `it` steps: mean Dice per class over the
    /// validation cases with the configured sliding window.
    fn validate(&self, it: usize, vs: &ValidationSet) -> Result<ValidResult> {
        let inf = &self.cfg.inference;
        let predictor = Predictor::new(
            vec![self.net.as_ref()],
            self.device.clone(),
            SlidingWindow {
                patch_size: inf.patch_size.clone(),
                overlap: inf.overlap,
                gaussian: inf.gaussian,
                sigma_scale: inf.sigma_scale,
                batch_size: inf.sw_batch_size,
            },
            false,
        )?;
        let d = &self.cfg.dataset;
        let class_dice = vs.evaluate(&predictor, d.class_num, d.ignore_label)?;
        let mean_dice = class_dice.iter().sum::<f64>() / class_dice.len().max(1) as f64;
        Ok(ValidResult {
            iteration: it,
            class_dice,
            mean_dice,
        })
    }

    /// Runs the training loop to `training.iterations`, validating, logging
    /// and checkpointing as configured.
    pub fn run(&mut self) -> Result<TrainSummary> {
        let t = self.cfg.training.clone();
        // one run per output folder: a second process fails here, naming
        // the first, instead of mixing its checkpoints and logs in
        let _lock = medseg_core::DirLock::acquire(&self.out_dir, "training")?;
        let ck = self.checkpoints();
        ck.create()?;
        medseg_core::write_atomic(
            &self.out_dir.join("config.toml"),
            self.cfg.to_toml_string().as_bytes(),
        )?;
        let mut opt = Optimizer::new(self.parameters()?, OptimizerSettings::from_config(&t));
        let mut sched = LrSchedule::from_config(&t);
        let at = self.resume(&mut opt, &mut sched)?;
        let mut data = self.open_data(&at)?;
        let mut log = RunLog::open(
            &self.out_dir,
            self.cfg.dataset.class_num,
            self.cfg.training.resume.then_some(at.iteration),
        )?;
        let pb = crate::logging::progress_bar(self.progress, t.iterations, at.iteration);
        let mut p = Progress {
            best: at.best,
            last: None,
            losses: Vec::new(),
            early_stopped: false,
        };
        let mut it = at.iteration;
        while it < t.iterations {
            let lr = sched.lr(it);
            let (loss_v, terms) = self.step(it, lr, &mut data, &mut opt)?;
            it += 1;
            p.losses.push(loss_v);
            log.train(it, lr, loss_v, &terms)?;
            pb.set_position(it as u64);
            let vd = p
                .last
                .as_ref()
                .map(|v| format!(" dice {:.3}", v.mean_dice))
                .unwrap_or_default();
            pb.set_message(format!("loss {loss_v:.4} lr {lr:.2e}{vd}"));

            if let Some(vs) = data.valid.as_ref() {
                if it % t.validate_every == 0 || it == t.iterations {
                    let vr = self.validate(it, vs)?;
                    log.valid(&vr)?;
                    sched.observe(vr.mean_dice);
                    let improved = p.best.as_ref().is_none_or(|b| vr.mean_dice > b.mean_dice);
                    if improved {
                        p.best = Some(vr.clone());
                    }
                    let b = p.best.as_ref().expect("set above");
                    if improved {
                        let meta =
                            self.checkpoint_meta(it, vr.mean_dice, Some(b), &data.labelled, &sched);
                        self.save("best", &meta, None)?;
                    }
                    log.plot()?;
                    if let Some(patience) = t.early_stop_patience {
                        if it - b.iteration >= patience && it < t.iterations {
                            p.early_stopped = true;
                            pb.println(format!(
                                "early stop at iteration {it}: no improvement since iteration {}",
                                b.iteration
                            ));
                        }
                    }
                    p.last = Some(vr);
                }
            }
            // `latest` at every validation interval (whether or not there
            // is a validation set), every `checkpoint_every` steps and at
            // the end: a killed run loses at most one interval
            let save_now = it == t.iterations
                || p.early_stopped
                || it % t.validate_every.max(1) == 0
                || (t.checkpoint_every > 0 && it % t.checkpoint_every == 0);
            if save_now {
                let metric = p.last.as_ref().map_or(f64::NAN, |v| v.mean_dice);
                let meta =
                    self.checkpoint_meta(it, metric, p.best.as_ref(), &data.labelled, &sched);
                self.save("latest", &meta, Some(&opt))?;
            }
            if p.early_stopped {
                break;
            }
        }
        pb.finish_and_clear();
        log.plot()?;
        let (first_loss, final_loss) = TrainSummary::loss_tenths(&p.losses);
        Ok(TrainSummary {
            iterations: it,
            best: p.best,
            last: p.last,
            early_stopped: p.early_stopped,
            out_dir: self.out_dir.clone(),
            first_loss,
            final_loss,
        })
    }
}

/// Takes every row's label from the column `col` (`dataset.label_column`),
/// e.g. scribbles listed beside the full labels.
pub(crate) fn use_label_column(m: &mut medseg_io::Manifest, col: &str) -> Result<()> {
    if col == "label" {
        return Ok(());
    }
    for i in 0..m.rows.len() {
        let Some(v) = m.rows[i].extra.get(col).filter(|v| !v.is_empty()).cloned() else {
            return Err(m
                .row_error(
                    i,
                    format!("no `{col}` value (dataset.label_column = \"{col}\")"),
                )
                .into());
        };
        m.rows[i].label = Some(PathBuf::from(v));
    }
    Ok(())
}
