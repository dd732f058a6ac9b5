//! Cross-consistency training (Ouali et al. 2020; PyMIC `SSLCCT`).
//!
//! On a `CCTNet` (a main decoder and auxiliary decoders on perturbed
//! features), for each step: the supervised loss on the main decoder's
//! labelled output, and `unsup = mean_k D(aux_k(x_u), sg(main(x_u)))` with
//! `D` the MSE of softmaxes or KL(main || aux).

use super::{mse, softmax_c, sum_all, SemiMethod, SemiStep, Unsup};
use crate::error::Result;
use crate::learner::LearnerInit;
use candle_core::Tensor;
use medseg_config::SemiConfig;
use medseg_nets::NetOutput;
use serde::Deserialize;

/// CCT's consistency between an auxiliary and the main decoder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum CctConsistency {
    /// Mean squared difference of the softmaxes (the default).
    #[default]
    #[serde(rename = "MSE")]
    Mse,
    /// KL(main || aux) per pixel, averaged.
    #[serde(rename = "KL")]
    Kl,
}

/// `semi.params` of CCT.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CctParams {
    /// `"MSE"` (default) or `"KL"`.
    #[serde(default)]
    pub unsupervised_loss: CctConsistency,
}

/// CCT on a `CCTNet`.
pub struct Cct {
    kind: CctConsistency,
}

/// KL(p || softmax(logits)) per pixel, averaged over pixels.
fn kl_to(p: &Tensor, logits: &Tensor) -> candle_core::Result<Tensor> {
    let logq = candle_nn::ops::log_softmax(logits, 1)?;
    let logp = (p + 1e-10)?.log()?;
    (p * (logp - logq)?)?.sum_keepdim(1)?.mean_all()
}

impl SemiMethod for Cct {
    type Params = CctParams;
    const NETWORKS: &'static [&'static str] = &["CCTNet"];

    fn new(p: CctParams, _: &SemiConfig, _: &LearnerInit) -> Result<Self> {
        Ok(Cct {
            kind: p.unsupervised_loss,
        })
    }

    fn unsupervised(&mut self, s: &SemiStep, out: &NetOutput) -> candle_core::Result<Unsup> {
        if out.aux.is_empty() {
            candle_core::bail!("CCT needs a network with auxiliary decoders (CCTNet)")
        }
        let p1 = softmax_c(&s.unlabelled(&out.logits)?)?.detach();
        let per_decoder = out
            .aux
            .iter()
            .map(|a| {
                let a1 = s.unlabelled(a)?;
                match self.kind {
                    CctConsistency::Kl => kl_to(&p1, &a1),
                    CctConsistency::Mse => mse(&softmax_c(&a1)?, &p1),
                }
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Unsup::loss((sum_all(per_decoder)? / out.aux.len() as f64)?))
    }
}
