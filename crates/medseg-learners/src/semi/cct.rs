//! Cross-consistency training (Ouali et al. 2020; PyMIC `SSLCCT`).

use super::{
    consistency_weight, forward_split, joint_forward, joint_input, mse, rows, scalar, semi_config,
    softmax_c, sup_loss,
};
use crate::engine::{Learner, StepContext, StepOutput};
use crate::error::{LearnError, Result};
use candle_core::Tensor;
use medseg_config::{ExperimentConfig, SemiConfig};

/// CCT on a `CCTNet`: supervised loss on the main decoder's labelled output,
/// plus the weighted mean over auxiliary (perturbed) decoders of the
/// consistency between their softmax and the main decoder's detached softmax
/// on the unlabelled images: MSE (default) or KL(main || aux)
/// (`semi.params.unsupervised_loss = "MSE" | "KL"`).
pub struct CctLearner {
    semi: SemiConfig,
    kl: bool,
}

impl CctLearner {
    /// Reads the `[semi]` section of `cfg`.
    pub fn new(cfg: &ExperimentConfig) -> Result<Self> {
        let semi = semi_config(cfg)?.clone();
        let kl = match semi.params.get("unsupervised_loss") {
            None => false,
            Some(v) => match v.as_str() {
                Some("MSE") => false,
                Some("KL") => true,
                _ => {
                    return Err(LearnError::Config(format!(
                        "semi.params.unsupervised_loss must be \"MSE\" or \"KL\", got {v}"
                    )))
                }
            },
        };
        Ok(Self { semi, kl })
    }
}

/// KL(p || softmax(logits)) per pixel, averaged over pixels.
fn kl_to(p: &Tensor, logits: &Tensor) -> candle_core::Result<Tensor> {
    let logq = candle_nn::ops::log_softmax(logits, 1)?;
    let logp = (p + 1e-10)?.log()?;
    (p * (logp - logq)?)?.sum_keepdim(1)?.mean_all()
}

impl Learner for CctLearner {
    fn name(&self) -> &str {
        "CCT"
    }

    fn needs_unlabelled(&self) -> bool {
        true
    }

    fn train_step(&mut self, ctx: &StepContext) -> candle_core::Result<StepOutput> {
        let (x, n0) = joint_input(ctx)?;
        let n = x.dim(0)?;
        let out = forward_split(ctx.net, &x, n0, joint_forward(&self.semi))?;
        if out.aux.is_empty() {
            candle_core::bail!("CCT needs a network with auxiliary decoders (CCTNet)")
        }
        let sup = sup_loss(ctx, rows(&out.logits, 0, n0)?)?;
        let p1 = softmax_c(&rows(&out.logits, n0, n - n0)?)?.detach();
        let mut reg: Option<Tensor> = None;
        for a in &out.aux {
            let a1 = rows(a, n0, n - n0)?;
            let l = if self.kl {
                kl_to(&p1, &a1)?
            } else {
                mse(&softmax_c(&a1)?, &p1)?
            };
            reg = Some(match reg {
                None => l,
                Some(r) => (r + l)?,
            });
        }
        let reg = (reg.expect("non-empty") / out.aux.len() as f64)?;
        let w = consistency_weight(&self.semi, ctx.iteration, ctx.iterations);
        let loss = (&sup + (&reg * w)?)?;
        Ok(StepOutput {
            terms: vec![
                ("sup".into(), scalar(&sup)?),
                ("unsup".into(), scalar(&reg)?),
                ("weight".into(), w),
            ],
            loss,
        })
    }
}
