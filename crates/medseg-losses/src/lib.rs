#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod consistency;
mod contrastive;
mod gated_crf;
mod input;
mod noisy;
mod partial;
mod registry;
mod supervised;
mod weak;
mod wrappers;

use candle_core::Tensor;

pub use consistency::{ConsistencyKlLoss, ConsistencyMseLoss};
pub use contrastive::{info_nce, l2_normalize, nt_xent};
pub use gated_crf::{CrfKernel, GatedCrfLoss};
pub use input::{resize_nearest, Labels, LossTarget, PredKind, Prediction};
pub use noisy::{GeneralizedCeLoss, NoiseRobustDiceLoss, SlsrLoss};
pub use partial::{ExclusionLoss, MarginalLoss};
pub use registry::{LossCtor, LossRegistry};
pub use supervised::{
    CrossEntropyLoss, DiceLoss, ExpLogLoss, FocalDiceLoss, FocalLoss, GdlWeight,
    GeneralizedDiceLoss, MaeLoss, MseLoss, TverskyLoss,
};
pub use weak::{EntropyLoss, MumfordShahLoss, Penalty, TotalVariationLoss};
pub use wrappers::{resize_target, CombinedLoss, DeepSupervisionLoss};

/// Errors of building a loss from a name and parameters. Errors while
/// evaluating a loss (shapes, missing target fields) are `candle_core::Error`s
/// whose message names the loss and the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No constructor is registered under this name.
    #[error("unknown loss `{name}`; known losses: {known}")]
    UnknownLoss {
        /// The name asked for.
        name: String,
        /// The registered names.
        known: String,
    },
    /// Parameters that do not deserialise or do not validate.
    #[error("invalid parameters for loss `{loss}`: {message}")]
    InvalidParams {
        /// The loss being built.
        loss: String,
        /// What is wrong (unknown key, value out of range...).
        message: String,
    },
}

/// A differentiable loss: a scalar tensor from a prediction and a target.
/// Gradients flow to the prediction only.
pub trait Loss: Send + Sync + std::fmt::Debug {
    /// The loss value, a 0-dimensional tensor of the prediction's dtype.
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> candle_core::Result<Tensor>;

    /// The loss over several outputs of one network (deep supervision). Losses
    /// other than [`DeepSupervisionLoss`] accept exactly one prediction.
    fn forward_multi(
        &self,
        preds: &[Prediction],
        target: &LossTarget,
    ) -> candle_core::Result<Tensor> {
        match preds {
            [p] => self.forward(p, target),
            _ => candle_core::bail!(
                "this loss takes one prediction, got {}; wrap it in DeepSuperviseLoss for multi-scale outputs",
                preds.len()
            ),
        }
    }
}
