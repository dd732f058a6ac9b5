//! Consistency losses between two predictions (student and teacher, or two
//! views) for the semi-supervised learners. The teacher is read from
//! [`LossTarget::teacher`] and never receives gradients.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::input::{pixel_mean, weights_only, Prediction};
use crate::{Loss, LossTarget};

fn teacher<'a>(pred: &Prediction, target: &'a LossTarget, loss: &str) -> Result<&'a Prediction> {
    let t = target.teacher.as_ref().ok_or_else(|| {
        candle_core::Error::Msg(format!("{loss}: the target has no teacher prediction"))
    })?;
    if t.raw().dims() != pred.raw().dims() {
        candle_core::bail!(
            "{loss}: teacher shape {:?} differs from prediction shape {:?}",
            t.raw().dims(),
            pred.raw().dims()
        );
    }
    Ok(t)
}

/// Mean squared difference between the student's and the teacher's class
/// probabilities, averaged over classes and pixels (Mean Teacher, UA-MT...).
/// Pixel/image weights (e.g. an uncertainty mask) weight the pixel average.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyMseLoss {}

impl Loss for ConsistencyMseLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        pred.check()?;
        let t = teacher(pred, target, "ConsistencyMSELoss")?;
        let p = pred.probs()?;
        let q = t.probs()?.detach().to_dtype(p.dtype())?;
        let d = p.sub(&q)?.sqr()?.mean_keepdim(1)?;
        pixel_mean(&d, weights_only(&p, target, "ConsistencyMSELoss")?.as_ref())
    }
}

/// Kullback–Leibler divergence `KL(teacher ‖ student) = Σ_c q_c (ln q_c − ln p_c)`,
/// summed over classes and averaged over pixels.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyKlLoss {}

impl Loss for ConsistencyKlLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        pred.check()?;
        let t = teacher(pred, target, "ConsistencyKLLoss")?;
        let lp = pred.log_probs()?;
        let q = t.probs()?.detach().to_dtype(lp.dtype())?;
        let lq = t.log_probs()?.detach().to_dtype(lp.dtype())?;
        let kl = q.mul(&lq.sub(&lp)?)?.sum_keepdim(1)?;
        pixel_mean(
            &kl,
            weights_only(&lp, target, "ConsistencyKLLoss")?.as_ref(),
        )
    }
}
