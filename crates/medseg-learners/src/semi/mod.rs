//! Semi-supervised learning: a few labelled and many unlabelled images.
//!
//! [`SemiLearner`] does what every method shares, once: it loads a labelled
//! and an unlabelled batch, runs the student over both (one joint pass as in
//! PyMIC and SSL4MIS, or one pass per part with
//! `semi.params.joint_forward = false`), applies the configured supervised
//! loss (with deep supervision when the network has it) to the labelled
//! part, and adds `w(t) * unsup` where `w(t) = semi.regularize_w *
//! sigmoid_rampup(t, rampup_start * T, rampup_end * T)`
//! ([`consistency_weight`]). The logged terms are `sup`, `unsup` (the
//! unweighted unsupervised loss) and `weight`, and any a method adds.
//!
//! A method ([`SemiMethod`]) supplies only its unsupervised term and its
//! typed parameters, read from `semi.params` with unknown keys rejected:
//!
//! | `semi.method` | method | network |
//! |---|---|---|
//! | `EntropyMinimization` (`EM`) | [`EntropyMinimization`] | any |
//! | `MeanTeacher` (`MT`) | [`MeanTeacher`] | any |
//! | `UAMT` | [`UaMt`] | any (with dropout) |
//! | `CCT` | [`Cct`] | `CCTNet` |
//! | `CPS` | [`Cps`] | any (a second copy is trained) |
//! | `URPC` | [`Urpc`] | `URPC` |
//! | `MCNet` | [`McNet`] | `MCNet` |
//!
//! Adding a method is one file implementing [`SemiMethod`] and one line
//! [`LearnerRegistry::register_semi`](crate::LearnerRegistry::register_semi).

mod cct;
mod cps;
mod em;
mod mcnet;
mod mean_teacher;
mod perturb;
mod uamt;
mod urpc;

pub use cct::{Cct, CctParams};
pub use cps::Cps;
pub use em::{normalised_entropy, EntropyMinimization};
pub use mcnet::{sharpen_logits, McNet, McNetParams};
pub use mean_teacher::{MeanTeacher, MeanTeacherParams};
pub use perturb::{NoiseSource, PlaneTransform};
pub use uamt::{masked_sq_parts, McDropout, UaMt, UaMtParams};
pub use urpc::Urpc;

use crate::error::{LearnError, Result};
use crate::learner::{scalar, Learner, LearnerInit, StepContext, StepOutput};
use crate::ramp::sigmoid_rampup;
use crate::registry::LearnerRegistry;
use crate::supervised::supervised_loss;
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use medseg_config::{ExperimentConfig, SemiConfig};
use medseg_losses::{LossTarget, Prediction};
use medseg_nets::{NetOutput, SegNetwork};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Registers the built-in methods under their `semi.method` names.
pub(crate) fn register_builtins(r: &mut LearnerRegistry) {
    r.register_semi::<EntropyMinimization>("EntropyMinimization");
    r.register_semi::<EntropyMinimization>("EM");
    r.register_semi::<MeanTeacher>("MeanTeacher");
    r.register_semi::<MeanTeacher>("MT");
    r.register_semi::<UaMt>("UAMT");
    r.register_semi::<Cct>("CCT");
    r.register_semi::<Cps>("CPS");
    r.register_semi::<Urpc>("URPC");
    r.register_semi::<McNet>("MCNet");
}

/// The parameters of a method that takes none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// The configuration section a method reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `[semi]`: semi-supervised learning (a labelled and an unlabelled batch).
    Semi,
    /// `[weak]`: weakly supervised learning (scribbled images only).
    Weak,
    /// `[noisy]`: learning from noisy labels.
    Noisy,
}

impl Section {
    /// The section's name in a config file.
    pub fn name(self) -> &'static str {
        match self {
            Section::Semi => "semi",
            Section::Weak => "weak",
            Section::Noisy => "noisy",
        }
    }

    /// The section of `cfg`, or an error naming it.
    pub fn of(self, cfg: &ExperimentConfig) -> Result<&SemiConfig> {
        match self {
            Section::Semi => cfg.semi.as_ref(),
            Section::Weak => cfg.weak.as_ref(),
            Section::Noisy => cfg.noisy.as_ref(),
        }
        .ok_or_else(|| LearnError::Config(format!("the [{}] section is missing", self.name())))
    }
}

/// One method with a regularisation term: its typed parameters and its
/// unsupervised term. Everything else is [`SemiLearner`]'s. In `[semi]` a
/// method sees a labelled and an unlabelled batch; in `[weak]` the scribbled
/// batch alone (no unlabelled rows: [`SemiStep::n_unlabelled`] is 0).
pub trait SemiMethod: Sized + Send + 'static {
    /// The sections the method can be configured in, tried in this order
    /// (the default: `[semi]` only).
    const SECTIONS: &'static [Section] = &[Section::Semi];

    /// The method's parameters, read from `semi.params` (less the common
    /// `joint_forward`); use `#[serde(deny_unknown_fields)]` and defaults
    /// for every field, so that a misspelt key is an error naming it.
    type Params: DeserializeOwned + Default;

    /// Networks the method needs (`network.name`); empty: any.
    const NETWORKS: &'static [&'static str] = &[];

    /// Builds the method (checking parameter values, building a teacher or
    /// a peer network through `init`).
    fn new(params: Self::Params, semi: &SemiConfig, init: &LearnerInit) -> Result<Self>;

    /// The unlabelled images the student sees, when they differ from the
    /// loaded ones (noise, a flip); `None` (the default) keeps them.
    fn student_unlabelled(&mut self, _x_u: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(None)
    }

    /// The supervised loss from the student's output on the whole batch;
    /// the default is the configured loss (with deep supervision) on the
    /// labelled rows of the main output ([`SemiStep::supervised`]).
    fn supervised(&self, step: &SemiStep, out: &NetOutput) -> candle_core::Result<Tensor> {
        step.supervised(out)
    }

    /// The unsupervised term from the student's output on the whole batch
    /// (labelled rows first, then unlabelled).
    fn unsupervised(&mut self, step: &SemiStep, out: &NetOutput) -> candle_core::Result<Unsup>;

    /// Called after the optimiser step (a teacher's EMA update).
    fn after_update(&mut self, _ctx: &StepContext) -> candle_core::Result<()> {
        Ok(())
    }

    /// Trainable parameters besides the student's (a peer network).
    fn extra_params(&self) -> Vec<(String, Var)> {
        Vec::new()
    }

    /// Extra weights to save with checkpoints, by suffix.
    fn extra_varmaps(&self) -> Vec<(String, VarMap)> {
        Vec::new()
    }
}

/// What a method's unsupervised part returns.
pub struct Unsup {
    /// The unweighted unsupervised loss (logged as `unsup`).
    pub loss: Tensor,
    /// A supervised loss of the method's own (a peer network's), added
    /// unweighted to the student's and logged under its name after `sup`.
    pub extra_sup: Option<(String, Tensor)>,
    /// Further values to log, after `weight`.
    pub terms: Vec<(String, f64)>,
}

impl Unsup {
    /// No unsupervised term (a method whose whole loss is its supervised
    /// part): a scalar zero of `like`'s type and device.
    pub fn zero(like: &Tensor) -> candle_core::Result<Self> {
        Ok(Unsup::loss(Tensor::zeros((), like.dtype(), like.device())?))
    }

    /// Just an unsupervised loss.
    pub fn loss(loss: Tensor) -> Self {
        Unsup {
            loss,
            extra_sup: None,
            terms: Vec::new(),
        }
    }
}

/// One step of a semi-supervised learner, as a method sees it.
pub struct SemiStep<'a> {
    /// The engine's step context (iteration, networks, loss, batches).
    pub ctx: &'a StepContext<'a>,
    /// The `[semi]` section.
    pub semi: &'a SemiConfig,
    /// The loaded images, labelled rows first then unlabelled (as loaded,
    /// before any perturbation of the student's view).
    pub x: Tensor,
    /// Number of labelled rows.
    pub n_labelled: usize,
    /// Number of unlabelled rows.
    pub n_unlabelled: usize,
    /// One joint pass (`true`) or one pass per part.
    pub joint: bool,
}

impl SemiStep<'_> {
    /// The labelled rows of a batch tensor (images or outputs).
    pub fn labelled(&self, t: &Tensor) -> candle_core::Result<Tensor> {
        t.narrow(0, 0, self.n_labelled)
    }

    /// The unlabelled rows of a batch tensor.
    pub fn unlabelled(&self, t: &Tensor) -> candle_core::Result<Tensor> {
        t.narrow(0, self.n_labelled, self.n_unlabelled)
    }

    /// The loaded unlabelled images.
    pub fn x_unlabelled(&self) -> candle_core::Result<Tensor> {
        self.unlabelled(&self.x)
    }

    /// A network's training-mode output on `x` (labelled rows first), in
    /// one pass or two as configured ([`forward_split`]).
    pub fn forward(&self, net: &dyn SegNetwork, x: &Tensor) -> candle_core::Result<NetOutput> {
        forward_split(net, x, self.n_labelled, self.joint)
    }

    /// The configured supervised loss on the labelled rows of `out`: its
    /// main logits, with its deep-supervision outputs when it has them.
    pub fn supervised(&self, out: &NetOutput) -> candle_core::Result<Tensor> {
        let rows = NetOutput {
            logits: self.labelled(&out.logits)?,
            deep: out
                .deep
                .iter()
                .map(|d| self.labelled(d))
                .collect::<candle_core::Result<_>>()?,
            aux: Vec::new(),
        };
        supervised_loss(self.ctx.loss, &rows, &self.ctx.labelled.target)
    }

    /// The configured supervised loss of labelled logits alone.
    pub fn sup_loss(&self, logits_l: Tensor) -> candle_core::Result<Tensor> {
        self.ctx
            .loss
            .forward(&Prediction::logits(logits_l), &self.ctx.labelled.target)
    }

    /// The configured loss of `logits` against the hard pseudo labels
    /// `argmax(probs)` (detached).
    pub fn pseudo_label_loss(&self, logits: Tensor, probs: &Tensor) -> candle_core::Result<Tensor> {
        let labels = probs.detach().argmax_keepdim(1)?;
        self.ctx
            .loss
            .forward(&Prediction::logits(logits), &LossTarget::class_map(labels))
    }

    /// The sigmoid ramp `r(t)` in [0, 1] of this iteration.
    pub fn ramp(&self) -> f64 {
        let t = self.ctx.iterations as f64;
        sigmoid_rampup(
            self.ctx.iteration as f64,
            self.semi.rampup_start * t,
            self.semi.rampup_end * t,
        )
    }

    /// The weight `w(t)` of the unsupervised term at this iteration.
    pub fn weight(&self) -> f64 {
        consistency_weight(self.semi, self.ctx.iteration, self.ctx.iterations)
    }
}

/// The generic semi-supervised learner around a [`SemiMethod`].
pub struct SemiLearner<M: SemiMethod> {
    name: String,
    semi: SemiConfig,
    joint: bool,
    unlabelled: bool,
    method: M,
}

impl<M: SemiMethod> SemiLearner<M> {
    /// Reads the method's section (`[semi]` or `[weak]`) of the
    /// configuration, checks the common settings and the network, parses
    /// `M`'s parameters and builds `M`.
    pub fn new(name: &str, init: &LearnerInit) -> Result<Self> {
        let sec = M::SECTIONS
            .iter()
            .copied()
            .find(|s| s.of(init.config).is_ok())
            .ok_or_else(|| {
                LearnError::Config(format!(
                    "{name} needs a {} section",
                    M::SECTIONS
                        .iter()
                        .map(|s| format!("[{}]", s.name()))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ))
            })?;
        let section = sec.name();
        let semi = sec.of(init.config)?.clone();
        check_semi(section, &semi)?;
        init.require_network(&format!("{section}.method = \"{name}\""), M::NETWORKS)?;
        let (joint, params) = method_params::<M::Params>(section, name, &semi)?;
        let method = M::new(params, &semi, init)?;
        Ok(SemiLearner {
            name: name.to_string(),
            semi,
            joint,
            unlabelled: sec == Section::Semi,
            method,
        })
    }

    /// The method.
    pub fn method(&self) -> &M {
        &self.method
    }
}

impl<M: SemiMethod> Learner for SemiLearner<M> {
    fn name(&self) -> &str {
        &self.name
    }

    fn needs_unlabelled(&self) -> bool {
        self.unlabelled
    }

    fn extra_params(&self) -> Vec<(String, Var)> {
        self.method.extra_params()
    }

    fn extra_varmaps(&self) -> Vec<(String, VarMap)> {
        self.method.extra_varmaps()
    }

    fn after_update(&mut self, ctx: &StepContext) -> candle_core::Result<()> {
        self.method.after_update(ctx)
    }

    fn train_step(&mut self, ctx: &StepContext) -> candle_core::Result<StepOutput> {
        let (x, n_unlabelled) = if self.unlabelled {
            let u = ctx
                .unlabelled
                .ok_or_else(|| candle_core::Error::Msg("no unlabelled batch was loaded".into()))?;
            (
                Tensor::cat(&[&ctx.labelled.image, &u.image], 0)?,
                u.image.dim(0)?,
            )
        } else {
            (ctx.labelled.image.clone(), 0)
        };
        let step = SemiStep {
            ctx,
            semi: &self.semi,
            x,
            n_labelled: ctx.labelled.image.dim(0)?,
            n_unlabelled,
            joint: self.joint,
        };
        let student_x = if self.unlabelled {
            match self.method.student_unlabelled(&step.x_unlabelled()?)? {
                Some(xu) => Tensor::cat(&[&ctx.labelled.image, &xu], 0)?,
                None => step.x.clone(),
            }
        } else {
            step.x.clone()
        };
        let out = step.forward(ctx.net, &student_x)?;
        let sup = self.method.supervised(&step, &out)?;
        let un = self.method.unsupervised(&step, &out)?;
        let w = step.weight();
        let mut terms = vec![("sup".to_string(), scalar(&sup)?)];
        let sup_total = match &un.extra_sup {
            Some((name, extra)) => {
                terms.push((name.clone(), scalar(extra)?));
                (&sup + extra)?
            }
            None => sup,
        };
        let loss = (&sup_total + (&un.loss * w)?)?;
        terms.push(("unsup".into(), scalar(&un.loss)?));
        terms.push(("weight".into(), w));
        terms.extend(un.terms);
        Ok(StepOutput { loss, terms })
    }
}

/// The `[semi]` section, or an error naming it.
pub fn semi_config(cfg: &ExperimentConfig) -> Result<&SemiConfig> {
    Section::Semi.of(cfg)
}

/// The consistency weight at iteration `it` of `iterations`:
/// `regularize_w * sigmoid_rampup(it, rampup_start * iterations, rampup_end * iterations)`.
pub fn consistency_weight(semi: &SemiConfig, it: usize, iterations: usize) -> f64 {
    let t = iterations as f64;
    semi.regularize_w * sigmoid_rampup(it as f64, semi.rampup_start * t, semi.rampup_end * t)
}

/// Splits `semi.params` into the common `joint_forward` (default `true`)
/// and the method's typed parameters; errors name the key and the method.
pub(crate) fn method_params<P: DeserializeOwned>(
    section: &str,
    method: &str,
    semi: &SemiConfig,
) -> Result<(bool, P)> {
    let mut map = semi.params.clone();
    let joint = match map.remove("joint_forward") {
        None => true,
        Some(v) => v.as_bool().ok_or_else(|| {
            LearnError::Config(format!(
                "{section}.params.joint_forward must be true or false, got {v}"
            ))
        })?,
    };
    let params = serde_json::from_value(serde_json::Value::Object(map.clone())).map_err(|e| {
        // serde names an unknown key but not the key of a wrong type: find
        // it by reading each key alone (every parameter has a default)
        let key = map
            .iter()
            .find(|(k, v)| {
                let one = serde_json::Map::from_iter([((*k).clone(), (*v).clone())]);
                serde_json::from_value::<P>(serde_json::Value::Object(one)).is_err()
            })
            .map(|(k, _)| format!("{section}.params.{k}: "))
            .unwrap_or_default();
        LearnError::Config(format!(
            "{section}.params of {method}: {key}{e} (every method also takes `joint_forward`)"
        ))
    })?;
    Ok((joint, params))
}

fn check_semi(section: &str, semi: &SemiConfig) -> Result<()> {
    if !(semi.regularize_w.is_finite() && semi.regularize_w >= 0.0) {
        return Err(LearnError::Config(format!(
            "{section}.regularize_w must be >= 0, got {}",
            semi.regularize_w
        )));
    }
    if !(0.0..=1.0).contains(&semi.rampup_start)
        || !(0.0..=1.0).contains(&semi.rampup_end)
        || semi.rampup_end < semi.rampup_start
    {
        return Err(LearnError::Config(format!(
            "{section}.rampup_start ({}) and {section}.rampup_end ({}) must be fractions of the iterations with start <= end",
            semi.rampup_start, semi.rampup_end
        )));
    }
    if !(0.0..1.0).contains(&semi.ema_decay) {
        return Err(LearnError::Config(format!(
            "{section}.ema_decay must be in [0, 1), got {}",
            semi.ema_decay
        )));
    }
    Ok(())
}

/// A number that must be finite and `>= 0`, or an error naming `key`
/// (the dotted key, e.g. `semi.params.noise_std`).
pub fn non_negative(key: &str, v: f64) -> Result<f64> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(LearnError::Config(format!("{key} must be >= 0, got {v}")))
    }
}

/// The network's training-mode output on `x`, the labelled images (the first
/// `n0` rows) followed by the unlabelled ones. With `joint` (PyMIC's and
/// SSL4MIS' way) it is one forward pass, so BatchNorm normalises both parts
/// with shared batch statistics; otherwise two passes, one per part, whose
/// outputs are concatenated along the batch axis in the same order.
pub fn forward_split(
    net: &dyn SegNetwork,
    x: &Tensor,
    n0: usize,
    joint: bool,
) -> candle_core::Result<NetOutput> {
    let n = x.dim(0)?;
    if joint || n0 == 0 || n0 == n {
        return net.forward_t(x, true);
    }
    let a = net.forward_t(&x.narrow(0, 0, n0)?, true)?;
    let b = net.forward_t(&x.narrow(0, n0, n - n0)?, true)?;
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

/// Softmax over the channel axis.
pub fn softmax_c(x: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::softmax(x, 1)
}

/// Mean squared difference over every element.
pub fn mse(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    (a - b)?.sqr()?.mean_all()
}

/// The sum of a non-empty list of scalar tensors, added left to right.
pub fn sum_all(terms: Vec<Tensor>) -> candle_core::Result<Tensor> {
    let mut it = terms.into_iter();
    let first = it
        .next()
        .ok_or_else(|| candle_core::Error::Msg("nothing to add".into()))?;
    it.try_fold(first, |acc, t| acc + t)
}
