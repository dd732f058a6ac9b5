//! Mutual consistency (Wu et al. 2021; PyMIC `SSLMCNet`).
//!
//! On an `MCNet` (three decoders), for each step:
//! 1. `sup` = the sum of the configured loss of every decoder on the labelled images;
//! 2. `unsup = sum_{i != j} MSE(p_i, sg(sharpen(p_j)))` on all images, with
//!    `sharpen(p) = p^{1/T} / sum_c p^{1/T}`.

use super::{mse, softmax_c, sum_all, SemiMethod, SemiStep, Unsup};
use crate::error::{LearnError, Result};
use crate::learner::LearnerInit;
use candle_core::Tensor;
use medseg_config::SemiConfig;
use medseg_nets::NetOutput;
use serde::Deserialize;

/// `semi.params` of MC-Net.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McNetParams {
    /// Sharpening temperature `T` (default 0.1).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
}

fn default_temperature() -> f64 {
    0.1
}

impl Default for McNetParams {
    fn default() -> Self {
        McNetParams {
            temperature: default_temperature(),
        }
    }
}

/// MC-Net on an `MCNet`.
pub struct McNet {
    temperature: f64,
}

/// `p^{1/T} / sum_c p^{1/T}`, computed stably from logits as `softmax(z / T)`.
pub fn sharpen_logits(logits: &Tensor, t: f64) -> candle_core::Result<Tensor> {
    softmax_c(&(logits / t)?)
}

/// The main output followed by the other decoders'.
fn decoders(out: &NetOutput) -> candle_core::Result<Vec<&Tensor>> {
    if out.aux.is_empty() {
        candle_core::bail!("MCNet needs a network with several decoders (MCNet)")
    }
    Ok(std::iter::once(&out.logits).chain(&out.aux).collect())
}

impl SemiMethod for McNet {
    type Params = McNetParams;
    const NETWORKS: &'static [&'static str] = &["MCNet"];

    fn new(p: McNetParams, _: &SemiConfig, _: &LearnerInit) -> Result<Self> {
        if !(p.temperature > 0.0 && p.temperature.is_finite()) {
            return Err(LearnError::Config(format!(
                "semi.params.temperature must be > 0, got {}",
                p.temperature
            )));
        }
        Ok(McNet {
            temperature: p.temperature,
        })
    }

    fn supervised(&self, s: &SemiStep, out: &NetOutput) -> candle_core::Result<Tensor> {
        let sups = decoders(out)?
            .into_iter()
            .map(|o| s.sup_loss(s.labelled(o)?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        sum_all(sups)
    }

    fn unsupervised(&mut self, _: &SemiStep, out: &NetOutput) -> candle_core::Result<Unsup> {
        let outputs = decoders(out)?;
        let probs: Vec<Tensor> = outputs
            .iter()
            .map(|o| softmax_c(o))
            .collect::<candle_core::Result<_>>()?;
        let sharp: Vec<Tensor> = outputs
            .iter()
            .map(|o| Ok(sharpen_logits(o, self.temperature)?.detach()))
            .collect::<candle_core::Result<_>>()?;
        let mut pairs = Vec::new();
        for (i, p) in probs.iter().enumerate() {
            for (j, q) in sharp.iter().enumerate() {
                if i != j {
                    pairs.push(mse(p, q)?);
                }
            }
        }
        Ok(Unsup::loss(sum_all(pairs)?))
    }
}
