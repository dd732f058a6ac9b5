//! Divergence-aware selective training (Yang et al. 2022; PyMIC `NLLDAST`),
//! on a dual-decoder network, from a few clean images (`dataset.train_csv`)
//! and many noisy ones (`dataset.train_noisy_csv`).
//!
//! For each step, with the clean decoder `f0`, the noisy decoder `f1`, the
//! clean batch `(x0, y0)` and the noisy batch `(x1, y1)`:
//! 1. `sup = (L(f0(x0), y0) + L(f1(x1), y1)) / 2`;
//! 2. on the noisy batch, `p0 = softmax f0(x1)`, `p1 = softmax f1(x1)`, the
//!    divergence `v = (KL(p0 || p1) + KL(p1 || p0)) / 2` per pixel, and the
//!    criteria `c_n = mean(CE(p0, y1) e^{-16 v})`, `c_c = mean(CE(p1, y1) e^{-16 v})`,
//!    each ranked among its last `rank_length` values;
//! 3. when `c_n < c_c`: if `c_c` ranks in the top `select_ratio`, add
//!    `w_dbc(t) v̄` (divergence-based consistency); if `c_n` ranks in the
//!    bottom `select_ratio` (or the queue is still filling), add
//!    `w_st(t) mean|p0 - sharpen((onehot f0 + onehot f1 + y1) / 3)|`
//!    (supplementary training on a mixed pseudo label, sharpened at T = 0.5);
//! 4. `w(t)` are the weights times the `[noisy]` sigmoid ramp-up.

use crate::error::{LearnError, Result};
use crate::learner::{scalar, Learner, LearnerInit, StepContext, StepOutput};
use crate::ramp::sigmoid_rampup;
use crate::semi::{method_params, softmax_c, Section};
use candle_core::{DType, Tensor};
use medseg_config::SemiConfig;
use medseg_losses::Prediction;
use serde::Deserialize;
use std::collections::VecDeque;

/// `noisy.params` of DAST; every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DastParams {
    /// Length of the queues that rank the criteria (default 20).
    pub rank_length: usize,
    /// Fraction of the queue that counts as "top" or "bottom" (default 0.2).
    pub select_ratio: f64,
    /// Weight of the divergence-based consistency (default 0.1).
    pub dbc_w: f64,
    /// Weight of the supplementary training (default 0.1).
    pub st_w: f64,
}

impl Default for DastParams {
    fn default() -> Self {
        DastParams {
            rank_length: 20,
            select_ratio: 0.2,
            dbc_w: 0.1,
            st_w: 0.1,
        }
    }
}

/// The rank of each new value among the last `length` values.
#[derive(Debug, Clone)]
pub struct Rank {
    length: usize,
    values: VecDeque<f64>,
}

impl Rank {
    /// An empty queue of `length` values.
    pub fn new(length: usize) -> Self {
        Rank {
            length,
            values: VecDeque::with_capacity(length + 1),
        }
    }

    /// Adds `v`; returns `None` while the queue is filling, then the number
    /// of the other queued values below `v` (0 = smallest, `length - 1` = largest).
    pub fn add(&mut self, v: f64) -> Option<usize> {
        if self.values.len() < self.length {
            self.values.push_back(v);
            return None;
        }
        self.values.pop_front();
        self.values.push_back(v);
        Some(self.values.iter().rev().skip(1).filter(|&&x| x < v).count())
    }
}

/// DAST on a `DualDecoderUNet`.
pub struct Dast {
    section: SemiConfig,
    p: DastParams,
    noisy_rank: Rank,
    clean_rank: Rank,
}

impl Dast {
    /// Reads `[noisy]`; the network must have two decoders.
    pub fn new(init: &LearnerInit) -> Result<Self> {
        let section = Section::Noisy.of(init.config)?.clone();
        init.require_network("noisy.method = \"DAST\"", &["DualDecoderUNet", "DBNet"])?;
        let (_, p) = method_params::<DastParams>("noisy", "DAST", &section)?;
        if p.rank_length == 0 || !(0.0..=1.0).contains(&p.select_ratio) {
            return Err(LearnError::Config(format!(
                "noisy.params: rank_length must be >= 1 and select_ratio in [0, 1], got {} and {}",
                p.rank_length, p.select_ratio
            )));
        }
        Ok(Dast {
            noisy_rank: Rank::new(p.rank_length),
            clean_rank: Rank::new(p.rank_length),
            section,
            p,
        })
    }
}

/// One-hot `[N, C, ...]` of a class map `[N, 1, ...]`.
fn one_hot(labels: &Tensor, c: usize, like: &Tensor) -> candle_core::Result<Tensor> {
    let mut shape = vec![1, c];
    shape.extend(std::iter::repeat_n(1, labels.rank() - 2));
    let classes = Tensor::arange(0u32, c as u32, labels.device())?.reshape(shape)?;
    labels
        .to_dtype(DType::U32)?
        .broadcast_eq(&classes)?
        .to_dtype(like.dtype())
}

/// `sum_c y (ln y - ln x)` per pixel, `[N, ...]`.
fn kl_map(x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    (y * ((y + 1e-16)?.log()? - (x + 1e-16)?.log()?)?)?.sum(1)
}

/// `-sum_c y ln(0.999 p + 5e-4)` per pixel.
fn soft_ce(p: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    (y * p.affine(0.999, 5e-4)?.log()?)?.sum(1)?.neg()
}

impl Learner for Dast {
    fn name(&self) -> &str {
        "DAST"
    }

    fn needs_noisy(&self) -> bool {
        true
    }

    fn train_step(&mut self, ctx: &StepContext) -> candle_core::Result<StepOutput> {
        let noisy = ctx
            .noisy
            .ok_or_else(|| candle_core::Error::Msg("no noisy batch was loaded".into()))?;
        let y1 = noisy
            .labels
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("DAST needs noisy labels".into()))?;
        let n0 = ctx.labelled.image.dim(0)?;
        let n1 = noisy.image.dim(0)?;
        let x = Tensor::cat(&[&ctx.labelled.image, &noisy.image], 0)?;
        let out = ctx.net.forward_t(&x, true)?;
        let b1 = out.aux.first().ok_or_else(|| {
            candle_core::Error::Msg("DAST needs a network with two decoders".into())
        })?;
        let b0_x0 = out.logits.narrow(0, 0, n0)?;
        let b0_x1 = out.logits.narrow(0, n0, n1)?;
        let b1_x1 = b1.narrow(0, n0, n1)?;
        let sup_cl = ctx
            .loss
            .forward(&Prediction::logits(b0_x0), &ctx.labelled.target)?;
        let sup_no = ctx
            .loss
            .forward(&Prediction::logits(b1_x1.clone()), &noisy.target)?;
        let sup = ((&sup_cl + &sup_no)? * 0.5)?;

        let t = ctx.iterations as f64;
        let ramp = sigmoid_rampup(
            ctx.iteration as f64,
            self.section.rampup_start * t,
            self.section.rampup_end * t,
        );
        let p1 = softmax_c(&b1_x1)?;
        let p0 = softmax_c(&b0_x1)?;
        let c = p0.dim(1)?;
        let y1h = one_hot(y1, c, &p0)?;
        // the selection criterion, without gradients
        let (d0, d1) = (p0.detach(), p1.detach());
        let v = ((kl_map(&d1, &d0)? + kl_map(&d0, &d1)?)? * 0.5)?;
        let ev = (v * -16.0)?.exp()?;
        let loss_n = scalar(&(soft_ce(&d0, &y1h)? * &ev)?.mean_all()?)?;
        let loss_c = scalar(&(soft_ce(&d1, &y1h)? * &ev)?.mean_all()?)?;
        let rank_n = self.noisy_rank.add(loss_n);
        let rank_c = self.clean_rank.add(loss_c);
        let len = self.p.rank_length as f64;
        let ratio = self.p.select_ratio;
        let mut loss = sup.clone();
        let (mut dbc_v, mut st_v) = (0.0, 0.0);
        if loss_n < loss_c {
            if rank_c.is_some_and(|r| r as f64 >= len * (1.0 - ratio)) {
                let dbc = ((kl_map(&p1, &d0)?.mean_all()? + kl_map(&p0, &d1)?.mean_all()?)? * 0.5)?;
                dbc_v = scalar(&dbc)?;
                loss = (loss + (dbc * (self.p.dbc_w * ramp))?)?;
            }
            if rank_n.is_none_or(|r| r as f64 <= len * ratio) {
                let l0 = one_hot(&d0.argmax_keepdim(1)?, c, &p0)?;
                let l1 = one_hot(&d1.argmax_keepdim(1)?, c, &p0)?;
                let pseudo = (((l0 + l1)? + &y1h)? / 3.0)?;
                // sharpen at T = 0.5: p^2 / (p^2 + (1 - p)^2)
                let a = pseudo.sqr()?;
                let b = pseudo.affine(-1.0, 1.0)?.sqr()?;
                let sharp = (&a / (&a + &b)?)?;
                let st = (&p0 - sharp)?.abs()?.mean_all()?;
                st_v = scalar(&st)?;
                loss = (loss + (st * (self.p.st_w * ramp))?)?;
            }
        }
        Ok(StepOutput {
            terms: vec![
                ("sup".into(), scalar(&sup_cl)?),
                ("sup_noisy".into(), scalar(&sup_no)?),
                ("dbc".into(), dbc_v),
                ("st".into(), st_v),
                ("ramp".into(), ramp),
            ],
            loss,
        })
    }
}
