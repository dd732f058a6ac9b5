//! pCE plus a regularising loss on the network's prediction of the whole
//! scribbled image (PyMIC's `WSLTotalVariation`, `WSLMumfordShah`,
//! `WSLGatedCRF`): for each step, `unsup = R(softmax(f(x)), x)`, the loss `R`
//! built by name from the loss registry with `weak.params` as its parameters.

use crate::error::{LearnError, Result};
use crate::learner::LearnerInit;
use crate::semi::{Section, SemiMethod, SemiStep, Unsup};
use medseg_config::SemiConfig;
use medseg_losses::{Loss, LossRegistry, LossTarget, Prediction};
use medseg_nets::NetOutput;
use std::marker::PhantomData;

/// Which registered loss a [`RegularizerLoss`] applies.
pub trait RegularizerName: Send + 'static {
    /// The loss's registry name.
    const LOSS: &'static str;
    /// Whether the loss reads the image.
    const NEEDS_IMAGE: bool;
}

/// Total variation of the probabilities (`TotalVariationLoss`).
pub struct TotalVariationRegularizer;
impl RegularizerName for TotalVariationRegularizer {
    const LOSS: &'static str = "TotalVariationLoss";
    const NEEDS_IMAGE: bool = false;
}

/// The Mumford-Shah functional of the probabilities and the image
/// (`MumfordShahLoss`; `weak.params`: `penalty`, `lambda`).
pub struct MumfordShahRegularizer;
impl RegularizerName for MumfordShahRegularizer {
    const LOSS: &'static str = "MumfordShahLoss";
    const NEEDS_IMAGE: bool = true;
}

/// The gated CRF loss with Gaussian kernels on position and intensity
/// (`GatedCRFLoss`; `weak.params`: `kernels`, `radius`; PyMIC's defaults).
pub struct GatedCrfRegularizer;
impl RegularizerName for GatedCrfRegularizer {
    const LOSS: &'static str = "GatedCRFLoss";
    const NEEDS_IMAGE: bool = true;
}

/// pCE plus the loss `R::LOSS` of the prediction (and the image).
pub struct RegularizerLoss<R: RegularizerName> {
    loss: Box<dyn Loss>,
    _r: PhantomData<R>,
}

impl<R: RegularizerName> SemiMethod for RegularizerLoss<R> {
    /// The loss's own parameters (checked by the loss, which rejects
    /// unknown keys).
    type Params = serde_json::Map<String, serde_json::Value>;
    const SECTIONS: &'static [Section] = &[Section::Weak];

    fn new(p: Self::Params, _: &SemiConfig, _: &LearnerInit) -> Result<Self> {
        let loss = LossRegistry::with_builtins()
            .build(R::LOSS, &serde_json::Value::Object(p))
            .map_err(|e| LearnError::Config(format!("weak.params: {e}")))?;
        Ok(RegularizerLoss {
            loss,
            _r: PhantomData,
        })
    }

    fn unsupervised(&mut self, s: &SemiStep, out: &NetOutput) -> candle_core::Result<Unsup> {
        let mut target = LossTarget::none();
        if R::NEEDS_IMAGE {
            // the transformed (cropped, flipped) image of the batch
            target = target.with_image(s.x.clone());
        }
        let l = self
            .loss
            .forward(&Prediction::logits(out.logits.clone()), &target)?;
        Ok(Unsup::loss(l))
    }
}
