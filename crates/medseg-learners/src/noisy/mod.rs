//! Learning from noisy labels: networks that select the pixels they learn
//! from. The noise-robust losses (GCE, MAE, Noise-Robust Dice) need no
//! learner of their own: the `supervised` learner with that loss (`[noisy]`
//! `method = "supervised"`). The selecting methods are peers of the student
//! built at construction, as CPS's second network:
//!
//! | `noisy.method` | method |
//! |---|---|
//! | `Baseline` | the supervised learner on the noisy labels |
//! | `CoTeaching` | [`CoTeaching`]: two networks, each trained on the pixels its peer finds small-loss |
//! | `TriNet` | [`TriNet`]: three networks, each trained on the pixels where the other two agree |
//! | `DAST` | [`Dast`]: a clean and a noisy decoder, a few clean images and many noisy ones |
//! | `CLSLSR` | [`ClSlsr`]: confident learning flags suspect pixels ([`prepare`]), then SLSR training |

mod clslsr;
mod confident;
mod coteaching;
mod dast;
mod pixels;
mod trinet;

pub use clslsr::{
    fold_of_rows, params as clslsr_params, prepare, stage_dir, ClSlsr, ClSlsrParams, StageReport,
};
pub use confident::{
    confident_joint, correct_labels, find_label_issues, ConfidentError, Prune, MIN_PER_CLASS,
};
pub use coteaching::{CoTeaching, CoTeachingParams};
pub use dast::{Dast, DastParams, Rank};
pub use pixels::{agreement_mask, pixel_ce, small_loss_mask, small_loss_mask_per_class};
pub use trinet::TriNet;

use crate::registry::LearnerRegistry;
use crate::supervised::SupervisedLearner;

/// Registers the noisy-label methods under their `noisy.method` names.
pub(crate) fn register_builtins(r: &mut LearnerRegistry) {
    r.register("Baseline", |_| Ok(Box::new(SupervisedLearner)));
    r.register_semi::<CoTeaching>("CoTeaching");
    r.register_semi::<TriNet>("TriNet");
    r.register("DAST", |init| Ok(Box::new(Dast::new(init)?)));
    r.register("CLSLSR", |init| {
        clslsr::params(init.config)?;
        Ok(Box::new(ClSlsr))
    });
}
