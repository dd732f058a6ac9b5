//! Learning-rate schedules (PyTorch's closed forms) with linear warm-up.

use medseg_config::{ScheduleKind, TrainingConfig};

/// A learning-rate schedule over iterations. `plateau` is stateful and reacts
/// to [`LrSchedule::observe`]; the others are functions of the iteration.
#[derive(Debug, Clone)]
pub struct LrSchedule {
    kind: ScheduleKind,
    base: f64,
    total: usize,
    step: usize,
    gamma: f64,
    milestones: Vec<usize>,
    power: f64,
    min_lr: f64,
    patience: usize,
    warmup: usize,
    // plateau state
    plateau_factor: f64,
    best: f64,
    bad: usize,
}

impl LrSchedule {
    /// The schedule of a `[training]` section.
    pub fn from_config(t: &TrainingConfig) -> Self {
        LrSchedule {
            kind: t.lr_scheduler,
            base: t.lr,
            total: t.iterations,
            step: t.lr_step.max(1),
            gamma: t.lr_gamma,
            milestones: t.lr_milestones.clone(),
            power: t.poly_power,
            min_lr: t.lr_min,
            patience: t.plateau_patience,
            warmup: t.warmup_iterations,
            plateau_factor: 1.0,
            best: f64::NEG_INFINITY,
            bad: 0,
        }
    }

    /// Learning rate for (zero-based) iteration `it`.
    ///
    /// - step: `base * gamma^(it / lr_step)`
    /// - multistep: `base * gamma^(#milestones <= it)`
    /// - cosine: `min + (base - min) * (1 + cos(pi * it / total)) / 2`
    /// - poly: `base * (1 - it / total)^power`
    /// - plateau: `max(base * factor, min)` where `factor` shrinks by `gamma`
    ///   after `patience` validations without improvement.
    ///
    /// During warm-up (`it < warmup`) the result is multiplied by
    /// `(it + 1) / warmup`.
    pub fn lr(&self, it: usize) -> f64 {
        let t = it as f64;
        let lr = match self.kind {
            ScheduleKind::Constant => self.base,
            ScheduleKind::Step => self.base * self.gamma.powi((it / self.step) as i32),
            ScheduleKind::Multistep => {
                self.base
                    * self
                        .gamma
                        .powi(self.milestones.iter().filter(|&&m| m <= it).count() as i32)
            }
            ScheduleKind::Cosine => {
                let tt = self.total.max(1) as f64;
                self.min_lr
                    + (self.base - self.min_lr)
                        * (1.0 + (std::f64::consts::PI * t.min(tt) / tt).cos())
                        / 2.0
            }
            ScheduleKind::Poly => {
                let tt = self.total.max(1) as f64;
                self.base * (1.0 - t.min(tt) / tt).powf(self.power)
            }
            ScheduleKind::Plateau => (self.base * self.plateau_factor).max(self.min_lr),
        };
        if it < self.warmup {
            lr * (it as f64 + 1.0) / self.warmup as f64
        } else {
            lr
        }
    }

    /// Reports a validation metric (higher is better); only `plateau` uses it.
    /// Returns true when the rate was reduced.
    pub fn observe(&mut self, metric: f64) -> bool {
        if self.kind != ScheduleKind::Plateau {
            return false;
        }
        if metric > self.best {
            self.best = metric;
            self.bad = 0;
            false
        } else {
            self.bad += 1;
            if self.bad > self.patience {
                self.plateau_factor *= self.gamma;
                self.bad = 0;
                true
            } else {
                false
            }
        }
    }

    /// State of the plateau logic, for checkpoints: (factor, best, bad count).
    pub fn plateau_state(&self) -> (f64, f64, usize) {
        (self.plateau_factor, self.best, self.bad)
    }

    /// Restores [`LrSchedule::plateau_state`].
    pub fn set_plateau_state(&mut self, s: (f64, f64, usize)) {
        self.plateau_factor = s.0;
        self.best = s.1;
        self.bad = s.2;
    }
}
