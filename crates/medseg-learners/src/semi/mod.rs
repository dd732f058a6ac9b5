//! Semi-supervised learners: a few labelled and many unlabelled images.
//!
//! Each method is one [`Learner`] that overrides only the training step, as
//! in PyMIC's `pymic/net_run/semi_sup` and SSL4MIS:
//!
//! | `semi.method` | learner | network |
//! |---|---|---|
//! | `EntropyMinimization` | [`EntropyMinLearner`] | any |
//! | `MeanTeacher` | [`MeanTeacherLearner`] | any |
//! | `UAMT` | [`UaMtLearner`] | any (with dropout) |
//! | `CCT` | [`CctLearner`] | `CCTNet` |
//! | `CPS` | [`CpsLearner`] | any (a second copy is trained) |
//! | `URPC` | [`UrpcLearner`] | `URPC` |
//! | `MCNet` | [`McNetLearner`] | `MCNet` |
//!
//! Every step concatenates the labelled batch (`dataset.train_batch_size`)
//! and the unlabelled batch (`dataset.train_batch_size_unlab`) along the
//! batch axis, applies the configured supervised loss to the labelled part,
//! and adds `w(t) * unsup` where `w(t) = semi.regularize_w *
//! sigmoid_rampup(t, rampup_start * T, rampup_end * T)` ([`consistency_weight`]).
//! The logged terms are `sup`, `unsup` (the unweighted unsupervised loss) and
//! `weight`.
//!
//! By default the concatenated batch goes through the network in one pass,
//! as in PyMIC and SSL4MIS, so BatchNorm normalises labelled and unlabelled
//! images with shared batch statistics. `semi.params.joint_forward = false`
//! (any method) runs the two parts in separate passes instead. Each method
//! accepts only its own `semi.params` keys (listed in the error for any
//! other).
//!
//! Mean Teacher and UA-MT update their teacher from the student's weights,
//! which the engine owns: build the trainer with [`semi_trainer`] (or bind a
//! [`StudentSlot`] yourself with [`build_semi_learner_with_slot`]).

mod cct;
mod cps;
mod em;
mod mcnet;
mod mean_teacher;
mod uamt;
mod urpc;

pub use cct::CctLearner;
pub use cps::CpsLearner;
pub use em::EntropyMinLearner;
pub use mcnet::McNetLearner;
pub use mean_teacher::{MeanTeacherLearner, Teacher};
pub use uamt::UaMtLearner;
pub use urpc::UrpcLearner;

use crate::engine::{Learner, StepContext, Trainer};
use crate::error::{LearnError, Result};
use crate::ramp::sigmoid_rampup;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use medseg_config::{ExperimentConfig, SemiConfig};
use medseg_losses::{LossTarget, Prediction};
use medseg_nets::{NetOutput, SegNetwork};
use rand::{Rng, SeedableRng};
use std::sync::{Arc, Mutex};

/// The method names accepted in `semi.method`.
pub const METHODS: [&str; 7] = [
    "EntropyMinimization",
    "MeanTeacher",
    "UAMT",
    "CCT",
    "CPS",
    "URPC",
    "MCNet",
];

/// A shared handle on the student's weights (the engine's [`VarMap`]),
/// filled once the [`Trainer`] exists. Cloning shares the handle.
#[derive(Clone, Default)]
pub struct StudentSlot(Arc<Mutex<Option<VarMap>>>);

impl StudentSlot {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Points the slot at `varmap` (shared, not copied).
    pub fn bind(&self, varmap: &VarMap) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(varmap.clone());
        }
    }

    /// The bound weights, or an error naming the fix.
    pub fn get(&self) -> candle_core::Result<VarMap> {
        self.0
            .lock()
            .map_err(|_| candle_core::Error::Msg("student slot poisoned".into()))?
            .clone()
            .ok_or_else(|| {
                candle_core::Error::Msg(
                    "the teacher has no student weights: build the trainer with \
                     medseg_learners::semi::semi_trainer (or bind a StudentSlot)"
                        .into(),
                )
            })
    }
}

/// The `[semi]` section, or an error naming it.
pub fn semi_config(cfg: &ExperimentConfig) -> Result<&SemiConfig> {
    cfg.semi
        .as_ref()
        .ok_or_else(|| LearnError::Config("the [semi] section is missing".into()))
}

/// The consistency weight at iteration `it` of `iterations`:
/// `regularize_w * sigmoid_rampup(it, rampup_start * iterations, rampup_end * iterations)`.
pub fn consistency_weight(semi: &SemiConfig, it: usize, iterations: usize) -> f64 {
    let t = iterations as f64;
    semi.regularize_w * sigmoid_rampup(it as f64, semi.rampup_start * t, semi.rampup_end * t)
}

/// A number from `semi.params`, or `default` when absent.
pub(crate) fn param_f64(semi: &SemiConfig, key: &str, default: f64) -> Result<f64> {
    match semi.params.get(key) {
        None => Ok(default),
        Some(v) => v.as_f64().ok_or_else(|| {
            LearnError::Config(format!("semi.params.{key} must be a number, got {v}"))
        }),
    }
}

/// A boolean `semi.params` entry, `default` when absent.
pub(crate) fn param_bool(semi: &SemiConfig, key: &str, default: bool) -> Result<bool> {
    match semi.params.get(key) {
        None => Ok(default),
        Some(v) => v.as_bool().ok_or_else(|| {
            LearnError::Config(format!("semi.params.{key} must be true or false, got {v}"))
        }),
    }
}

/// The `semi.params` keys each method reads (every method also reads
/// `joint_forward`).
fn known_params(method: &str) -> &'static [&'static str] {
    match method {
        "MeanTeacher" | "MT" => &[
            "noise_std",
            "student_noise_std",
            "teacher_batch_stats",
            "transform_consistency",
        ],
        "UAMT" => &["noise_std", "mc_dropout_n"],
        "CCT" => &["unsupervised_loss"],
        "MCNet" => &["temperature"],
        _ => &[],
    }
}

fn check_params(semi: &SemiConfig) -> Result<()> {
    param_bool(semi, "joint_forward", true)?;
    let known = known_params(&semi.method);
    for key in semi.params.keys() {
        if key != "joint_forward" && !known.contains(&key.as_str()) {
            let mut names: Vec<&str> = known.to_vec();
            names.push("joint_forward");
            return Err(LearnError::Config(format!(
                "semi.params.{key} is not a parameter of {}; it takes {}",
                semi.method,
                names.join(", ")
            )));
        }
    }
    Ok(())
}

fn check_semi(semi: &SemiConfig) -> Result<()> {
    if !(semi.regularize_w.is_finite() && semi.regularize_w >= 0.0) {
        return Err(LearnError::Config(format!(
            "semi.regularize_w must be >= 0, got {}",
            semi.regularize_w
        )));
    }
    if !(0.0..=1.0).contains(&semi.rampup_start)
        || !(0.0..=1.0).contains(&semi.rampup_end)
        || semi.rampup_end < semi.rampup_start
    {
        return Err(LearnError::Config(format!(
            "semi.rampup_start ({}) and semi.rampup_end ({}) must be fractions of the iterations with start <= end",
            semi.rampup_start, semi.rampup_end
        )));
    }
    if !(0.0..1.0).contains(&semi.ema_decay) {
        return Err(LearnError::Config(format!(
            "semi.ema_decay must be in [0, 1), got {}",
            semi.ema_decay
        )));
    }
    Ok(())
}

fn require_network(cfg: &ExperimentConfig, method: &str, names: &[&str]) -> Result<()> {
    let name = cfg
        .network
        .get("name")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if names.contains(&name) {
        Ok(())
    } else {
        Err(LearnError::Config(format!(
            "semi.method = \"{method}\" needs network.name = {} (got \"{name}\")",
            names
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(" or ")
        )))
    }
}

/// Builds the learner of `semi.method`, with its teacher bound to `slot`
/// (Mean Teacher, UA-MT; other methods ignore the slot).
pub fn build_semi_learner_with_slot(
    cfg: &ExperimentConfig,
    device: &Device,
    slot: &StudentSlot,
) -> Result<Box<dyn Learner>> {
    let semi = semi_config(cfg)?;
    check_semi(semi)?;
    let learner: Box<dyn Learner> = match semi.method.as_str() {
        "EntropyMinimization" | "EM" => Box::new(EntropyMinLearner::new(cfg)?),
        "MeanTeacher" | "MT" => Box::new(MeanTeacherLearner::new(cfg, device, slot.clone())?),
        "UAMT" => Box::new(UaMtLearner::new(cfg, device, slot.clone())?),
        "CCT" => {
            require_network(cfg, "CCT", &["CCTNet"])?;
            Box::new(CctLearner::new(cfg)?)
        }
        "CPS" => Box::new(CpsLearner::new(cfg, device)?),
        "URPC" => {
            require_network(cfg, "URPC", &["URPC"])?;
            Box::new(UrpcLearner::new(cfg)?)
        }
        "MCNet" => {
            require_network(cfg, "MCNet", &["MCNet"])?;
            Box::new(McNetLearner::new(cfg)?)
        }
        other => {
            return Err(LearnError::Config(format!(
                "semi.method \"{other}\" is unknown; use one of {}",
                METHODS.join(", ")
            )))
        }
    };
    // after the method is known, so that a misspelt method is named first
    check_params(semi)?;
    Ok(learner)
}

/// Builds the learner of `semi.method`. Mean Teacher and UA-MT need the
/// student's weights: their slot is unbound here, so prefer [`semi_trainer`],
/// which binds it.
pub fn build_semi_learner(cfg: &ExperimentConfig, device: &Device) -> Result<Box<dyn Learner>> {
    build_semi_learner_with_slot(cfg, device, &StudentSlot::new())
}

/// A [`Trainer`] with the learner of `semi.method`, teacher bound to the
/// trainer's network. Paths in `cfg` must be resolved already.
pub fn semi_trainer(cfg: ExperimentConfig) -> Result<Trainer> {
    let slot = StudentSlot::new();
    let learner = build_semi_learner_with_slot(&cfg, &Device::Cpu, &slot)?;
    let trainer = Trainer::new(cfg, learner)?;
    slot.bind(trainer.varmap());
    Ok(trainer)
}

// ---------------------------------------------------------------- helpers

/// The labelled and unlabelled images concatenated along the batch axis, and
/// the number of labelled ones.
pub(crate) fn joint_input(ctx: &StepContext) -> candle_core::Result<(Tensor, usize)> {
    let u = ctx
        .unlabelled
        .ok_or_else(|| candle_core::Error::Msg("no unlabelled batch was loaded".into()))?;
    let n0 = ctx.labelled.image.dim(0)?;
    Ok((Tensor::cat(&[&ctx.labelled.image, &u.image], 0)?, n0))
}

/// `semi.params.joint_forward` (default `true`; its type is checked when the
/// learner is built).
pub(crate) fn joint_forward(semi: &SemiConfig) -> bool {
    semi.params
        .get("joint_forward")
        .and_then(|v| v.as_bool())
        .unwrap_or(true)
}

/// The network's training-mode output on `x`, the labelled images (the first
/// `n0` rows) followed by the unlabelled ones. With `joint` (PyMIC's and
/// SSL4MIS' way) it is one forward pass, so BatchNorm normalises both parts
/// with shared batch statistics; otherwise two passes, one per part, whose
/// outputs are concatenated along the batch axis in the same order.
pub(crate) fn forward_split(
    net: &dyn SegNetwork,
    x: &Tensor,
    n0: usize,
    joint: bool,
) -> candle_core::Result<NetOutput> {
    let n = x.dim(0)?;
    if joint || n0 == 0 || n0 == n {
        return net.forward_t(x, true);
    }
    let a = net.forward_t(&rows(x, 0, n0)?, true)?;
    let b = net.forward_t(&rows(x, n0, n - n0)?, true)?;
    let cat = |p: &[Tensor], q: &[Tensor]| -> candle_core::Result<Vec<Tensor>> {
        if p.len() != q.len() {
            candle_core::bail!("the network returned different outputs for the two batches")
        }
        p.iter()
            .zip(q)
            .map(|(u, v)| Tensor::cat(&[u, v], 0))
            .collect()
    };
    Ok(NetOutput {
        logits: Tensor::cat(&[&a.logits, &b.logits], 0)?,
        deep: cat(&a.deep, &b.deep)?,
        aux: cat(&a.aux, &b.aux)?,
    })
}

/// Rows `[from, from + len)` of a batch tensor.
pub(crate) fn rows(t: &Tensor, from: usize, len: usize) -> candle_core::Result<Tensor> {
    t.narrow(0, from, len)
}

/// The configured supervised loss on labelled logits.
pub(crate) fn sup_loss(ctx: &StepContext, logits: Tensor) -> candle_core::Result<Tensor> {
    ctx.loss
        .forward(&Prediction::logits(logits), &ctx.labelled.target)
}

/// The configured loss against hard pseudo labels (argmax of `probs`).
pub(crate) fn pseudo_label_loss(
    ctx: &StepContext,
    logits: Tensor,
    probs: &Tensor,
) -> candle_core::Result<Tensor> {
    let labels = probs.detach().argmax_keepdim(1)?;
    ctx.loss
        .forward(&Prediction::logits(logits), &LossTarget::class_map(labels))
}

/// Softmax over the channel axis.
pub(crate) fn softmax_c(x: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::softmax(x, 1)
}

/// Mean squared difference over every element.
pub(crate) fn mse(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    (a - b)?.sqr()?.mean_all()
}

/// A scalar tensor as f64.
pub(crate) fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// Seeded Gaussian noise, clipped: `clamp(N(0, std^2), -clip, clip)`, the
/// input perturbation of Mean Teacher and UA-MT.
pub(crate) struct NoiseSource {
    rng: rand_chacha::ChaCha8Rng,
}

impl NoiseSource {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        }
    }

    pub(crate) fn clipped_gaussian(
        &mut self,
        like: &Tensor,
        std: f64,
        clip: f64,
    ) -> candle_core::Result<Tensor> {
        let n = like.elem_count();
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            // Box-Muller, two samples per pair of uniforms
            let u1: f64 = self.rng.random::<f64>().max(1e-300);
            let u2: f64 = self.rng.random::<f64>();
            let r = (-2.0 * u1.ln()).sqrt();
            let a = 2.0 * std::f64::consts::PI * u2;
            for z in [r * a.cos(), r * a.sin()] {
                if v.len() < n {
                    v.push((z * std).clamp(-clip, clip) as f32);
                }
            }
        }
        Tensor::from_vec(v, like.dims(), like.device())?.to_dtype(like.dtype())
    }

    /// A uniformly drawn element of the dihedral group of the last two axes
    /// (the eight flips and right-angle rotations); transposes only when
    /// `square`.
    pub(crate) fn plane_transform(&mut self, square: bool) -> PlaneTransform {
        PlaneTransform {
            transpose: square && self.rng.random::<bool>(),
            flip_h: self.rng.random::<bool>(),
            flip_w: self.rng.random::<bool>(),
        }
    }
}

/// A flip and/or transposition of the last two axes of a batch tensor: an
/// element of the dihedral group of the square (rotations by multiples of
/// 90 degrees and reflections), applied to images and undone on the
/// network's output, so that predictions of transformed and original
/// images can be compared pixel by pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct PlaneTransform {
    /// Swap the last two axes (first).
    pub(crate) transpose: bool,
    /// Reverse the second-to-last axis.
    pub(crate) flip_h: bool,
    /// Reverse the last axis.
    pub(crate) flip_w: bool,
}

impl PlaneTransform {
    fn flips(&self, rank: usize) -> Vec<usize> {
        let mut dims = Vec::new();
        if self.flip_h {
            dims.push(rank - 2);
        }
        if self.flip_w {
            dims.push(rank - 1);
        }
        dims
    }

    /// The transformed tensor.
    pub(crate) fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let r = x.rank();
        if r < 2 {
            candle_core::bail!("a plane transform needs a tensor of rank >= 2, got {r}")
        }
        let t = if self.transpose {
            x.transpose(r - 2, r - 1)?.contiguous()?
        } else {
            x.clone()
        };
        let dims = self.flips(r);
        if dims.is_empty() {
            Ok(t)
        } else {
            t.flip(&dims)
        }
    }

    /// The inverse transform: `invert(apply(x)) == x`.
    pub(crate) fn invert(&self, y: &Tensor) -> candle_core::Result<Tensor> {
        let r = y.rank();
        if r < 2 {
            candle_core::bail!("a plane transform needs a tensor of rank >= 2, got {r}")
        }
        let dims = self.flips(r);
        let t = if dims.is_empty() {
            y.clone()
        } else {
            y.flip(&dims)?
        };
        if self.transpose {
            t.transpose(r - 2, r - 1)?.contiguous()
        } else {
            Ok(t)
        }
    }
}

/// Every tensor of a VarMap, sorted by name.
pub(crate) fn sorted_vars(vm: &VarMap) -> candle_core::Result<Vec<(String, Var)>> {
    let data = vm
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?;
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// True for BatchNorm running statistics.
pub(crate) fn is_running_stat(name: &str) -> bool {
    name.ends_with("running_mean")
        || name.ends_with("running_var")
        || name.ends_with("num_batches_tracked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plane_transforms_are_eight_distinct_invertible_maps() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 2.0 * 9.0, &dev)
            .unwrap()
            .reshape((1, 2, 3, 3))
            .unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut seen = Vec::new();
        for i in 0..8u8 {
            let t = PlaneTransform {
                transpose: i & 1 == 1,
                flip_h: i & 2 == 2,
                flip_w: i & 4 == 4,
            };
            let y = t.apply(&x).unwrap();
            assert_eq!(flat(&t.invert(&y).unwrap()), flat(&x), "{t:?}");
            seen.push(flat(&y));
        }
        // the identity leaves x alone, and the eight images differ
        assert_eq!(seen[0], flat(&x));
        for a in 0..8 {
            for b in a + 1..8 {
                assert_ne!(seen[a], seen[b], "{a} {b}");
            }
        }
        // a quarter turn: transpose then flip rows, element (0, 0) of
        // channel 0 comes from element (2, 0)
        let t = PlaneTransform {
            transpose: true,
            flip_h: true,
            flip_w: false,
        };
        let y = t.apply(&x).unwrap();
        let v = y.get(0).unwrap().get(0).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(
            v,
            vec![
                vec![2.0, 5.0, 8.0],
                vec![1.0, 4.0, 7.0],
                vec![0.0, 3.0, 6.0]
            ]
        );
        // non-square planes are never transposed
        let mut src = NoiseSource::new(3);
        assert!((0..50).all(|_| !src.plane_transform(false).transpose));
        assert!((0..50).any(|_| src.plane_transform(true).transpose));
    }
}
