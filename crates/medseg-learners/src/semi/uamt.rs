//! Uncertainty-aware Mean Teacher (Yu et al. 2019; PyMIC `SSLUncertaintyAwareMeanTeacher`).

use super::{
    consistency_weight, forward_split, joint_forward, joint_input, param_f64, rows, scalar,
    semi_config, softmax_c, sup_loss, NoiseSource, StudentSlot, Teacher,
};
use crate::ema_decay_at;
use crate::engine::{Learner, StepContext, StepOutput};
use crate::error::{LearnError, Result};
use crate::ramp::sigmoid_rampup;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use medseg_config::{ExperimentConfig, SemiConfig};

/// UA-MT: Mean Teacher whose consistency is masked by the teacher's
/// uncertainty. The teacher runs `T` times (`semi.params.mc_dropout_n`,
/// default 8, even) with dropout and input noise; the uncertainty is the
/// entropy of the mean softmax; pixels with uncertainty below
/// `(0.75 + 0.25 r(t)) ln C` (r the sigmoid ramp) count in
/// `sum(mask * (p_s - p_t)^2) / (2 sum(mask) + 1e-16)`.
pub struct UaMtLearner {
    semi: SemiConfig,
    teacher: Teacher,
    noise: NoiseSource,
    noise_std: f64,
    mc_n: usize,
}

impl UaMtLearner {
    /// Builds the teacher; `student` must be bound before the first step.
    pub fn new(cfg: &ExperimentConfig, device: &Device, student: StudentSlot) -> Result<Self> {
        let semi = semi_config(cfg)?.clone();
        let noise_std = param_f64(&semi, "noise_std", 0.1)?;
        let mc = param_f64(&semi, "mc_dropout_n", 8.0)?;
        if !(mc >= 2.0 && mc.fract() == 0.0 && (mc as usize) % 2 == 0) {
            return Err(LearnError::Config(format!(
                "semi.params.mc_dropout_n must be an even integer >= 2, got {mc}"
            )));
        }
        Ok(Self {
            teacher: Teacher::new(cfg, device, student)?,
            noise: NoiseSource::new(cfg.training.seed ^ 0x0a_a47),
            noise_std,
            mc_n: mc as usize,
            semi,
        })
    }

    /// The teacher.
    pub fn teacher(&self) -> &Teacher {
        &self.teacher
    }
}

impl Learner for UaMtLearner {
    fn name(&self) -> &str {
        "UAMT"
    }

    fn needs_unlabelled(&self) -> bool {
        true
    }

    fn train_step(&mut self, ctx: &StepContext) -> candle_core::Result<StepOutput> {
        let (x, n0) = joint_input(ctx)?;
        let n = x.dim(0)?;
        let n1 = n - n0;
        let out = forward_split(ctx.net, &x, n0, joint_forward(&self.semi))?;
        let sup = sup_loss(ctx, rows(&out.logits, 0, n0)?)?;
        let p1 = softmax_c(&rows(&out.logits, n0, n1)?)?;
        let x1 = rows(&x, n0, n1)?;
        let (std, clip) = (self.noise_std, 2.0 * self.noise_std);
        let x1n = (&x1 + self.noise.clipped_gaussian(&x1, std, clip)?)?;
        let p1_t = softmax_c(&self.teacher.predict(&x1n, true)?)?;
        let sq = (&p1 - &p1_t)?.sqr()?;

        // Monte-Carlo dropout: T/2 passes of a doubled batch
        let mut mean_p: Option<Tensor> = None;
        for _ in 0..self.mc_n / 2 {
            let xr = Tensor::cat(&[&x1, &x1], 0)?;
            let xr = (&xr + self.noise.clipped_gaussian(&xr, std, clip)?)?;
            let pr = softmax_c(&self.teacher.predict(&xr, true)?)?;
            let s = (rows(&pr, 0, n1)? + rows(&pr, n1, n1)?)?;
            mean_p = Some(match mean_p {
                None => s,
                Some(m) => (m + s)?,
            });
        }
        let mean_p = (mean_p.expect("mc_n >= 2") / self.mc_n as f64)?;
        let unc = (&mean_p * (&mean_p + 1e-6)?.log()?)?
            .sum_keepdim(1)?
            .neg()?;
        let t = ctx.iterations as f64;
        let r = sigmoid_rampup(
            ctx.iteration as f64,
            self.semi.rampup_start * t,
            self.semi.rampup_end * t,
        );
        let c = out.logits.dim(1)? as f64;
        let threshold = (0.75 + 0.25 * r) * c.ln();
        let mask = unc.lt(threshold)?.to_dtype(sq.dtype())?;
        let masked = sq.broadcast_mul(&mask)?.sum_all()?;
        // the mask covers one channel; the squared error all C of them
        let denom = ((mask.sum_all()? * 2.0)? + 1e-16)?;
        let reg = (masked / denom)?;
        let w = consistency_weight(&self.semi, ctx.iteration, ctx.iterations);
        let loss = (&sup + (&reg * w)?)?;
        Ok(StepOutput {
            terms: vec![
                ("sup".into(), scalar(&sup)?),
                ("unsup".into(), scalar(&reg)?),
                ("weight".into(), w),
                ("certain".into(), scalar(&mask.mean_all()?)?),
            ],
            loss,
        })
    }

    fn after_update(&mut self, ctx: &StepContext) -> candle_core::Result<()> {
        self.teacher
            .update(ema_decay_at(ctx.iteration, self.semi.ema_decay))
    }

    fn extra_varmaps(&self) -> Vec<(String, VarMap)> {
        vec![("teacher".into(), self.teacher.varmap().clone())]
    }
}
