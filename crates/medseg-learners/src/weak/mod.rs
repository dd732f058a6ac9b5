//! Weakly supervised learning from scribbles: a few strokes per structure,
//! every other pixel holding the ignore label (`dataset.ignore_label`).
//!
//! The supervised term is the partial cross-entropy (pCE): the configured
//! loss (`CrossEntropyLoss`) on the annotated pixels only, through the
//! ignore label. Each method adds `w(t) * unsup` with the ramp-up of the
//! `[weak]` section, exactly as the semi-supervised methods do
//! ([`SemiLearner`](crate::semi::SemiLearner) runs both; a weak method is a
//! [`SemiMethod`](crate::semi::SemiMethod) whose `SECTIONS` include
//! `Section::Weak`; it sees no unlabelled batch).
//!
//! | `weak.method` | method | network |
//! |---|---|---|
//! | `pCE` | the supervised learner: pCE alone (the baseline) | any |
//! | `EntropyMinimization` | [`EntropyMinimization`](crate::semi::EntropyMinimization) on the scribbled images | any |
//! | `TotalVariation` | [`RegularizerLoss`] with `TotalVariationLoss` | any |
//! | `MumfordShah` | [`RegularizerLoss`] with `MumfordShahLoss` (reads the image) | any |
//! | `GatedCRF` | [`RegularizerLoss`] with `GatedCRFLoss` (kernels on intensity and position) | any 2D |
//! | `USTM` | [`Ustm`]: uncertainty-aware self-ensembling with transformation consistency | any (with dropout) |
//! | `DMPLS` | [`Dmpls`]: dynamically mixed pseudo labels of two decoders | `DualDecoderUNet` |

mod check;
mod dmpls;
mod regularizer;
mod ustm;

pub use check::check_scribbles;
pub use dmpls::Dmpls;
pub use regularizer::{
    GatedCrfRegularizer, MumfordShahRegularizer, RegularizerLoss, RegularizerName,
    TotalVariationRegularizer,
};
pub use ustm::{Ustm, UstmParams};

use crate::registry::LearnerRegistry;
use crate::supervised::SupervisedLearner;

/// Registers the built-in weakly supervised methods under their
/// `weak.method` names.
pub(crate) fn register_builtins(r: &mut LearnerRegistry) {
    r.register("pCE", |_| Ok(Box::new(SupervisedLearner)));
    r.register_semi::<RegularizerLoss<TotalVariationRegularizer>>("TotalVariation");
    r.register_semi::<RegularizerLoss<MumfordShahRegularizer>>("MumfordShah");
    r.register_semi::<RegularizerLoss<GatedCrfRegularizer>>("GatedCRF");
    r.register_semi::<Ustm>("USTM");
    r.register_semi::<Dmpls>("DMPLS");
}
