//! Mean Teacher (Tarvainen & Valpola 2017; PyMIC `SSLMeanTeacher`), with the
//! teacher updated in place by an exact exponential moving average.
//!
//! For each step, with `f` the student and `g` the teacher:
//! 1. the student sees the unlabelled images `x_u`, optionally with noise of
//!    its own and a flip/right-angle rotation `T` (transform consistency);
//! 2. `unsup = MSE(softmax(T^{-1} f(T x_u)), softmax(g(x_u + n)))`, `n`
//!    clipped Gaussian noise;
//! 3. after the optimiser step, `g = d g + (1 - d) f` with
//!    `d = min(1 - 1/(t + 1), ema_decay)`.

use super::{
    mse, non_negative, softmax_c, NoiseSource, PlaneTransform, SemiMethod, SemiStep, Unsup,
};
use crate::error::Result;
use crate::learner::{LearnerInit, StepContext};
use crate::teacher::Teacher;
use candle_core::Tensor;
use candle_nn::VarMap;
use medseg_config::SemiConfig;
use medseg_nets::NetOutput;
use serde::Deserialize;

/// `semi.params` of Mean Teacher.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeanTeacherParams {
    /// Std of the clipped Gaussian noise on the teacher's input (default
    /// 0.1, clipped to ±2 std).
    #[serde(default = "default_noise")]
    pub noise_std: f64,
    /// Noise of its own on the student's unlabelled input (default 0, as in
    /// PyMIC and SSL4MIS), so that student and teacher see independently
    /// perturbed copies, as in Tarvainen & Valpola.
    #[serde(default)]
    pub student_noise_std: f64,
    /// The teacher normalises with its batch's statistics and applies
    /// dropout (default `true`, PyMIC's and SSL4MIS' choice); `false`
    /// predicts in eval mode (running statistics, no dropout).
    #[serde(default = "yes")]
    pub teacher_batch_stats: bool,
    /// The student sees its unlabelled images flipped and/or rotated by a
    /// multiple of 90 degrees (one of the eight, drawn per step; rotations
    /// only for square images) and its prediction is mapped back before the
    /// comparison (Li et al., TCSM). Default `false`.
    #[serde(default)]
    pub transform_consistency: bool,
}

fn default_noise() -> f64 {
    0.1
}
fn yes() -> bool {
    true
}

impl Default for MeanTeacherParams {
    fn default() -> Self {
        MeanTeacherParams {
            noise_std: default_noise(),
            student_noise_std: 0.0,
            teacher_batch_stats: true,
            transform_consistency: false,
        }
    }
}

/// Mean Teacher.
pub struct MeanTeacher {
    p: MeanTeacherParams,
    ema_decay: f64,
    teacher: Teacher,
    noise: NoiseSource,
    /// The transform of the student's view in this step.
    tf: PlaneTransform,
}

impl MeanTeacher {
    /// The teacher.
    pub fn teacher(&self) -> &Teacher {
        &self.teacher
    }
}

impl SemiMethod for MeanTeacher {
    type Params = MeanTeacherParams;

    fn new(p: MeanTeacherParams, semi: &SemiConfig, init: &LearnerInit) -> Result<Self> {
        non_negative("semi.params.noise_std", p.noise_std)?;
        non_negative("semi.params.student_noise_std", p.student_noise_std)?;
        Ok(MeanTeacher {
            p,
            ema_decay: semi.ema_decay,
            teacher: Teacher::new(init)?,
            noise: NoiseSource::new(init.config.training.seed ^ 0x7ea_c4e5),
            tf: PlaneTransform::default(),
        })
    }

    fn student_unlabelled(&mut self, x_u: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let x = if self.p.student_noise_std > 0.0 {
            let s = self.p.student_noise_std;
            (x_u + self.noise.clipped_gaussian(x_u, s, 2.0 * s)?)?
        } else {
            x_u.clone()
        };
        self.tf = if self.p.transform_consistency {
            let r = x.rank();
            let square = x.dim(r - 1)? == x.dim(r - 2)?;
            self.noise.plane_transform(square)
        } else {
            PlaneTransform::default()
        };
        Ok(Some(self.tf.apply(&x)?))
    }

    fn unsupervised(&mut self, s: &SemiStep, out: &NetOutput) -> candle_core::Result<Unsup> {
        let p1 = softmax_c(&self.tf.invert(&s.unlabelled(&out.logits)?)?)?;
        let x1 = s.x_unlabelled()?;
        let std = self.p.noise_std;
        let x1n = (&x1 + self.noise.clipped_gaussian(&x1, std, 2.0 * std)?)?;
        let p1_t = softmax_c(&self.teacher.predict(&x1n, self.p.teacher_batch_stats)?)?;
        Ok(Unsup::loss(mse(&p1, &p1_t)?))
    }

    fn after_update(&mut self, ctx: &StepContext) -> candle_core::Result<()> {
        self.teacher.update_at(ctx.iteration, self.ema_decay)
    }

    fn extra_varmaps(&self) -> Vec<(String, VarMap)> {
        vec![("teacher".into(), self.teacher.varmap().clone())]
    }
}
