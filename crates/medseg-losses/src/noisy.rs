//! Losses robust to label noise: generalized cross-entropy, noise-robust Dice
//! and spatial label smoothing regularisation (MAE lives in
//! [`crate::supervised`]).

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::input::{class_view, pixel_map, pixel_mean, reduce_axes, resolve, sum_axes, Prediction};
use crate::supervised::check_nonneg;
use crate::{Loss, LossTarget};

/// Generalized cross-entropy (Zhang and Sabuncu 2018; PyMIC's
/// `GeneralizedCELoss`): `Σ_c w_c y_c (1 − p_c^q) / q`, averaged over pixels.
/// `q → 0` tends to cross-entropy, `q = 1` is MAE-like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneralizedCeLoss {
    /// q in `(0, 1]`.
    pub q: f64,
    /// Optional per-class weights.
    pub class_weight: Option<Vec<f64>>,
}

impl Default for GeneralizedCeLoss {
    fn default() -> Self {
        Self {
            q: 0.5,
            class_weight: None,
        }
    }
}

impl GeneralizedCeLoss {
    /// Checks the parameters.
    pub fn validate(&self) -> std::result::Result<(), String> {
        check_nonneg("class_weight", &self.class_weight)?;
        if !(self.q > 0.0 && self.q <= 1.0) {
            return Err(format!("`q` must be in (0, 1], got {}", self.q));
        }
        Ok(())
    }
}

impl Loss for GeneralizedCeLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        pred.check()?;
        let p = pred.probs()?;
        let r = resolve(&p, target, "GeneralizedCELoss")?;
        let mut g = p
            .powf(self.q)?
            .affine(-1.0 / self.q, 1.0 / self.q)?
            .mul(&r.y)?;
        if let Some(w) = &self.class_weight {
            g = g.broadcast_mul(&class_view(w, &p)?)?;
        }
        pixel_mean(&g.sum_keepdim(1)?, r.combined(&p)?.as_ref())
    }
}

/// Noise-robust Dice loss (Wang et al., TMI 2020; PyMIC's `NoiseRobustDiceLoss`):
/// `mean_c Σ |p_c − y_c|^γ / (Σ (p_c + y_c) + 1e-5)`, sums over the batch and
/// all pixels (weighted by the pixel weights when given). γ in `[1, 2]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoiseRobustDiceLoss {
    /// Exponent γ.
    pub gamma: f64,
}

impl Default for NoiseRobustDiceLoss {
    fn default() -> Self {
        Self { gamma: 1.5 }
    }
}

impl NoiseRobustDiceLoss {
    /// Checks the parameters.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(self.gamma >= 1.0 && self.gamma <= 2.0) {
            return Err(format!("`gamma` must be in [1, 2], got {}", self.gamma));
        }
        Ok(())
    }
}

impl Loss for NoiseRobustDiceLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        pred.check()?;
        let p = pred.probs()?;
        let r = resolve(&p, target, "NoiseRobustDiceLoss")?;
        let w = r.combined(&p)?;
        let mut num = p.sub(&r.y)?.abs()?.powf(self.gamma)?;
        let mut den = p.add(&r.y)?;
        if let Some(w) = &w {
            num = num.broadcast_mul(w)?;
            den = den.broadcast_mul(w)?;
        }
        let axes = reduce_axes(p.rank(), true);
        let v = sum_axes(&num, &axes)?.div(&(sum_axes(&den, &axes)? + 1e-5)?)?;
        v.mean_all()
    }
}

/// Spatial label smoothing regularisation (Zhang et al., MICCAI 2020; PyMIC's
/// `SLSRLoss`): on pixels of the target's `noisy_mask` (nonzero = suspected
/// wrong label) the target is smoothed to `(y − 0.5)(1 − 2ε) + 0.5`; then
/// cross-entropy on `p' = 0.999 p + 5e-4`, summed over classes and averaged
/// over pixels (pixel weights apply when given). Without a noisy mask this is
/// plain cross-entropy on `p'`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlsrLoss {
    /// Smoothing ε in `[0, 0.5]`.
    pub epsilon: f64,
}

impl Default for SlsrLoss {
    fn default() -> Self {
        Self { epsilon: 0.25 }
    }
}

impl SlsrLoss {
    /// Checks the parameters.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(0.0..=0.5).contains(&self.epsilon) {
            return Err(format!(
                "`epsilon` must be in [0, 0.5], got {}",
                self.epsilon
            ));
        }
        Ok(())
    }
}

impl Loss for SlsrLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        pred.check()?;
        let p = pred.probs()?;
        let r = resolve(&p, target, "SLSRLoss")?;
        let y = match &target.noisy_mask {
            None => r.y.clone(),
            Some(m) => {
                let m = pixel_map(m, &p, "SLSRLoss noisy mask")?.ne(0.0)?;
                let smooth = r.y.affine(
                    1.0 - 2.0 * self.epsilon,
                    0.5 - 0.5 * (1.0 - 2.0 * self.epsilon),
                )?;
                m.broadcast_as(p.dims())?.where_cond(&smooth, &r.y)?
            }
        };
        let lp = p.affine(0.999, 5e-4)?.log()?;
        let ce = y.mul(&lp)?.neg()?.sum_keepdim(1)?;
        pixel_mean(&ce, r.combined(&p)?.as_ref())
    }
}
