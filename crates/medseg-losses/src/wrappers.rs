//! Wrappers: a weighted sum of losses and deep supervision over multi-scale outputs.

use candle_core::{Result, Tensor};

use crate::input::{resize_nearest, Labels, Prediction};
use crate::{Loss, LossTarget};

/// A weighted sum `Σ_i w_i L_i` of losses (e.g. `0.5 Dice + 0.5 CE`). The
/// prediction's softmax is computed once and shared by the terms.
#[derive(Debug)]
pub struct CombinedLoss {
    /// `(weight, name, loss)` per term; the name is only for display.
    pub terms: Vec<(f64, String, Box<dyn Loss>)>,
}

impl CombinedLoss {
    /// An empty sum; add terms with [`CombinedLoss::with`].
    pub fn new() -> Self {
        Self { terms: Vec::new() }
    }

    /// Adds `weight × loss`.
    pub fn with(mut self, weight: f64, name: impl Into<String>, loss: Box<dyn Loss>) -> Self {
        self.terms.push((weight, name.into(), loss));
        self
    }

    /// Each term's unweighted value, for logging.
    pub fn parts(&self, pred: &Prediction, target: &LossTarget) -> Result<Vec<(String, Tensor)>> {
        self.terms
            .iter()
            .map(|(_, n, l)| Ok((n.clone(), l.forward(pred, target)?)))
            .collect()
    }
}

impl Default for CombinedLoss {
    fn default() -> Self {
        Self::new()
    }
}

impl Loss for CombinedLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        let mut total: Option<Tensor> = None;
        for (w, name, l) in &self.terms {
            let v = (l
                .forward(pred, target)
                .map_err(|e| candle_core::Error::Msg(format!("{name}: {e}")))?
                * *w)?;
            total = Some(match total {
                None => v,
                Some(t) => t.add(&v)?,
            });
        }
        total.ok_or_else(|| candle_core::Error::Msg("CombinedLoss has no terms".into()))
    }
}

/// Deep supervision (PyMIC's `DeepSuperviseLoss` with target down-sampling):
/// `Σ_i w_i L(pred_i, target ↓ size(pred_i)) / Σ_i w_i`, where every spatial
/// map of the target (class map, soft map, pixel weights, masks, image) is
/// resampled by nearest neighbour to each output's size. Default weights
/// `1, 1/2, 1/4, ...` for outputs ordered from full resolution down.
#[derive(Debug)]
pub struct DeepSupervisionLoss {
    /// The loss applied at every scale.
    pub base: Box<dyn Loss>,
    /// One weight per output; `None` = `1 / 2^i`.
    pub weights: Option<Vec<f64>>,
}

/// Resamples every spatial field of `target` to `size` (nearest neighbour);
/// the per-image fields (image weights, annotated classes) and the teacher are
/// kept as they are.
pub fn resize_target(target: &LossTarget, size: &[usize]) -> Result<LossTarget> {
    let rs = |t: &Tensor, with_channel: bool| -> Result<Tensor> {
        if with_channel {
            resize_nearest(t, size)
        } else {
            resize_nearest(&t.unsqueeze(1)?, size)
        }
    };
    let rank = size.len() + 2;
    let per_pixel = |t: &Tensor| rs(t, t.rank() == rank);
    let labels = match &target.labels {
        None => None,
        Some(Labels::ClassMap { map, ignore }) => Some(Labels::ClassMap {
            map: per_pixel(map)?,
            ignore: *ignore,
        }),
        Some(Labels::Soft(t)) => Some(Labels::Soft(rs(t, true)?)),
    };
    let opt =
        |t: &Option<Tensor>| -> Result<Option<Tensor>> { t.as_ref().map(per_pixel).transpose() };
    Ok(LossTarget {
        labels,
        pixel_weight: opt(&target.pixel_weight)?,
        image_weight: target.image_weight.clone(),
        image: target.image.as_ref().map(|t| rs(t, true)).transpose()?,
        valid_mask: opt(&target.valid_mask)?,
        noisy_mask: opt(&target.noisy_mask)?,
        teacher: target.teacher.clone(),
        annotated: target.annotated.clone(),
    })
}

impl Loss for DeepSupervisionLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        self.forward_multi(std::slice::from_ref(pred), target)
    }

    fn forward_multi(&self, preds: &[Prediction], target: &LossTarget) -> Result<Tensor> {
        if preds.is_empty() {
            candle_core::bail!("DeepSuperviseLoss: no predictions given");
        }
        let weights: Vec<f64> = match &self.weights {
            Some(w) => {
                if w.len() != preds.len() {
                    candle_core::bail!(
                        "DeepSuperviseLoss: {} weights configured for {} outputs",
                        w.len(),
                        preds.len()
                    );
                }
                w.clone()
            }
            None => (0..preds.len()).map(|i| 0.5f64.powi(i as i32)).collect(),
        };
        let wsum: f64 = weights.iter().sum();
        if wsum <= 0.0 {
            candle_core::bail!("DeepSuperviseLoss: the weights sum to {wsum}");
        }
        let mut total: Option<Tensor> = None;
        for (p, w) in preds.iter().zip(&weights) {
            p.check()?;
            let size = &p.raw().dims()[2..];
            let t = resize_target(target, size)?;
            let v = (self.base.forward(p, &t)? * (*w / wsum))?;
            total = Some(match total {
                None => v,
                Some(a) => a.add(&v)?,
            });
        }
        total.ok_or_else(|| candle_core::Error::Msg("DeepSuperviseLoss: no outputs".into()))
    }
}
