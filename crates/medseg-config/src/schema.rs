//! The typed sections of an experiment configuration.
//!
//! Every struct rejects unknown keys. Free-form tables (`network`, `loss`,
//! transform lists) are validated by the registry that consumes them
//! (medseg-nets, medseg-losses, medseg-transforms), which also rejects unknown
//! keys and names them.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A whole experiment: data, network, training and inference settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Where the data is and how it is fed.
    pub dataset: DatasetConfig,
    /// The network, as its registry reads it: `name` plus that network's
    /// parameters (e.g. `{ name = "UNet2D", in_chns = 1, class_num = 4 }`).
    pub network: serde_json::Value,
    /// The optimisation.
    pub training: TrainingConfig,
    /// Sliding window, TTA, post-processing and outputs.
    #[serde(default)]
    pub inference: InferenceConfig,
    /// Semi-supervised settings, for `medseg-semi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semi: Option<SemiConfig>,
    /// Weakly supervised (scribble) settings, for `medseg-weak`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weak: Option<WeakConfig>,
    /// Noisy-label settings, for `medseg-noisy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noisy: Option<NoisyConfig>,
    /// Self-supervised pre-training of the network's encoder, for
    /// `medseg-pretrain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrain: Option<PretrainConfig>,
}

/// The `[pretrain]` section: self-supervised pre-training of the encoder of
/// `[network]` on images without labels. Settings not given here come from
/// `[training]` (optimiser, weight decay, schedule, seed, device) and
/// `[dataset]` (batch size, base transforms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    /// Method name in the pre-training registry (`MoCo`, `SimCLR`,
    /// `ModelGenesis`).
    pub method: String,
    /// Pre-training iterations.
    pub iterations: usize,
    /// Learning rate (default: `training.lr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Images per batch (default: `dataset.train_batch_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Manifest of the images (labels, if listed, are not read). Default:
    /// `dataset.train_unlabelled_csv`, else `dataset.train_csv`; relative
    /// to `dataset.root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<PathBuf>,
    /// Transforms applied after `dataset.train_transforms` to make each
    /// view (contrastive methods draw them twice, independently) or the
    /// corrupted input (restoration), as `{ name = ..., ... }` tables.
    #[serde(default)]
    pub view_transforms: Vec<serde_json::Value>,
    /// Where the encoder weights are written. Default:
    /// `<training.output_dir>/pretrain/encoder.safetensors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<PathBuf>,
    /// Log the loss every this many iterations (default 10).
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// Method-specific parameters (e.g. `queue_size`, `temperature`).
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

fn default_log_every() -> usize {
    10
}

impl PretrainConfig {
    /// Where the encoder weights go: `output`, or
    /// `<output_dir>/pretrain/encoder.safetensors`.
    pub fn output_path(&self, training_output_dir: &std::path::Path) -> PathBuf {
        self.output.clone().unwrap_or_else(|| {
            training_output_dir
                .join("pretrain")
                .join("encoder.safetensors")
        })
    }
}

/// Phantom data generated on first use when the dataset folder is absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    /// Phantom kind: `cardiac2d`, `cardiac3d`, `abdomen2d` or `abdomen3d`.
    pub kind: String,
    /// Number of subjects.
    pub subjects: usize,
    /// Seed of the generator.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

/// The `[dataset]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// Folder that manifest paths are relative to.
    pub root: PathBuf,
    /// Training manifest (CSV, relative to `root` unless absolute).
    pub train_csv: PathBuf,
    /// Validation manifest.
    #[serde(default)]
    pub valid_csv: Option<PathBuf>,
    /// Test manifest, used by inference and evaluation.
    #[serde(default)]
    pub test_csv: Option<PathBuf>,
    /// The manifest column holding the training labels (default `label`);
    /// e.g. `scribble` for a manifest with full labels and scribbles side by side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_column: Option<String>,
    /// A second training manifest with noisy labels, for noisy-label methods
    /// that train on a few clean images (`train_csv`) and many noisy ones
    /// (DAST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_noisy_csv: Option<PathBuf>,
    /// Noisy samples per training batch (with `train_noisy_csv`).
    #[serde(default = "default_batch", skip_serializing_if = "is_default_batch")]
    pub train_batch_size_noisy: usize,
    /// Transforms run on the noisy images only, before `train_transforms`
    /// (e.g. `CorruptLabels` to simulate the noise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub noisy_transforms: Vec<serde_json::Value>,
    /// Unlabelled training manifest (semi-supervised learning).
    #[serde(default)]
    pub train_unlabelled_csv: Option<PathBuf>,
    /// Generate phantom data into `root` when it does not exist yet.
    #[serde(default)]
    pub generate: Option<GenerateConfig>,
    /// Number of image channels (modalities).
    #[serde(default = "one")]
    pub in_channels: usize,
    /// Number of classes, background included.
    pub class_num: usize,
    /// Label value that means "not annotated".
    #[serde(default = "default_ignore")]
    pub ignore_label: u16,
    /// Labelled samples per training batch.
    #[serde(default = "default_batch")]
    pub train_batch_size: usize,
    /// Unlabelled samples per training batch (semi-supervised learning).
    #[serde(default = "default_batch")]
    pub train_batch_size_unlab: usize,
    /// Worker threads that load and transform training data.
    #[serde(default = "default_workers")]
    pub num_workers: usize,
    /// Training transforms, each `{ name = "...", ...params }`.
    #[serde(default)]
    pub train_transforms: Vec<serde_json::Value>,
    /// Transforms for validation and test images (normalisation, padding...).
    #[serde(default)]
    pub test_transforms: Vec<serde_json::Value>,
}

/// Optimiser choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Stochastic gradient descent, with `momentum` and `nesterov`.
    Sgd,
    /// Adam; `weight_decay` is added to the gradient (L2), as in PyTorch.
    Adam,
    /// AdamW; decoupled weight decay.
    Adamw,
}

/// Learning-rate schedule choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Constant learning rate.
    Constant,
    /// Multiply by `lr_gamma` every `lr_step` iterations.
    Step,
    /// Multiply by `lr_gamma` at each of `lr_milestones`.
    Multistep,
    /// Cosine annealing from `lr` to `lr_min` over the run.
    Cosine,
    /// `lr * (1 - it/iterations)^poly_power`, as nnU-Net.
    Poly,
    /// Multiply by `lr_gamma` when the validation metric has not improved for
    /// `plateau_patience` validations.
    Plateau,
}

/// The `[training]` section. Flat keys so that overrides stay short
/// (`MEDSEG_TRAINING__LR=0.01`, `--set training.iterations=200`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    /// Folder for checkpoints, logs and plots.
    pub output_dir: PathBuf,
    /// Number of training iterations.
    pub iterations: usize,
    /// Validate every this many iterations (0: never).
    #[serde(default = "default_valid_every")]
    pub validate_every: usize,
    /// Save the latest checkpoint every this many iterations (0: only at the end).
    #[serde(default)]
    pub checkpoint_every: usize,
    /// Seed for weights, data order and augmentation.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Optimiser.
    #[serde(default = "default_optimizer")]
    pub optimizer: OptimizerKind,
    /// Initial learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// SGD momentum.
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// SGD Nesterov momentum.
    #[serde(default)]
    pub nesterov: bool,
    /// Weight decay (L2 for SGD and Adam, decoupled for AdamW).
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Adam betas.
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    /// Adam epsilon.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Learning-rate schedule.
    #[serde(default = "default_schedule")]
    pub lr_scheduler: ScheduleKind,
    /// Step size (iterations) of the `step` schedule.
    #[serde(default = "default_lr_step")]
    pub lr_step: usize,
    /// Decay factor of `step`, `multistep` and `plateau`.
    #[serde(default = "default_gamma")]
    pub lr_gamma: f64,
    /// Milestones (iterations) of `multistep`.
    #[serde(default)]
    pub lr_milestones: Vec<usize>,
    /// Exponent of `poly`.
    #[serde(default = "default_poly")]
    pub poly_power: f64,
    /// Floor of `cosine` and `plateau`.
    #[serde(default)]
    pub lr_min: f64,
    /// Validations without improvement before `plateau` decays.
    #[serde(default = "default_plateau_patience")]
    pub plateau_patience: usize,
    /// Linear warm-up from 0 over this many iterations, before the schedule.
    #[serde(default)]
    pub warmup_iterations: usize,
    /// Stop when the validation metric has not improved for this many
    /// iterations (checked at each validation).
    #[serde(default)]
    pub early_stop_patience: Option<usize>,
    /// Clip the global gradient norm to this value.
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// The loss, as the loss registry reads it, e.g.
    /// `{ name = "DiceLoss" }` or `{ name = "CombinedLoss", terms = [...] }`.
    pub loss: serde_json::Value,
    /// Resume from `output_dir/latest` when it exists.
    #[serde(default)]
    pub resume: bool,
    /// Where tensors live: `cpu` (the default and the fast path), `cuda` or
    /// `cuda:N` (needs a build with the `cuda` feature). The apps' `--device`
    /// flag overrides it. Not written when it is `cpu`, so that configs and
    /// their hashes stay as they were.
    #[serde(default = "default_device", skip_serializing_if = "is_cpu")]
    pub device: String,
}

/// Keep-largest-component post-processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LargestComponent {
    /// No post-processing.
    None,
    /// Keep the largest connected component of each class separately.
    PerClass,
    /// Keep the largest component of the union of foreground classes.
    Union,
}

/// The `[inference]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceConfig {
    /// Sliding-window size in voxels, spatial axes in array order; absent:
    /// the whole image at once.
    #[serde(default)]
    pub patch_size: Option<Vec<usize>>,
    /// Fraction of overlap between neighbouring windows, in [0, 1).
    #[serde(default = "default_overlap")]
    pub overlap: f64,
    /// Weight window outputs with a Gaussian (sigma = `sigma_scale` x size), as nnU-Net.
    #[serde(default = "yes")]
    pub gaussian: bool,
    /// Sigma of the Gaussian weighting, relative to the window size.
    #[serde(default = "default_sigma")]
    pub sigma_scale: f64,
    /// Windows per forward pass.
    #[serde(default = "default_sw_batch")]
    pub sw_batch_size: usize,
    /// Test-time augmentation by flipping every subset of spatial axes.
    #[serde(default)]
    pub tta_flip: bool,
    /// Checkpoints to ensemble: `best`, `latest`, or paths.
    #[serde(default = "default_checkpoints")]
    pub checkpoints: Vec<String>,
    /// Keep-largest-component post-processing.
    #[serde(default = "default_lcc")]
    pub largest_component: LargestComponent,
    /// Written label values: predicted class `output_label_source[i]` is
    /// saved as `output_label_target[i]` (PyMIC's `label_source` and
    /// `label_target`, e.g. `[0, 1]` → `[0, 255]`); empty: class indices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_label_source: Vec<u16>,
    /// The values written for `output_label_source`, same length.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_label_target: Vec<u16>,
    /// Where predictions go (default: `<training.output_dir>/predictions`).
    #[serde(default)]
    pub output_dir: Option<PathBuf>,
    /// Also save class probabilities.
    #[serde(default)]
    pub save_probabilities: bool,
    /// Write overlay PNGs of predictions on images.
    #[serde(default = "yes")]
    pub overlays: bool,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        InferenceConfig {
            patch_size: None,
            overlap: default_overlap(),
            gaussian: true,
            sigma_scale: default_sigma(),
            sw_batch_size: default_sw_batch(),
            tta_flip: false,
            checkpoints: default_checkpoints(),
            largest_component: default_lcc(),
            output_label_source: Vec::new(),
            output_label_target: Vec::new(),
            output_dir: None,
            save_probabilities: false,
            overlays: true,
        }
    }
}

/// The `[semi]` section: a semi-supervised method and its weights.
pub type SemiConfig = MethodConfig;

/// The `[weak]` section: a weakly supervised (scribble) method and its weights.
pub type WeakConfig = MethodConfig;

/// The `[noisy]` section: a noisy-label method and its parameters.
pub type NoisyConfig = MethodConfig;

/// A learning method with a ramped-up regularisation weight: the `[semi]`
/// and `[weak]` sections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    /// Method name, as the learner registry knows it (semi: `EntropyMinimization`,
    /// `MeanTeacher`, `UAMT`, `CCT`, `CPS`, `URPC`, `MCNet`; weak: `pCE`,
    /// `EntropyMinimization`, `TotalVariation`, `MumfordShah`, `GatedCRF`,
    /// `USTM`, `DMPLS`).
    pub method: String,
    /// Maximum weight of the unsupervised loss.
    #[serde(default = "default_reg_weight")]
    pub regularize_w: f64,
    /// Ramp-up start, as a fraction of the iterations.
    #[serde(default)]
    pub rampup_start: f64,
    /// Ramp-up end, as a fraction of the iterations.
    #[serde(default = "default_rampup_end")]
    pub rampup_end: f64,
    /// Teacher EMA decay (Mean Teacher, UA-MT, USTM).
    #[serde(default = "default_ema")]
    pub ema_decay: f64,
    /// Method-specific extra parameters.
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn default_device() -> String {
    "cpu".into()
}
fn is_cpu(d: &String) -> bool {
    d == "cpu"
}
fn default_seed() -> u64 {
    1
}
fn default_ignore() -> u16 {
    255
}
fn default_batch() -> usize {
    4
}
fn is_default_batch(n: &usize) -> bool {
    *n == default_batch()
}
fn default_workers() -> usize {
    2
}
fn default_valid_every() -> usize {
    100
}
fn default_optimizer() -> OptimizerKind {
    OptimizerKind::Adam
}
fn default_lr() -> f64 {
    1e-3
}
fn default_momentum() -> f64 {
    0.9
}
fn default_weight_decay() -> f64 {
    1e-5
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn default_eps() -> f64 {
    1e-8
}
fn default_schedule() -> ScheduleKind {
    ScheduleKind::Constant
}
fn default_lr_step() -> usize {
    1000
}
fn default_gamma() -> f64 {
    0.5
}
fn default_poly() -> f64 {
    0.9
}
fn default_plateau_patience() -> usize {
    5
}
fn default_overlap() -> f64 {
    0.5
}
fn default_sigma() -> f64 {
    0.125
}
fn default_sw_batch() -> usize {
    4
}
fn default_checkpoints() -> Vec<String> {
    vec!["best".into()]
}
fn default_lcc() -> LargestComponent {
    LargestComponent::None
}
fn default_reg_weight() -> f64 {
    0.1
}
fn default_rampup_end() -> f64 {
    0.8
}
fn default_ema() -> f64 {
    0.99
}

impl ExperimentConfig {
    /// Checks values that parse but make no sense. Returns the dotted key at
    /// fault and what was expected.
    pub fn validate(&self) -> std::result::Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
        let d = &self.dataset;
        if d.class_num < 2 {
            return bad("dataset.class_num", "at least 2 (background and one class)");
        }
        if d.in_channels == 0 {
            return bad("dataset.in_channels", "at least 1");
        }
        if d.train_batch_size == 0 {
            return bad("dataset.train_batch_size", "at least 1");
        }
        if !self.network.is_object() || self.network.get("name").and_then(|v| v.as_str()).is_none()
        {
            return bad(
                "network",
                "a table with a `name` key naming a registered network",
            );
        }
        let t = &self.training;
        if t.iterations == 0 {
            return bad("training.iterations", "at least 1");
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return bad("training.lr", "a positive number");
        }
        if t.weight_decay < 0.0 {
            return bad("training.weight_decay", "zero or positive");
        }
        if !(0.0..1.0).contains(&t.betas[0]) || !(0.0..1.0).contains(&t.betas[1]) {
            return bad("training.betas", "two numbers in [0, 1)");
        }
        if t.lr_gamma.is_nan() || t.lr_gamma <= 0.0 {
            return bad("training.lr_gamma", "a positive number");
        }
        if t.lr_scheduler == ScheduleKind::Step && t.lr_step == 0 {
            return bad("training.lr_step", "at least 1");
        }
        if let Some(c) = t.grad_clip {
            if c.is_nan() || c <= 0.0 {
                return bad("training.grad_clip", "a positive number");
            }
        }
        let dev = t.device.as_str();
        let cuda_index_ok = dev
            .strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<usize>().is_ok());
        if !(dev == "cpu" || dev == "cuda" || cuda_index_ok) {
            return bad("training.device", "`cpu`, `cuda` or `cuda:N`");
        }
        if !t.loss.is_object() {
            return bad("training.loss", "a table, e.g. { name = \"DiceLoss\" }");
        }
        let i = &self.inference;
        if !(0.0..1.0).contains(&i.overlap) {
            return bad("inference.overlap", "a fraction in [0, 1)");
        }
        if i.sw_batch_size == 0 {
            return bad("inference.sw_batch_size", "at least 1");
        }
        if let Some(p) = &i.patch_size {
            if p.is_empty() || p.contains(&0) {
                return bad(
                    "inference.patch_size",
                    "positive sizes, one per spatial axis",
                );
            }
        }
        if i.output_label_source.len() != i.output_label_target.len() {
            return bad(
                "inference.output_label_target",
                "one value per entry of inference.output_label_source",
            );
        }
        let mut seen = i.output_label_source.clone();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != i.output_label_source.len() {
            return bad("inference.output_label_source", "distinct class values");
        }
        if i.checkpoints.is_empty() {
            return bad(
                "inference.checkpoints",
                "at least one of `best`, `latest` or a path",
            );
        }
        if let Some(p) = &self.pretrain {
            if p.iterations == 0 {
                return bad("pretrain.iterations", "at least 1");
            }
            if p.batch_size == Some(0) {
                return bad("pretrain.batch_size", "at least 1");
            }
            if p.lr.is_some_and(|lr| !(lr > 0.0 && lr.is_finite())) {
                return bad("pretrain.lr", "a positive number");
            }
            if p.log_every == 0 {
                return bad("pretrain.log_every", "at least 1");
            }
        }
        for (section, m) in [
            ("semi", &self.semi),
            ("weak", &self.weak),
            ("noisy", &self.noisy),
        ] {
            let Some(s) = m else { continue };
            if !(0.0..=1.0).contains(&s.rampup_start)
                || !(0.0..=1.0).contains(&s.rampup_end)
                || s.rampup_start > s.rampup_end
            {
                return Err((
                    format!("{section}.rampup_start/rampup_end"),
                    "fractions with start <= end".into(),
                ));
            }
            if !(0.0..1.0).contains(&s.ema_decay) {
                return Err((format!("{section}.ema_decay"), "a number in [0, 1)".into()));
            }
        }
        Ok(())
    }
}
