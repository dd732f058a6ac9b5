//! Uncertainty-aware Mean Teacher (Yu et al. 2019; PyMIC `SSLUncertaintyAwareMeanTeacher`).
//!
//! For each step, with `f` the student and `g` the teacher:
//! 1. `p_s = softmax(f(x_u))`, `p_t = softmax(g(x_u + n))`;
//! 2. the teacher runs `T` more times with dropout and noise; the
//!    uncertainty `u` is the entropy of the mean softmax;
//! 3. `unsup = sum(m (p_s - p_t)^2) / (2 sum(m) + 1e-16)` with the mask
//!    `m = [u < (0.75 + 0.25 r(t)) ln C]`, `r` the sigmoid ramp;
//! 4. after the optimiser step, the teacher's EMA update.

use super::{softmax_c, SemiMethod, SemiStep, Unsup};
use crate::error::{LearnError, Result};
use crate::learner::{scalar, LearnerInit, StepContext};
use crate::semi::{NoiseSource, PlaneTransform};
use crate::teacher::Teacher;
use candle_core::Tensor;
use candle_nn::VarMap;
use medseg_config::SemiConfig;
use medseg_nets::NetOutput;
use serde::Deserialize;

/// `semi.params` of UA-MT.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UaMtParams {
    /// Std of the clipped Gaussian noise on the teacher's inputs (default 0.1).
    #[serde(default = "default_noise")]
    pub noise_std: f64,
    /// Monte-Carlo dropout passes `T` (default 8, even).
    #[serde(default = "default_mc")]
    pub mc_dropout_n: f64,
}

fn default_noise() -> f64 {
    0.1
}
fn default_mc() -> f64 {
    8.0
}

impl Default for UaMtParams {
    fn default() -> Self {
        UaMtParams {
            noise_std: default_noise(),
            mc_dropout_n: default_mc(),
        }
    }
}

/// UA-MT: Mean Teacher whose consistency is masked by the teacher's uncertainty.
pub struct UaMt {
    ema_decay: f64,
    teacher: Teacher,
    noise: NoiseSource,
    noise_std: f64,
    mc_n: usize,
}

impl UaMt {
    /// The teacher.
    pub fn teacher(&self) -> &Teacher {
        &self.teacher
    }
}

impl SemiMethod for UaMt {
    type Params = UaMtParams;

    fn new(p: UaMtParams, semi: &SemiConfig, init: &LearnerInit) -> Result<Self> {
        let mc = p.mc_dropout_n;
        if !(mc >= 2.0 && mc.fract() == 0.0 && (mc as usize) % 2 == 0) {
            return Err(LearnError::Config(format!(
                "semi.params.mc_dropout_n must be an even integer >= 2, got {mc}"
            )));
        }
        Ok(UaMt {
            ema_decay: semi.ema_decay,
            teacher: Teacher::new(init)?,
            noise: NoiseSource::new(init.config.training.seed ^ 0x0a_a47),
            noise_std: p.noise_std,
            mc_n: mc as usize,
        })
    }

    fn unsupervised(&mut self, s: &SemiStep, out: &NetOutput) -> candle_core::Result<Unsup> {
        let p1 = softmax_c(&s.unlabelled(&out.logits)?)?;
        let x1 = s.x_unlabelled()?;
        let (std, clip) = (self.noise_std, 2.0 * self.noise_std);
        let x1n = (&x1 + self.noise.clipped_gaussian(&x1, std, clip)?)?;
        let p1_t = softmax_c(&self.teacher.predict(&x1n, true)?)?;
        let sq = (&p1 - &p1_t)?.sqr()?;

        McDropout {
            teacher: &self.teacher,
            n: self.mc_n,
            std,
        }
        .masked_consistency(
            &mut self.noise,
            &x1,
            &PlaneTransform::default(),
            &sq,
            s.ramp(),
        )
    }

    fn after_update(&mut self, ctx: &StepContext) -> candle_core::Result<()> {
        self.teacher.update_at(ctx.iteration, self.ema_decay)
    }

    fn extra_varmaps(&self) -> Vec<(String, VarMap)> {
        vec![("teacher".into(), self.teacher.varmap().clone())]
    }
}

/// The teacher's Monte-Carlo dropout passes that estimate its uncertainty
/// (UA-MT, USTM): `n` noisy predictions, run as `n / 2` passes of a doubled
/// batch.
pub struct McDropout<'a> {
    /// The teacher.
    pub teacher: &'a Teacher,
    /// Number of predictions (even).
    pub n: usize,
    /// Std of the clipped Gaussian input noise (clipped to ±2 std).
    pub std: f64,
}

impl McDropout<'_> {
    /// `[u < threshold]` per pixel `[N, 1, ...]`, `u` the entropy of the mean
    /// softmax of the teacher's `n` predictions on `tf(x) + noise`, mapped
    /// back with `tf`'s inverse.
    pub fn certain_mask(
        &self,
        noise: &mut NoiseSource,
        x: &Tensor,
        tf: &PlaneTransform,
        threshold: f64,
    ) -> candle_core::Result<Tensor> {
        let n1 = x.dim(0)?;
        let (std, clip) = (self.std, 2.0 * self.std);
        let xt = tf.apply(x)?;
        let mut mean_p: Option<Tensor> = None;
        for _ in 0..self.n / 2 {
            let xr = Tensor::cat(&[&xt, &xt], 0)?;
            let xr = (&xr + noise.clipped_gaussian(&xr, std, clip)?)?;
            let pr = softmax_c(&tf.invert(&self.teacher.predict(&xr, true)?)?)?;
            let sum = (pr.narrow(0, 0, n1)? + pr.narrow(0, n1, n1)?)?;
            mean_p = Some(match mean_p {
                None => sum,
                Some(m) => (m + sum)?,
            });
        }
        let mean_p =
            (mean_p.ok_or_else(|| candle_core::Error::Msg("no MC pass".into()))? / self.n as f64)?;
        let unc = (&mean_p * (&mean_p + 1e-6)?.log()?)?
            .sum_keepdim(1)?
            .neg()?;
        unc.lt(threshold)?.to_dtype(x.dtype())
    }
}

impl McDropout<'_> {
    /// UA-MT's term from the squared error `sq` `[N, C, ...]` of student and
    /// teacher: `sum(m sq) / (2 sum(m) + 1e-16)` with the certainty mask of
    /// [`McDropout::certain_mask`] at the threshold `(0.75 + 0.25 ramp) ln C`;
    /// logs the fraction of certain pixels as `certain`.
    pub fn masked_consistency(
        &self,
        noise: &mut NoiseSource,
        x: &Tensor,
        tf: &PlaneTransform,
        sq: &Tensor,
        ramp: f64,
    ) -> candle_core::Result<Unsup> {
        let c = sq.dim(1)? as f64;
        let threshold = (0.75 + 0.25 * ramp) * c.ln();
        let mask = self.certain_mask(noise, x, tf, threshold)?;
        let (masked, denom) = masked_sq_parts(sq, &mask)?;
        Ok(Unsup {
            loss: (masked / denom)?,
            extra_sup: None,
            terms: vec![("certain".into(), scalar(&mask.mean_all()?)?)],
        })
    }
}

/// The masked mean squared error of UA-MT as numerator and denominator:
/// `sum(mask * sq)` and `2 sum(mask) + 1e-16` (the mask covers one channel,
/// the squared error all of them; PyMIC and SSL4MIS divide by twice the mask).
pub fn masked_sq_parts(sq: &Tensor, mask: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let masked = sq.broadcast_mul(mask)?.sum_all()?;
    let denom = ((mask.sum_all()? * 2.0)? + 1e-16)?;
    Ok((masked, denom))
}
