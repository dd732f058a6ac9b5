//! Step-wise training for federated rounds: a site opens a
//! [`LocalSession`] once (its data streams and validation set), then per
//! round receives global weights into [`Trainer::varmap`], trains a few
//! steps with [`Trainer::train_round`] (a fresh optimiser each round, as a
//! stateless Flower client, or one kept across rounds with
//! [`LocalSession::keep_optimizer`]; the learning-rate schedule runs over
//! every round's steps) and sends the weights back.

use super::{RunData, Trainer};
use crate::checkpoint::ResumePoint;
use crate::error::Result;
use crate::summary::ValidResult;
use crate::{LrSchedule, Optimizer, OptimizerSettings};
use candle_core::{Tensor, Var};

/// An extra differentiable term added to every local step's loss (e.g.
/// FedProx's proximal term), given the trainable variables.
pub type ExtraTerm<'a> = &'a dyn Fn(&[(String, Var)]) -> candle_core::Result<Tensor>;

/// A site's open data and its position in the schedule.
pub struct LocalSession {
    data: RunData,
    sched: LrSchedule,
    iteration: usize,
    examples: usize,
    opt: Option<Optimizer>,
    /// Keep the optimiser's state (Adam's moments) from one round to the
    /// next, as a stateful client does; `false` (the default) starts each
    /// round with a fresh optimiser.
    pub keep_optimizer: bool,
}

impl LocalSession {
    /// Steps done over all rounds.
    pub fn iteration(&self) -> usize {
        self.iteration
    }

    /// Training cases of the site (the rows of `dataset.train_csv`), the
    /// weight of its update in FedAvg.
    pub fn num_examples(&self) -> usize {
        self.examples
    }
}

/// What one local round did.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundStats {
    /// Steps run this round.
    pub steps: usize,
    /// Mean training loss over them.
    pub mean_loss: f64,
}

impl Trainer {
    /// Opens the site's data for round-wise training (no resume: a
    /// federation restores its own state).
    ///
    /// # Errors
    /// Data errors, as for [`Trainer::run`].
    pub fn open_session(&self) -> Result<LocalSession> {
        let data = self.open_data(&ResumePoint::start())?;
        let examples = crate::setup::read_manifest(&self.cfg, &self.cfg.dataset.train_csv)?
            .rows
            .len();
        Ok(LocalSession {
            data,
            sched: LrSchedule::from_config(&self.cfg.training),
            iteration: 0,
            examples,
            opt: None,
            keep_optimizer: false,
        })
    }

    /// Trains `steps` steps from the current weights with a fresh optimiser
    /// (or the session's previous one, with
    /// [`LocalSession::keep_optimizer`]), adding `extra` to each step's
    /// loss when given.
    ///
    /// # Errors
    /// Step errors, as for [`Trainer::run`].
    pub fn train_round(
        &mut self,
        session: &mut LocalSession,
        steps: usize,
        extra: Option<ExtraTerm<'_>>,
    ) -> Result<RoundStats> {
        let mut opt = match session.opt.take() {
            Some(o) if session.keep_optimizer => o,
            _ => Optimizer::new(
                self.parameters()?,
                OptimizerSettings::from_config(&self.cfg.training),
            ),
        };
        let mut sum = 0.0;
        for _ in 0..steps {
            let it = session.iteration;
            let lr = session.sched.lr(it);
            let (loss, _) = self.step_with(it, lr, &mut session.data, &mut opt, extra)?;
            sum += loss;
            session.iteration += 1;
        }
        if session.keep_optimizer {
            session.opt = Some(opt);
        }
        Ok(RoundStats {
            steps,
            mean_loss: if steps == 0 {
                f64::NAN
            } else {
                sum / steps as f64
            },
        })
    }

    /// Validates the current weights on the site's validation set (`None`
    /// without `dataset.valid_csv`).
    ///
    /// # Errors
    /// Inference errors.
    pub fn validate_session(&self, session: &LocalSession) -> Result<Option<ValidResult>> {
        match session.data.valid.as_ref() {
            Some(vs) => Ok(Some(self.validate(session.iteration, vs)?)),
            None => Ok(None),
        }
    }

    /// The trainable variables (the network's, sorted by name, then the
    /// learner's), e.g. for a proximal term.
    ///
    /// # Errors
    /// When the variables cannot be listed.
    pub fn trainable(&self) -> Result<Vec<(String, Var)>> {
        self.parameters()
    }

    /// The network's config as checkpoints record it (`name` plus the
    /// network section), e.g. to save weights assembled elsewhere with
    /// `medseg_nets::save_checkpoint`.
    pub fn network_config(&self) -> &serde_json::Value {
        &self.net_config
    }
}
