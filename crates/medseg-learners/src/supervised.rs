//! The plain supervised learner, and the supervised loss every other
//! learner reuses (with deep supervision when the network provides it).

use crate::learner::{scalar, Learner, StepContext, StepOutput};
use candle_core::Tensor;
use medseg_losses::{Loss, LossTarget, Prediction};
use medseg_nets::NetOutput;

/// The configured loss on a network output: on the logits alone, or with
/// deep supervision (the loss's `forward_multi` over the main and deep
/// outputs) when the network returns deep outputs.
pub fn supervised_loss(
    loss: &dyn Loss,
    out: &NetOutput,
    target: &LossTarget,
) -> candle_core::Result<Tensor> {
    if out.deep.is_empty() {
        loss.forward(&Prediction::logits(out.logits.clone()), target)
    } else {
        let mut preds = vec![Prediction::logits(out.logits.clone())];
        preds.extend(out.deep.iter().cloned().map(Prediction::logits));
        loss.forward_multi(&preds, target)
    }
}

/// The plain supervised learner: the configured loss on the network's
/// output (with deep supervision when the network provides it).
#[derive(Debug, Default)]
pub struct SupervisedLearner;

impl Learner for SupervisedLearner {
    fn name(&self) -> &str {
        "supervised"
    }

    fn train_step(&mut self, ctx: &StepContext) -> candle_core::Result<StepOutput> {
        let out = ctx.net.forward_t(&ctx.labelled.image, true)?;
        let loss = supervised_loss(ctx.loss, &out, &ctx.labelled.target)?;
        Ok(StepOutput {
            terms: vec![("sup".into(), scalar(&loss)?)],
            loss,
        })
    }
}
