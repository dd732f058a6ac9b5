//! Mean Teacher (Tarvainen & Valpola; PyMIC `SSLMeanTeacher`), with the
//! teacher updated in place by an exact exponential moving average.

use super::{
    consistency_weight, forward_split, is_running_stat, joint_forward, joint_input, mse,
    param_bool, param_f64, rows, scalar, semi_config, softmax_c, sorted_vars, sup_loss,
    NoiseSource, PlaneTransform, StudentSlot,
};
use crate::engine::{build_net, network_config, Learner, StepContext, StepOutput};
use crate::error::{LearnError, Result};
use crate::{ema_decay_at, ema_update};
use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use medseg_config::{ExperimentConfig, SemiConfig};
use medseg_nets::SegNetwork;

/// A teacher network: the same configuration (and initial weights) as the
/// student, in its own [`VarMap`], updated only by EMA of the student.
pub struct Teacher {
    varmap: VarMap,
    net: Box<dyn SegNetwork>,
    student: StudentSlot,
}

impl Teacher {
    /// Builds the teacher from the network configuration of `cfg` (same seed,
    /// so it starts equal to the student).
    pub fn new(cfg: &ExperimentConfig, device: &Device, student: StudentSlot) -> Result<Self> {
        let (varmap, net) = build_net(&network_config(cfg), device)?;
        Ok(Self {
            varmap,
            net,
            student,
        })
    }

    /// The teacher's weights (running statistics included).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The teacher network.
    pub fn net(&self) -> &dyn SegNetwork {
        self.net.as_ref()
    }

    /// `teacher = decay * teacher + (1 - decay) * student`, in place, for
    /// every tensor: weights and BatchNorm running statistics, matched by name.
    pub fn update(&self, decay: f64) -> candle_core::Result<()> {
        let s = sorted_vars(&self.student.get()?)?;
        let t = sorted_vars(&self.varmap)?;
        if s.len() != t.len() || s.iter().zip(&t).any(|(a, b)| a.0 != b.0) {
            candle_core::bail!("teacher and student networks hold different tensors")
        }
        let tv: Vec<Var> = t.into_iter().map(|(_, v)| v).collect();
        let sv: Vec<Var> = s.into_iter().map(|(_, v)| v).collect();
        ema_update(&tv, &sv, decay)
    }

    /// Teacher logits (detached). With `train` the network uses batch
    /// statistics and dropout, as the references' teachers do, but its running
    /// statistics are restored afterwards so that they stay an EMA of the
    /// student's.
    pub fn predict(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if !train {
            return Ok(self.net.forward_t(x, false)?.logits.detach());
        }
        let stats: Vec<(Var, Tensor)> = sorted_vars(&self.varmap)?
            .into_iter()
            .filter(|(k, _)| is_running_stat(k))
            .map(|(_, v)| {
                let saved = v.as_tensor().copy()?;
                Ok((v, saved))
            })
            .collect::<candle_core::Result<_>>()?;
        let out = self.net.forward_t(x, true)?.logits.detach();
        for (v, saved) in stats {
            v.set(&saved)?;
        }
        Ok(out)
    }
}

/// Mean Teacher: supervised loss plus the weighted MSE between the student's
/// softmax on the unlabelled images and the teacher's softmax on the same
/// images with clipped Gaussian noise (std `semi.params.noise_std`, default
/// 0.1, clipped to ±2 std). After each optimiser step the teacher becomes
/// `d * teacher + (1 - d) * student` with `d = min(1 - 1/(t + 1), ema_decay)`.
///
/// Options in `semi.params`:
/// - `teacher_batch_stats` (default `true`, PyMIC's and SSL4MIS' choice): the
///   teacher normalises with the statistics of its unlabelled batch and
///   applies dropout; with `false` it predicts in eval mode, with its running
///   statistics (the EMA of the student's) and without dropout.
/// - `student_noise_std` (default 0, as in PyMIC and SSL4MIS): clipped
///   Gaussian noise of its own on the student's unlabelled input, so that
///   student and teacher see independently perturbed copies, as in
///   Tarvainen & Valpola.
/// - `transform_consistency` (default `false`): the student sees its
///   unlabelled images flipped and/or rotated by a multiple of 90 degrees
///   (one of the eight, drawn per step; rotations only for square images),
///   and its prediction is mapped back before it is compared with the
///   teacher's on the untransformed images, as in transformation-consistent
///   self-ensembling (Li et al., TCSM).
/// - `joint_forward` (default `true`, as for every method): with `false`
///   the student sees the labelled and unlabelled images in separate passes.
pub struct MeanTeacherLearner {
    semi: SemiConfig,
    teacher: Teacher,
    noise: NoiseSource,
    noise_std: f64,
    student_noise_std: f64,
    teacher_batch_stats: bool,
    transform_consistency: bool,
}

impl MeanTeacherLearner {
    /// Builds the teacher; `student` must be bound to the trainer's weights
    /// before the first step.
    pub fn new(cfg: &ExperimentConfig, device: &Device, student: StudentSlot) -> Result<Self> {
        let semi = semi_config(cfg)?.clone();
        let noise_std = param_f64(&semi, "noise_std", 0.1)?;
        let student_noise_std = param_f64(&semi, "student_noise_std", 0.0)?;
        let teacher_batch_stats = param_bool(&semi, "teacher_batch_stats", true)?;
        let transform_consistency = param_bool(&semi, "transform_consistency", false)?;
        for (key, v) in [
            ("noise_std", noise_std),
            ("student_noise_std", student_noise_std),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(LearnError::Config(format!(
                    "semi.params.{key} must be >= 0, got {v}"
                )));
            }
        }
        Ok(Self {
            teacher: Teacher::new(cfg, device, student)?,
            noise: NoiseSource::new(cfg.training.seed ^ 0x7ea_c4e5),
            noise_std,
            student_noise_std,
            teacher_batch_stats,
            transform_consistency,
            semi,
        })
    }

    /// The teacher.
    pub fn teacher(&self) -> &Teacher {
        &self.teacher
    }
}

impl Learner for MeanTeacherLearner {
    fn name(&self) -> &str {
        "MeanTeacher"
    }

    fn needs_unlabelled(&self) -> bool {
        true
    }

    fn train_step(&mut self, ctx: &StepContext) -> candle_core::Result<StepOutput> {
        let (x, n0) = joint_input(ctx)?;
        let n = x.dim(0)?;
        let x1 = rows(&x, n0, n - n0)?;
        let x1s = if self.student_noise_std > 0.0 {
            let s = self.student_noise_std;
            (&x1 + self.noise.clipped_gaussian(&x1, s, 2.0 * s)?)?
        } else {
            x1.clone()
        };
        let tf = if self.transform_consistency {
            let r = x1s.rank();
            let square = x1s.dim(r - 1)? == x1s.dim(r - 2)?;
            self.noise.plane_transform(square)
        } else {
            PlaneTransform::default()
        };
        let x1s = tf.apply(&x1s)?;
        let xs = Tensor::cat(&[&rows(&x, 0, n0)?, &x1s], 0)?;
        let out = forward_split(ctx.net, &xs, n0, joint_forward(&self.semi))?;
        let (logits_l, logits_u) = (rows(&out.logits, 0, n0)?, rows(&out.logits, n0, n - n0)?);
        let sup = sup_loss(ctx, logits_l)?;
        let p1 = softmax_c(&tf.invert(&logits_u)?)?;
        let x1n = (&x1
            + self
                .noise
                .clipped_gaussian(&x1, self.noise_std, 2.0 * self.noise_std)?)?;
        let p1_t = softmax_c(&self.teacher.predict(&x1n, self.teacher_batch_stats)?)?;
        let reg = mse(&p1, &p1_t)?;
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

    fn after_update(&mut self, ctx: &StepContext) -> candle_core::Result<()> {
        self.teacher
            .update(ema_decay_at(ctx.iteration, self.semi.ema_decay))
    }

    fn extra_varmaps(&self) -> Vec<(String, VarMap)> {
        vec![("teacher".into(), self.teacher.varmap.clone())]
    }
}
