//! Entropy minimisation (Grandvalet & Bengio; PyMIC `SSLEntropyMinimization`).
//!
//! For each step: `unsup = H(softmax(f(x)))`, the mean normalised entropy of
//! the student's prediction on every image of the batch, labelled and
//! unlabelled (in `[weak]`: the scribbled images, PyMIC's `WSLEntropyMinimization`).

use super::{softmax_c, NoParams, Section, SemiMethod, SemiStep, Unsup};
use crate::error::Result;
use crate::learner::LearnerInit;
use candle_core::Tensor;
use medseg_config::SemiConfig;
use medseg_nets::NetOutput;

/// Entropy minimisation: the weighted mean normalised entropy
/// `-sum_c p_c log(p_c + 1e-5) / ln C` of every prediction, as PyMIC's
/// `EntropyLoss`.
pub struct EntropyMinimization;

/// Mean over pixels of the channel entropy divided by `ln C`.
pub fn normalised_entropy(logits: &Tensor) -> candle_core::Result<Tensor> {
    let c = logits.dim(1)? as f64;
    let p = softmax_c(logits)?;
    let e = (&p * (&p + 1e-5)?.log()?)?.sum_keepdim(1)?;
    e.mean_all()? * (-1.0 / c.ln())
}

impl SemiMethod for EntropyMinimization {
    type Params = NoParams;
    // with scribbles: pCE + entropy minimisation of every prediction
    const SECTIONS: &'static [Section] = &[Section::Semi, Section::Weak];

    fn new(_: NoParams, _: &SemiConfig, _: &LearnerInit) -> Result<Self> {
        Ok(EntropyMinimization)
    }

    fn unsupervised(&mut self, _: &SemiStep, out: &NetOutput) -> candle_core::Result<Unsup> {
        Ok(Unsup::loss(normalised_entropy(&out.logits)?))
    }
}
