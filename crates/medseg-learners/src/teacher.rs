//! A teacher network: a copy of the student updated only by an exponential
//! moving average of the student's weights (Mean Teacher, UA-MT, and the
//! self-ensembling methods of other regimes).

use crate::error::Result;
use crate::learner::{is_running_stat, sorted_vars, LearnerInit};
use crate::{ema_decay_at, ema_update};
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use medseg_nets::SegNetwork;

/// The same configuration (and initial weights) as the student, in its own
/// [`VarMap`], holding a handle on the student's weights given at construction.
pub struct Teacher {
    varmap: VarMap,
    net: Box<dyn SegNetwork>,
    student: VarMap,
}

impl Teacher {
    /// Builds the teacher from the student's network configuration (same
    /// seed, so it starts equal to the student) and keeps a handle on the
    /// student's weights.
    pub fn new(init: &LearnerInit) -> Result<Self> {
        let (varmap, net) = init.build_network(0)?;
        Ok(Self {
            varmap,
            net,
            student: init.student.clone(),
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
        let s = sorted_vars(&self.student)?;
        let t = sorted_vars(&self.varmap)?;
        if s.len() != t.len() || s.iter().zip(&t).any(|(a, b)| a.0 != b.0) {
            candle_core::bail!("teacher and student networks hold different tensors")
        }
        let tv: Vec<Var> = t.into_iter().map(|(_, v)| v).collect();
        let sv: Vec<Var> = s.into_iter().map(|(_, v)| v).collect();
        ema_update(&tv, &sv, decay)
    }

    /// The EMA update after optimiser step `iteration` (zero-based), with
    /// the warm-up decay `min(1 - 1/(t + 1), ema_decay)`.
    pub fn update_at(&self, iteration: usize, ema_decay: f64) -> candle_core::Result<()> {
        self.update(ema_decay_at(iteration, ema_decay))
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
