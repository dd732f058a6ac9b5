//! Co-teaching (Han et al. 2018; PyMIC `NLLCoTeaching`), per pixel.
//!
//! For each step, with networks `f1` (the student) and `f2`, the per-pixel
//! cross-entropies `l1`, `l2` on the noisy labels, and the keep rate
//! `R(t) = 1 - forget_rate * min(1, (t / gradual)^exponent)`:
//! 1. `m2` = the `R(t)` fraction of pixels with the smallest `l2`, `m1`
//!    likewise (with `per_class`, the fraction is taken within each class of
//!    the noisy label);
//! 2. `f1` learns from the pixels its peer kept: `mean(l1 over m2)`, and `f2`
//!    from `mean(l2 over m1)`;
//! 3. minimise the sum; validation and inference use `f1`.

use super::pixels::{
    batch_labels, masked_mean, pixel_ce, small_loss_mask, small_loss_mask_per_class,
};
use crate::error::{LearnError, Result};
use crate::learner::{trainable_vars, LearnerInit};
use crate::semi::{Section, SemiMethod, SemiStep, Unsup};
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use medseg_config::SemiConfig;
use medseg_nets::{NetOutput, SegNetwork};
use serde::Deserialize;

/// `noisy.params` of Co-teaching; every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoTeachingParams {
    /// Largest fraction of pixels dropped (the estimated noise rate, default 0.2).
    pub forget_rate: f64,
    /// Fraction of the iterations over which the forget rate grows (default 0.1).
    pub gradual: f64,
    /// Exponent of the growth (default 1, linear).
    pub exponent: f64,
    /// Select the small-loss fraction within each class of the noisy label
    /// (default `false`: over all pixels, as PyMIC).
    pub per_class: bool,
}

impl Default for CoTeachingParams {
    fn default() -> Self {
        CoTeachingParams {
            forget_rate: 0.2,
            gradual: 0.1,
            exponent: 1.0,
            per_class: false,
        }
    }
}

impl CoTeachingParams {
    /// The keep rate `R(t)` at iteration `it` of `iterations`.
    pub fn keep_rate(&self, it: usize, iterations: usize) -> f64 {
        let g = self.gradual * iterations as f64;
        let frac = if g <= 0.0 {
            1.0
        } else {
            (it as f64 / g).powf(self.exponent).min(1.0)
        };
        1.0 - self.forget_rate * frac
    }
}

/// Co-teaching of the student and a peer (seed + 1, saved as `net2`).
pub struct CoTeaching {
    p: CoTeachingParams,
    ignore: u32,
    varmap2: VarMap,
    net2: Box<dyn SegNetwork>,
}

impl SemiMethod for CoTeaching {
    type Params = CoTeachingParams;
    const SECTIONS: &'static [Section] = &[Section::Noisy];

    fn new(p: CoTeachingParams, _: &SemiConfig, init: &LearnerInit) -> Result<Self> {
        if !(0.0..1.0).contains(&p.forget_rate) || !(0.0..=1.0).contains(&p.gradual) {
            return Err(LearnError::Config(format!(
                "noisy.params: forget_rate must be in [0, 1) and gradual in [0, 1], got {} and {}",
                p.forget_rate, p.gradual
            )));
        }
        let (varmap2, net2) = init.build_network(1)?;
        Ok(CoTeaching {
            p,
            ignore: u32::from(init.config.dataset.ignore_label),
            varmap2,
            net2,
        })
    }

    fn supervised(&self, s: &SemiStep, out: &NetOutput) -> candle_core::Result<Tensor> {
        let labels = batch_labels(s)?;
        let o2 = s.forward(self.net2.as_ref(), &s.x)?.logits;
        let (l1, valid) = pixel_ce(&out.logits, labels, self.ignore)?;
        let (l2, _) = pixel_ce(&o2, labels, self.ignore)?;
        let keep = self.p.keep_rate(s.ctx.iteration, s.ctx.iterations);
        let (m1, m2) = if self.p.per_class {
            (
                small_loss_mask_per_class(&l1, &valid, labels, keep)?,
                small_loss_mask_per_class(&l2, &valid, labels, keep)?,
            )
        } else {
            (
                small_loss_mask(&l1, &valid, keep)?,
                small_loss_mask(&l2, &valid, keep)?,
            )
        };
        masked_mean(&l1, &m2)? + masked_mean(&l2, &m1)?
    }

    fn unsupervised(&mut self, s: &SemiStep, out: &NetOutput) -> candle_core::Result<Unsup> {
        let keep = self.p.keep_rate(s.ctx.iteration, s.ctx.iterations);
        let mut u = Unsup::zero(&out.logits)?;
        u.terms.push(("keep".into(), keep));
        Ok(u)
    }

    fn extra_params(&self) -> Vec<(String, Var)> {
        trainable_vars(&self.varmap2, "net2.").unwrap_or_default()
    }

    fn extra_varmaps(&self) -> Vec<(String, VarMap)> {
        vec![("net2".into(), self.varmap2.clone())]
    }
}
