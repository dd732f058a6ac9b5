//! Uncertainty-rectified pyramid consistency (Luo et al. 2021; PyMIC `SSLURPC`).

use super::{
    consistency_weight, forward_split, joint_forward, joint_input, rows, scalar, semi_config,
    softmax_c, sup_loss,
};
use crate::engine::{Learner, StepContext, StepOutput};
use crate::error::Result;
use candle_core::Tensor;
use medseg_config::{ExperimentConfig, SemiConfig};

/// URPC on a `URPC` network (main logits plus pyramid heads in `aux`, all at
/// the input size). Supervised loss: the mean of the configured loss over
/// the main and pyramid outputs on the labelled images. Unsupervised loss,
/// on the unlabelled images, with `p_i = 0.99 softmax_i + 0.005` and
/// `p̄ = 0.99 mean_i softmax_i + 0.005`: the mean over outputs of
/// `mean((p̄ - p_i)^2 e^{-v_i}) / (mean(e^{-v_i}) + 1e-8) + mean(v_i)` where
/// `v_i = sum_c p̄ (ln p̄ - ln p_i)` is the per-pixel KL(p̄ || p_i).
pub struct UrpcLearner {
    semi: SemiConfig,
}

impl UrpcLearner {
    /// Reads the `[semi]` section of `cfg`.
    pub fn new(cfg: &ExperimentConfig) -> Result<Self> {
        Ok(Self {
            semi: semi_config(cfg)?.clone(),
        })
    }
}

impl Learner for UrpcLearner {
    fn name(&self) -> &str {
        "URPC"
    }

    fn needs_unlabelled(&self) -> bool {
        true
    }

    fn train_step(&mut self, ctx: &StepContext) -> candle_core::Result<StepOutput> {
        let (x, n0) = joint_input(ctx)?;
        let n = x.dim(0)?;
        let out = forward_split(ctx.net, &x, n0, joint_forward(&self.semi))?;
        if out.aux.is_empty() {
            candle_core::bail!("URPC needs a network with pyramid outputs (URPC)")
        }
        let mut outputs = vec![out.logits];
        outputs.extend(out.aux);
        let k = outputs.len() as f64;
        let mut sup: Option<Tensor> = None;
        for o in &outputs {
            let l = sup_loss(ctx, rows(o, 0, n0)?)?;
            sup = Some(match sup {
                None => l,
                Some(s) => (s + l)?,
            });
        }
        let sup = (sup.expect("non-empty") / k)?;
        let soft: Vec<Tensor> = outputs
            .iter()
            .map(|o| softmax_c(&rows(o, n0, n - n0)?))
            .collect::<candle_core::Result<_>>()?;
        let avg = (Tensor::stack(&soft, 0)?.mean(0)? * 0.99)?.affine(1.0, 0.005)?;
        let log_avg = avg.log()?;
        let mut reg: Option<Tensor> = None;
        for s in &soft {
            let p = s.affine(0.99, 0.005)?;
            let var = (&avg * (&log_avg - p.log()?)?)?.sum_keepdim(1)?;
            let ev = var.neg()?.exp()?;
            let sq = (&avg - &p)?.sqr()?;
            let li = ((sq.broadcast_mul(&ev)?.mean_all()? / (ev.mean_all()? + 1e-8)?)?
                + var.mean_all()?)?;
            reg = Some(match reg {
                None => li,
                Some(r) => (r + li)?,
            });
        }
        let reg = (reg.expect("non-empty") / k)?;
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
