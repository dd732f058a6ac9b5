//! Regularisers for sparse and weak labels (scribbles, unlabelled pixels):
//! entropy minimisation, total variation and Mumford–Shah (the Gated CRF loss
//! is in its own module).
//! Partial cross-entropy is [`crate::CrossEntropyLoss`] with an ignore value or a
//! 0/1 pixel-weight map.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::input::{pixel_mean, weights_only, Prediction};
use crate::{Loss, LossTarget};

/// Entropy minimisation (PyMIC's `EntropyLoss`): `−Σ_c p'_c ln p'_c / ln C` with
/// `p' = 0.999 p + 5e-4`, averaged over pixels (weighted by pixel and image
/// weights when given). Needs no labels.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntropyLoss {}

impl Loss for EntropyLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        pred.check()?;
        let p = pred.probs()?.affine(0.999, 5e-4)?;
        let c = p.dim(1)?;
        if c < 2 {
            candle_core::bail!("EntropyLoss needs at least 2 classes, got {c}");
        }
        let e = (p.mul(&p.log()?)?.sum_keepdim(1)?.neg()? / (c as f64).ln())?;
        pixel_mean(&e, weights_only(&p, target, "EntropyLoss")?.as_ref())
    }
}

/// Anisotropic total variation of the probabilities: for each spatial axis, the
/// mean of `|p[x + e] − p[x]|` over all neighbouring pairs (and classes and
/// images), summed over the axes. (PyMIC's `TotalVariationLoss` is a different,
/// morphological contour length whose 2D branch pools over channels by mistake;
/// this is the classic definition.)
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotalVariationLoss {}

impl Loss for TotalVariationLoss {
    fn forward(&self, pred: &Prediction, _target: &LossTarget) -> Result<Tensor> {
        pred.check()?;
        let p = pred.probs()?;
        let mut total: Option<Tensor> = None;
        for axis in 2..p.rank() {
            let l = p.dim(axis)?;
            if l < 2 {
                continue;
            }
            let d = p
                .narrow(axis, 1, l - 1)?
                .sub(&p.narrow(axis, 0, l - 1)?)?
                .abs()?
                .mean_all()?;
            total = Some(match total {
                None => d,
                Some(t) => t.add(&d)?,
            });
        }
        match total {
            Some(t) => Ok(t),
            None => p.zeros_like()?.sum_all(),
        }
    }
}

/// Penalty of the gradient term of [`MumfordShahLoss`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Penalty {
    /// `|∇p|`.
    L1,
    /// `|∇p|²`.
    L2,
}

/// Mumford–Shah loss (Kim and Ye, TIP 2019; PyMIC's `MumfordShahLoss`):
/// `[Σ_i Σ_c Σ_x p_c (I_i − μ_{i,c})² + λ Σ |∇p|] / numel(p)` with
/// `μ_{i,c} = Σ_x I_i p_c / Σ_x p_c` per image and class, and `∇` the forward
/// differences along H and W. Needs `target.image` `[N, Ci, ...spatial]`. A 3D
/// prediction is treated slice by slice (depth folded into the batch), as PyMIC does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MumfordShahLoss {
    /// Gradient penalty.
    pub penalty: Penalty,
    /// Weight λ of the gradient term.
    pub lambda: f64,
}

impl Default for MumfordShahLoss {
    fn default() -> Self {
        Self {
            penalty: Penalty::L1,
            lambda: 1.0,
        }
    }
}

impl MumfordShahLoss {
    /// Checks the parameters.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.lambda.is_nan() || self.lambda < 0.0 {
            return Err(format!("`lambda` must be >= 0, got {}", self.lambda));
        }
        Ok(())
    }
}

/// `[N, C, D, H, W]` → `[N·D, C, H, W]`; 4D tensors unchanged.
pub(crate) fn fold_depth(t: &Tensor) -> Result<Tensor> {
    if t.rank() == 5 {
        let (n, c, d, h, w) = t.dims5()?;
        t.transpose(1, 2)?.contiguous()?.reshape((n * d, c, h, w))
    } else {
        Ok(t.clone())
    }
}

fn image_for(pred: &Tensor, target: &LossTarget, loss: &str) -> Result<Tensor> {
    let img = target.image.as_ref().ok_or_else(|| {
        candle_core::Error::Msg(format!("{loss}: the target has no image (`image` is None)"))
    })?;
    if img.rank() != pred.rank() || img.dim(0)? != pred.dim(0)? {
        candle_core::bail!(
            "{loss}: image shape {:?} does not match prediction shape {:?}",
            img.dims(),
            pred.dims()
        );
    }
    img.to_dtype(pred.dtype())
}

impl Loss for MumfordShahLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        pred.check()?;
        let p = pred.probs()?;
        let img = image_for(&p, target, "MumfordShahLoss")?;
        if img.dims()[2..] != p.dims()[2..] {
            candle_core::bail!(
                "MumfordShahLoss: image spatial shape {:?} differs from the prediction's {:?}",
                &img.dims()[2..],
                &p.dims()[2..]
            );
        }
        let p = fold_depth(&p)?;
        let img = fold_depth(&img)?;
        let psum = p.sum_keepdim((2, 3))?;
        let mut level: Option<Tensor> = None;
        for i in 0..img.dim(1)? {
            let im = img.narrow(1, i, 1)?;
            let centroid = p.broadcast_mul(&im)?.sum_keepdim((2, 3))?.div(&psum)?;
            let l = im.broadcast_sub(&centroid)?.sqr()?.mul(&p)?.sum_all()?;
            level = Some(match level {
                None => l,
                Some(a) => a.add(&l)?,
            });
        }
        let level = match level {
            Some(l) => l,
            None => candle_core::bail!("MumfordShahLoss: the image has no channels"),
        };
        let (_, _, h, w) = p.dims4()?;
        let mut grad = p.zeros_like()?.sum_all()?;
        for (axis, l) in [(2usize, h), (3usize, w)] {
            if l < 2 {
                continue;
            }
            let d = p.narrow(axis, 1, l - 1)?.sub(&p.narrow(axis, 0, l - 1)?)?;
            let d = match self.penalty {
                Penalty::L1 => d.abs()?,
                Penalty::L2 => d.sqr()?,
            };
            grad = grad.add(&d.sum_all()?)?;
        }
        let total = level.add(&(grad * self.lambda)?)?;
        total / p.elem_count() as f64
    }
}
