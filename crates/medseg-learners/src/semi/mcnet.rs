//! Mutual consistency (Wu et al. 2021; PyMIC `SSLMCNet`).

use super::{
    consistency_weight, forward_split, joint_forward, joint_input, mse, param_f64, rows, scalar,
    semi_config, softmax_c, sup_loss,
};
use crate::engine::{Learner, StepContext, StepOutput};
use crate::error::{LearnError, Result};
use candle_core::Tensor;
use medseg_config::{ExperimentConfig, SemiConfig};

/// MC-Net on an `MCNet` (three decoders): the sum of the supervised losses of
/// every decoder on the labelled images, plus the weighted sum over ordered
/// pairs `i != j` of `MSE(p_i, sharpen(p_j))` on all images, where
/// `sharpen(p) = p^{1/T} / sum_c p^{1/T}` (`T = semi.params.temperature`,
/// default 0.1) is a detached pseudo label.
pub struct McNetLearner {
    semi: SemiConfig,
    temperature: f64,
}

impl McNetLearner {
    /// Reads the `[semi]` section of `cfg`.
    pub fn new(cfg: &ExperimentConfig) -> Result<Self> {
        let semi = semi_config(cfg)?.clone();
        let temperature = param_f64(&semi, "temperature", 0.1)?;
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(LearnError::Config(format!(
                "semi.params.temperature must be > 0, got {temperature}"
            )));
        }
        Ok(Self { semi, temperature })
    }
}

/// `p^{1/T} / sum_c p^{1/T}`, computed stably from logits as `softmax(z / T)`.
pub(crate) fn sharpen_logits(logits: &Tensor, t: f64) -> candle_core::Result<Tensor> {
    softmax_c(&(logits / t)?)
}

impl Learner for McNetLearner {
    fn name(&self) -> &str {
        "MCNet"
    }

    fn needs_unlabelled(&self) -> bool {
        true
    }

    fn train_step(&mut self, ctx: &StepContext) -> candle_core::Result<StepOutput> {
        let (x, n0) = joint_input(ctx)?;
        let out = forward_split(ctx.net, &x, n0, joint_forward(&self.semi))?;
        if out.aux.is_empty() {
            candle_core::bail!("MCNet needs a network with several decoders (MCNet)")
        }
        let mut outputs = vec![out.logits];
        outputs.extend(out.aux);
        let mut sup: Option<Tensor> = None;
        for o in &outputs {
            let l = sup_loss(ctx, rows(o, 0, n0)?)?;
            sup = Some(match sup {
                None => l,
                Some(s) => (s + l)?,
            });
        }
        let sup = sup.expect("non-empty");
        let probs: Vec<Tensor> = outputs
            .iter()
            .map(softmax_c)
            .collect::<candle_core::Result<_>>()?;
        let sharp: Vec<Tensor> = outputs
            .iter()
            .map(|o| Ok(sharpen_logits(o, self.temperature)?.detach()))
            .collect::<candle_core::Result<_>>()?;
        let mut reg: Option<Tensor> = None;
        for (i, p) in probs.iter().enumerate() {
            for (j, s) in sharp.iter().enumerate() {
                if i != j {
                    let l = mse(p, s)?;
                    reg = Some(match reg {
                        None => l,
                        Some(r) => (r + l)?,
                    });
                }
            }
        }
        let reg = reg.expect("three decoders");
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
