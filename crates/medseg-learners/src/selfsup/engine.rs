//! The pre-training loop: images without labels, two views per image, the
//! method's loss, the optimiser and schedule of `[training]` (with
//! `[pretrain]`'s iterations, learning rate and batch size), a loss log and
//! curve, and the encoder's weights written at the end.

use super::{PretrainInit, PretrainRegistry, ViewScheme};
use crate::collate::collate;
use crate::error::{LearnError, Result, TensorContext};
use crate::logging::RunLog;
use crate::setup::{network_config, parse_device, read_manifest};
use crate::stream::BatchStream;
use crate::{clip_grad_norm, LrSchedule, Optimizer, OptimizerSettings};
use candle_core::{Device, Tensor};
use medseg_config::{ExperimentConfig, PretrainConfig};
use medseg_core::{Error as CoreError, Sample};
use medseg_io::{Dataset, Loader, LoaderConfig, UnlabelledDataset};
use medseg_nets::NetRegistry;
use medseg_transforms::{Mode, Registry as TransformRegistry};
use std::path::PathBuf;
use std::sync::Arc;

/// What a pre-training run did.
#[derive(Debug, Clone)]
pub struct PretrainSummary {
    /// The method.
    pub method: String,
    /// Iterations run.
    pub iterations: usize,
    /// Mean loss over the first tenth of the iterations.
    pub first_loss: f64,
    /// Mean loss over the last tenth of the iterations.
    pub final_loss: f64,
    /// The encoder weights written.
    pub encoder_path: PathBuf,
    /// Number of tensors in it.
    pub encoder_tensors: usize,
    /// The folder of the logs (`<training.output_dir>/pretrain`).
    pub out_dir: PathBuf,
}

/// Runs self-supervised pre-training from a configuration with a
/// `[pretrain]` section.
///
/// ```no_run
/// # fn main() -> medseg_learners::Result<()> {
/// let path = std::path::Path::new("configs/selfsup/moco.toml");
/// let cfg = medseg_config::ExperimentConfig::load(path, &[]).expect("config");
/// let summary = medseg_learners::selfsup::Pretrainer::new(cfg).run()?;
/// println!("encoder written to {}", summary.encoder_path.display());
/// # Ok(()) }
/// ```
pub struct Pretrainer {
    cfg: ExperimentConfig,
    device: Option<Device>,
    networks: NetRegistry,
    transforms: TransformRegistry,
    methods: PretrainRegistry,
    progress: bool,
}

impl Pretrainer {
    /// A pre-trainer with the built-in networks, transforms and methods.
    pub fn new(cfg: ExperimentConfig) -> Self {
        Pretrainer {
            cfg,
            device: None,
            networks: NetRegistry::with_builtins(),
            transforms: TransformRegistry::with_builtins(),
            methods: PretrainRegistry::with_builtins(),
            progress: false,
        }
    }

    /// Uses `networks` instead of the built-in network registry.
    pub fn networks(mut self, networks: NetRegistry) -> Self {
        self.networks = networks;
        self
    }

    /// Uses `transforms` instead of the built-in transform registry.
    pub fn transforms(mut self, transforms: TransformRegistry) -> Self {
        self.transforms = transforms;
        self
    }

    /// Uses `methods` instead of the built-in method registry.
    pub fn methods(mut self, methods: PretrainRegistry) -> Self {
        self.methods = methods;
        self
    }

    /// Runs on `device` instead of `training.device`.
    pub fn device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
    }

    /// Shows a progress bar.
    pub fn progress(mut self, show: bool) -> Self {
        self.progress = show;
        self
    }

    fn section(&self) -> Result<&PretrainConfig> {
        self.cfg.pretrain.as_ref().ok_or_else(|| {
            LearnError::Config(
                "pre-training needs a [pretrain] section (method, iterations, view_transforms)"
                    .into(),
            )
        })
    }

    /// The network table pre-training builds: the experiment's, without
    /// `pretrained`, `freeze_encoder` and `stn` (the bare network's encoder
    /// is pre-trained; an STN is trained with the segmentation).
    pub fn network_table(&self) -> serde_json::Value {
        let mut net = network_config(&self.cfg);
        if let Some(o) = net.as_object_mut() {
            for k in [medseg_nets::PRETRAINED_KEY, medseg_nets::FREEZE_KEY, "stn"] {
                o.remove(k);
            }
        }
        net
    }

    /// The loader of the images, making each sample's views.
    fn loader(&self, p: &PretrainConfig, scheme: ViewScheme) -> Result<Loader> {
        let d = &self.cfg.dataset;
        let csv = p
            .csv
            .as_ref()
            .or(d.train_unlabelled_csv.as_ref())
            .unwrap_or(&d.train_csv);
        let ds: Arc<dyn Dataset> =
            Arc::new(UnlabelledDataset::new(read_manifest(&self.cfg, csv)?)?);
        let base = Arc::new(
            self.transforms
                .build(&d.train_transforms)?
                .with_mode(Mode::Train),
        );
        let view = Arc::new(
            self.transforms
                .build(&p.view_transforms)?
                .with_mode(Mode::Train),
        );
        let tf: medseg_io::TransformFn = Arc::new(move |s, rng| {
            let s = base.apply(s, rng)?;
            let (a, b) = match scheme {
                ViewScheme::TwoViews => (view.apply(s.clone(), rng)?, view.apply(s, rng)?),
                ViewScheme::CorruptedAndClean => (view.apply(s.clone(), rng)?, s),
            };
            stack_views(a, b)
        });
        Ok(Loader::new(
            ds,
            LoaderConfig {
                batch_size: p.batch_size.unwrap_or(d.train_batch_size),
                shuffle: true,
                seed: self.cfg.training.seed ^ 0x5e1f_5a9e,
                workers: d.num_workers,
                prefetch: 2,
                drop_last: true,
            },
            tf,
        ))
    }

    /// Builds the method, runs `pretrain.iterations` steps and writes the
    /// encoder.
    pub fn run(&mut self) -> Result<PretrainSummary> {
        let p = self.section()?.clone();
        let device = match &self.device {
            Some(d) => d.clone(),
            None => parse_device(&self.cfg.training.device)?,
        };
        let init = PretrainInit {
            config: &self.cfg,
            device: &device,
            networks: &self.networks,
            network_config: self.network_table(),
        };
        let mut method = self.methods.build(&p.method, &init)?;
        let c = self.cfg.dataset.in_channels;
        let mut stream = BatchStream::new(self.loader(&p, method.views())?, 0, 0)?;

        let mut t = self.cfg.training.clone();
        t.iterations = p.iterations;
        if let Some(lr) = p.lr {
            t.lr = lr;
        }
        let mut opt = Optimizer::new(method.params()?, OptimizerSettings::from_config(&t));
        let sched = LrSchedule::from_config(&t);

        let out_dir = self.cfg.training.output_dir.join("pretrain");
        std::fs::create_dir_all(&out_dir).map_err(|e| CoreError::io(&out_dir, e))?;
        medseg_core::write_atomic(
            &out_dir.join("config.toml"),
            self.cfg.to_toml_string().as_bytes(),
        )?;
        let mut log = RunLog::open(&out_dir, 2, None)?;
        let pb = crate::logging::progress_bar(self.progress, p.iterations, 0);
        let mut losses = Vec::with_capacity(p.iterations);
        for it in 0..p.iterations {
            let lr = sched.lr(it);
            let batch = stream.next()?;
            let tb = collate(&batch, self.cfg.dataset.ignore_label, &device)
                .ctx("collating a pre-training batch")?;
            let views = split_views(&tb.image, c).ctx("splitting the views")?;
            let out = method
                .step(&views, it)
                .ctx(&format!("pre-training step {it}"))?;
            let loss_v = crate::logging::finite_loss(&out.loss, it, "lower pretrain.lr")?;
            let mut grads = out.loss.backward().ctx("back-propagation")?;
            if let Some(cl) = t.grad_clip {
                clip_grad_norm(opt.params(), &mut grads, cl).ctx("gradient clipping")?;
            }
            opt.step(&grads, lr).ctx("optimiser step")?;
            method.after_update(it).ctx("after-update hook")?;
            losses.push(loss_v);
            if (it + 1) % p.log_every == 0 || it + 1 == p.iterations {
                log.train(it + 1, lr, loss_v, &out.terms)?;
            }
            pb.set_position(it as u64 + 1);
            pb.set_message(format!("loss {loss_v:.4}"));
        }
        pb.finish_and_clear();
        log.plot()?;
        let (first_loss, final_loss) = crate::summary::TrainSummary::loss_tenths(&losses);
        let encoder_path = p.output_path(&self.cfg.training.output_dir);
        if let Some(dir) = encoder_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
        }
        let (vm, net) = method.encoder();
        let origin = serde_json::json!({
            "method": method.name(),
            "iterations": p.iterations,
            "seed": self.cfg.training.seed,
            "first_loss": first_loss,
            "final_loss": final_loss,
            "view_transforms": p.view_transforms,
        });
        let n = medseg_nets::save_encoder(&encoder_path, vm, net, &origin)?;
        Ok(PretrainSummary {
            method: method.name().to_string(),
            iterations: p.iterations,
            first_loss,
            final_loss,
            encoder_path,
            encoder_tensors: n,
            out_dir,
        })
    }
}

/// The two views of a sample stacked on the channel axis (`[2C, ...]`);
/// they must have one spatial shape.
pub(crate) fn stack_views(a: Sample, b: Sample) -> medseg_core::Result<Sample> {
    if a.image.data.shape()[1..] != b.image.data.shape()[1..] {
        return Err(CoreError::Shape(format!(
            "the two views of {} differ in shape ({:?} vs {:?}): pretrain.view_transforms must give a fixed size (e.g. RandomResizedCrop with `size`)",
            a.name,
            a.image.data.shape(),
            b.image.data.shape()
        )));
    }
    let data = ndarray::concatenate(
        ndarray::Axis(0),
        &[a.image.data.view(), b.image.data.view()],
    )
    .map_err(|e| CoreError::Shape(format!("stacking views: {e}")))?;
    let mut out = a;
    out.image.data = data;
    out.label = None;
    out.pixel_weight = None;
    Ok(out)
}

/// `[N, 2C, ...]` into the two views `[N, C, ...]`.
pub(crate) fn split_views(x: &Tensor, c: usize) -> candle_core::Result<Vec<Tensor>> {
    if x.dim(1)? != 2 * c {
        candle_core::bail!(
            "expected {} channels (two views of {c}), got {:?}",
            2 * c,
            x.dims()
        )
    }
    Ok(vec![x.narrow(1, 0, c)?, x.narrow(1, c, c)?])
}
