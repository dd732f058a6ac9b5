//! Uncertainty-aware self-ensembling with transformation consistency (Liu et
//! al. 2022; PyMIC `WSLUSTM`): a mean teacher of the scribble-supervised
//! network.
//!
//! For each step, with `f` the student, `g` the teacher and `T` one of the
//! eight flips/right-angle rotations drawn per step:
//! 1. `sup` = pCE of `f(x)` on the scribbles;
//! 2. `p_t = T^{-1} softmax(g(T x + n))`, `n` clipped Gaussian noise;
//! 3. the teacher's uncertainty `u`: entropy of the mean of `mc_dropout_n`
//!    noisy predictions (mapped back by `T^{-1}`);
//! 4. `unsup = sum(m (softmax(f(x)) - p_t)^2) / (2 sum(m) + 1e-16)`,
//!    `m = [u < (0.75 + 0.25 r(t)) ln C]`;
//! 5. after the optimiser step, `g = d g + (1 - d) f`.

use crate::error::{LearnError, Result};
use crate::learner::{LearnerInit, StepContext};
use crate::semi::{
    non_negative, softmax_c, McDropout, NoiseSource, Section, SemiMethod, SemiStep, Unsup,
};
use crate::teacher::Teacher;
use candle_nn::VarMap;
use medseg_config::SemiConfig;
use medseg_nets::NetOutput;
use serde::Deserialize;

/// `weak.params` of USTM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UstmParams {
    /// Std of the clipped Gaussian noise on the teacher's input (default 0.1).
    #[serde(default = "default_noise")]
    pub noise_std: f64,
    /// Monte-Carlo passes of the teacher for its uncertainty (default 8, even).
    #[serde(default = "default_mc")]
    pub mc_dropout_n: usize,
    /// Transform the teacher's input (default `true`; `false` is UA-MT on scribbles).
    #[serde(default = "yes")]
    pub transform: bool,
}

fn default_noise() -> f64 {
    0.1
}
fn default_mc() -> usize {
    8
}
fn yes() -> bool {
    true
}

impl Default for UstmParams {
    fn default() -> Self {
        UstmParams {
            noise_std: default_noise(),
            mc_dropout_n: default_mc(),
            transform: true,
        }
    }
}

/// USTM.
pub struct Ustm {
    p: UstmParams,
    ema_decay: f64,
    teacher: Teacher,
    noise: NoiseSource,
}

impl Ustm {
    /// The teacher.
    pub fn teacher(&self) -> &Teacher {
        &self.teacher
    }
}

impl SemiMethod for Ustm {
    type Params = UstmParams;
    const SECTIONS: &'static [Section] = &[Section::Weak];

    fn new(p: UstmParams, semi: &SemiConfig, init: &LearnerInit) -> Result<Self> {
        non_negative("weak.params.noise_std", p.noise_std)?;
        if p.mc_dropout_n < 2 || p.mc_dropout_n % 2 != 0 {
            return Err(LearnError::Config(format!(
                "weak.params.mc_dropout_n must be an even integer >= 2, got {}",
                p.mc_dropout_n
            )));
        }
        Ok(Ustm {
            ema_decay: semi.ema_decay,
            teacher: Teacher::new(init)?,
            noise: NoiseSource::new(init.config.training.seed ^ 0x573a),
            p,
        })
    }

    fn unsupervised(&mut self, s: &SemiStep, out: &NetOutput) -> candle_core::Result<Unsup> {
        let x = &s.x;
        let r = x.rank();
        let square = x.dim(r - 1)? == x.dim(r - 2)?;
        let tf = if self.p.transform {
            self.noise.plane_transform(square)
        } else {
            Default::default()
        };
        let std = self.p.noise_std;
        let xt = tf.apply(x)?;
        let xn = (&xt + self.noise.clipped_gaussian(&xt, std, 2.0 * std)?)?;
        let p_t = softmax_c(&tf.invert(&self.teacher.predict(&xn, true)?)?)?;
        let p_s = softmax_c(&out.logits)?;
        let sq = (&p_s - &p_t)?.sqr()?;
        McDropout {
            teacher: &self.teacher,
            n: self.p.mc_dropout_n,
            std,
        }
        .masked_consistency(&mut self.noise, x, &tf, &sq, s.ramp())
    }

    fn after_update(&mut self, ctx: &StepContext) -> candle_core::Result<()> {
        self.teacher.update_at(ctx.iteration, self.ema_decay)
    }

    fn extra_varmaps(&self) -> Vec<(String, VarMap)> {
        vec![("teacher".into(), self.teacher.varmap().clone())]
    }
}
