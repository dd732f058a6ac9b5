//! Entropy minimisation (Grandvalet & Bengio; PyMIC `SSLEntropyMinimization`).

use super::{
    consistency_weight, forward_split, joint_forward, joint_input, rows, scalar, semi_config,
    softmax_c, sup_loss,
};
use crate::engine::{Learner, StepContext, StepOutput};
use crate::error::Result;
use candle_core::Tensor;
use medseg_config::{ExperimentConfig, SemiConfig};

/// Supervised loss on the labelled images plus the weighted mean normalised
/// entropy `-sum_c p_c log(p_c + 1e-5) / ln C` of every prediction
/// (labelled and unlabelled), as PyMIC's `EntropyLoss`.
pub struct EntropyMinLearner {
    semi: SemiConfig,
}

impl EntropyMinLearner {
    /// Reads the `[semi]` section of `cfg`.
    pub fn new(cfg: &ExperimentConfig) -> Result<Self> {
        Ok(Self {
            semi: semi_config(cfg)?.clone(),
        })
    }
}

/// Mean over pixels of the channel entropy divided by `ln C`.
pub(crate) fn normalised_entropy(logits: &Tensor) -> candle_core::Result<Tensor> {
    let c = logits.dim(1)? as f64;
    let p = softmax_c(logits)?;
    let e = (&p * (&p + 1e-5)?.log()?)?.sum_keepdim(1)?;
    e.mean_all()? * (-1.0 / c.ln())
}

impl Learner for EntropyMinLearner {
    fn name(&self) -> &str {
        "EntropyMinimization"
    }

    fn needs_unlabelled(&self) -> bool {
        true
    }

    fn train_step(&mut self, ctx: &StepContext) -> candle_core::Result<StepOutput> {
        let (x, n0) = joint_input(ctx)?;
        let out = forward_split(ctx.net, &x, n0, joint_forward(&self.semi))?;
        let sup = sup_loss(ctx, rows(&out.logits, 0, n0)?)?;
        let reg = normalised_entropy(&out.logits)?;
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
