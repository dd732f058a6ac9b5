//! Uncertainty-rectified pyramid consistency (Luo et al. 2021; PyMIC `SSLURPC`).
//!
//! On a `URPC` network (main logits plus pyramid heads, all at the input
//! size), for each step:
//! 1. `sup` = the mean of the configured loss over the main and pyramid
//!    outputs on the labelled images;
//! 2. with `p_i = 0.99 softmax_i + 0.005` and `p̄ = 0.99 mean_i softmax_i + 0.005`
//!    on the unlabelled images, and `v_i = sum_c p̄ (ln p̄ - ln p_i)` the
//!    per-pixel KL(p̄ || p_i): `unsup = mean_i [ mean((p̄ - p_i)^2 e^{-v_i}) /
//!    (mean(e^{-v_i}) + 1e-8) + mean(v_i) ]`.

use super::{softmax_c, sum_all, NoParams, SemiMethod, SemiStep, Unsup};
use crate::error::Result;
use crate::learner::LearnerInit;
use candle_core::Tensor;
use medseg_config::SemiConfig;
use medseg_nets::NetOutput;

/// URPC on a `URPC` network.
pub struct Urpc;

/// The main output followed by the auxiliary ones.
fn all_outputs(out: &NetOutput) -> candle_core::Result<Vec<&Tensor>> {
    if out.aux.is_empty() {
        candle_core::bail!("URPC needs a network with pyramid outputs (URPC)")
    }
    Ok(std::iter::once(&out.logits).chain(&out.aux).collect())
}

impl SemiMethod for Urpc {
    type Params = NoParams;
    const NETWORKS: &'static [&'static str] = &["URPC"];

    fn new(_: NoParams, _: &SemiConfig, _: &LearnerInit) -> Result<Self> {
        Ok(Urpc)
    }

    fn supervised(&self, s: &SemiStep, out: &NetOutput) -> candle_core::Result<Tensor> {
        let outputs = all_outputs(out)?;
        let k = outputs.len() as f64;
        let sups = outputs
            .iter()
            .map(|o| s.sup_loss(s.labelled(o)?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        sum_all(sups)? / k
    }

    fn unsupervised(&mut self, s: &SemiStep, out: &NetOutput) -> candle_core::Result<Unsup> {
        let outputs = all_outputs(out)?;
        let k = outputs.len() as f64;
        let soft: Vec<Tensor> = outputs
            .iter()
            .map(|o| softmax_c(&s.unlabelled(o)?))
            .collect::<candle_core::Result<_>>()?;
        let avg = (Tensor::stack(&soft, 0)?.mean(0)? * 0.99)?.affine(1.0, 0.005)?;
        let log_avg = avg.log()?;
        let per_output = soft
            .iter()
            .map(|sm| {
                let p = sm.affine(0.99, 0.005)?;
                let var = (&avg * (&log_avg - p.log()?)?)?.sum_keepdim(1)?;
                let ev = var.neg()?.exp()?;
                let sq = (&avg - &p)?.sqr()?;
                (sq.broadcast_mul(&ev)?.mean_all()? / (ev.mean_all()? + 1e-8)?)? + var.mean_all()?
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Unsup::loss((sum_all(per_output)? / k)?))
    }
}
