//! Fully supervised losses: cross-entropy, the Dice family (soft Dice, soft
//! Jaccard, Generalized Dice, Focal Dice, Tversky), focal, exponential-logarithmic,
//! MSE and MAE.
//!
//! Unless a loss says otherwise, per-pixel losses are summed over classes and
//! averaged over pixels, weighted by `pixel_weight × (label ≠ ignore) × image_weight`
//! (`Σ w·ℓ / (Σ w + 1e-10)`); region losses (Dice family) multiply the
//! prediction and the target by the pixel weights inside their sums.

use candle_core::{Result, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::input::{
    class_view, pixel_mean, reduce_axes, resolve, sum_axes, weighted_last_mean, Prediction,
    Resolved,
};
use crate::{Loss, LossTarget};

pub(crate) fn check_nonneg(name: &str, w: &Option<Vec<f64>>) -> std::result::Result<(), String> {
    if let Some(w) = w {
        if w.iter().any(|x| !x.is_finite() || *x < 0.0) {
            return Err(format!("`{name}` must hold finite values >= 0, got {w:?}"));
        }
        if w.iter().sum::<f64>() <= 0.0 {
            return Err(format!("`{name}` must not be all zeros"));
        }
    }
    Ok(())
}

/// Cross-entropy `−Σ_c w_c y_c ln p_c`, averaged over pixels (PyMIC's
/// `CrossEntropyLoss`). With `label_smoothing = ε` the target becomes
/// `(1 − ε) y + ε / C` (PyTorch's convention). Restricting it to annotated
/// pixels through an ignore value or a 0/1 pixel-weight map gives the partial
/// cross-entropy used with scribbles.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrossEntropyLoss {
    /// Per-class weights `w_c` (length C); all ones when absent.
    pub class_weight: Option<Vec<f64>>,
    /// Label smoothing ε in `[0, 1)`.
    pub label_smoothing: f64,
}

impl CrossEntropyLoss {
    /// Checks the parameters.
    pub fn validate(&self) -> std::result::Result<(), String> {
        check_nonneg("class_weight", &self.class_weight)?;
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(format!(
                "`label_smoothing` must be in [0, 1), got {}",
                self.label_smoothing
            ));
        }
        Ok(())
    }
}

impl Loss for CrossEntropyLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        pred.check()?;
        let lp = pred.log_probs()?;
        let r = resolve(&lp, target, "CrossEntropyLoss")?;
        let c = lp.dim(1)? as f64;
        let mut y = r.y.clone();
        if self.label_smoothing > 0.0 {
            y = y.affine(1.0 - self.label_smoothing, self.label_smoothing / c)?;
        }
        let mut ce = y.mul(&lp)?.neg()?;
        if let Some(w) = &self.class_weight {
            ce = ce.broadcast_mul(&class_view(w, &lp)?)?;
        }
        let ce = ce.sum_keepdim(1)?;
        pixel_mean(&ce, r.combined(&lp)?.as_ref())
    }
}

/// Region statistics of the Dice family, reduced over `axes`.
pub(crate) struct RegionStats {
    /// `Σ w p y`.
    pub tp: Tensor,
    /// `Σ w p` (or `Σ w p²` when squared).
    pub sp: Tensor,
    /// `Σ w y` (or `Σ w y²` when squared).
    pub sy: Tensor,
}

pub(crate) fn region_stats(
    p: &Tensor,
    y: &Tensor,
    w: Option<&Tensor>,
    axes: &[usize],
    squared: bool,
) -> Result<RegionStats> {
    let (pw, yw) = match w {
        Some(w) => (p.broadcast_mul(w)?, y.broadcast_mul(w)?),
        None => (p.clone(), y.clone()),
    };
    let tp = sum_axes(&pw.mul(y)?, axes)?;
    let (sp, sy) = if squared {
        (sum_axes(&pw.mul(p)?, axes)?, sum_axes(&yw.mul(y)?, axes)?)
    } else {
        (sum_axes(&pw, axes)?, sum_axes(&yw, axes)?)
    };
    Ok(RegionStats { tp, sp, sy })
}

/// Reduces `[N, C]` (per image) or `[C]` (batch) per-class losses to a scalar:
/// class-weighted mean over classes, then image-weighted mean over images.
pub(crate) fn reduce_class_image(
    f: &Tensor,
    class_weight: Option<&[f64]>,
    image_weight: Option<&Tensor>,
) -> Result<Tensor> {
    let per = weighted_last_mean(f, class_weight)?;
    if per.rank() == 0 {
        return Ok(per);
    }
    match image_weight {
        None => per.mean_all(),
        Some(iw) => {
            let num = per.mul(iw)?.sum_all()?;
            num.div(&(iw.sum_all()? + 1e-10)?)
        }
    }
}

/// Drops channel 0 (background) when `include_background` is false.
fn maybe_drop_bg(t: &Tensor, include_background: bool) -> Result<Tensor> {
    if include_background {
        Ok(t.clone())
    } else {
        let c = t.dim(1)?;
        if c < 2 {
            candle_core::bail!("include_background = false needs at least 2 classes, got {c}");
        }
        t.narrow(1, 1, c - 1)
    }
}

/// Prepares `(p, y, weights for the sums, image weights for the final mean)` of
/// a region loss: with `batch` the image weights are folded into the pixel
/// weights; otherwise they weight the mean over images.
fn region_inputs(
    pred: &Prediction,
    target: &LossTarget,
    batch: bool,
    include_background: bool,
    loss: &str,
) -> Result<(Tensor, Tensor, Option<Tensor>, Option<Tensor>)> {
    pred.check()?;
    let p = pred.probs()?;
    let r: Resolved = resolve(&p, target, loss)?;
    let (w, iw) = if batch {
        (r.combined(&p)?, None)
    } else {
        (r.pixel.clone(), r.image.clone())
    };
    let p = maybe_drop_bg(&p, include_background)?;
    let y = maybe_drop_bg(&r.y, include_background)?;
    Ok((p, y, w, iw))
}

/// Soft Dice loss `1 − (2 Σ p y + s_nr) / (Σ p + Σ y + s_dr)` per class, averaged
/// over classes (and images). Defaults follow PyMIC's `DiceLoss` (sums over the
/// whole batch, `s_nr = s_dr = 1e-5`); `batch = false` computes it per image as
/// MONAI's `DiceLoss` does by default. `squared_pred` uses `Σ p² + Σ y²` in the
/// denominator; `jaccard` gives the soft IoU `1 − (2 Σ p y + s_nr) / (2 (Σ p + Σ y − Σ p y) + s_dr)`
/// (MONAI's definition).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiceLoss {
    /// Sum over the batch before dividing (true) or compute per image (false).
    pub batch: bool,
    /// Numerator smoothing `s_nr`.
    pub smooth_nr: f64,
    /// Denominator smoothing `s_dr`.
    pub smooth_dr: f64,
    /// Square the prediction and target in the denominator.
    pub squared_pred: bool,
    /// Soft Jaccard (IoU) instead of Dice.
    pub jaccard: bool,
    /// Keep class 0 in the average.
    pub include_background: bool,
    /// Weights of the class average, normalised by their sum as PyMIC does
    /// (MONAI multiplies without normalising); uniform when absent.
    pub class_weight: Option<Vec<f64>>,
}

impl Default for DiceLoss {
    fn default() -> Self {
        Self {
            batch: true,
            smooth_nr: 1e-5,
            smooth_dr: 1e-5,
            squared_pred: false,
            jaccard: false,
            include_background: true,
            class_weight: None,
        }
    }
}

impl DiceLoss {
    /// The soft Jaccard (IoU) loss with MONAI's per-image defaults' smoothing.
    pub fn jaccard() -> Self {
        Self {
            jaccard: true,
            ..Self::default()
        }
    }

    /// Checks the parameters.
    pub fn validate(&self) -> std::result::Result<(), String> {
        check_nonneg("class_weight", &self.class_weight)?;
        if self.smooth_nr < 0.0 || self.smooth_dr < 0.0 {
            return Err("`smooth_nr` and `smooth_dr` must be >= 0".into());
        }
        Ok(())
    }

    /// Per-class Dice (or Jaccard) scores, `[C]` with `batch` or `[N, C]`.
    pub(crate) fn scores(&self, p: &Tensor, y: &Tensor, w: Option<&Tensor>) -> Result<Tensor> {
        let axes = reduce_axes(p.rank(), self.batch);
        let s = region_stats(p, y, w, &axes, self.squared_pred)?;
        let num = (s.tp.clone() * 2.0)? + self.smooth_nr;
        let den = if self.jaccard {
            ((s.sp.add(&s.sy)?.sub(&s.tp)? * 2.0)? + self.smooth_dr)?
        } else {
            (s.sp.add(&s.sy)? + self.smooth_dr)?
        };
        num?.div(&den)
    }
}

impl Loss for DiceLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        let name = if self.jaccard {
            "JaccardLoss"
        } else {
            "DiceLoss"
        };
        let (p, y, w, iw) = region_inputs(pred, target, self.batch, self.include_background, name)?;
        let f = self.scores(&p, &y, w.as_ref())?.affine(-1.0, 1.0)?;
        reduce_class_image(&f, self.class_weight.as_deref(), iw.as_ref())
    }
}

/// Focal Dice loss `1 − mean_c D_c^{1/β}` (Wang and Chung 2018; PyMIC's
/// `FocalDiceLoss`), with the Dice score `D_c` of [`DiceLoss`] (batch sums,
/// smoothing `1e-5`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FocalDiceLoss {
    /// β ≥ 1 (PyMIC's `FocalDiceLoss_beta`); default 2.
    pub beta: f64,
    /// Sum over the batch before dividing.
    pub batch: bool,
    /// Numerator and denominator smoothing.
    pub smooth: f64,
}

impl Default for FocalDiceLoss {
    fn default() -> Self {
        Self {
            beta: 2.0,
            batch: true,
            smooth: 1e-5,
        }
    }
}

impl FocalDiceLoss {
    /// Checks the parameters.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.beta.is_nan() || self.beta <= 0.0 {
            return Err(format!("`beta` must be > 0, got {}", self.beta));
        }
        Ok(())
    }
}

impl Loss for FocalDiceLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        let (p, y, w, iw) = region_inputs(pred, target, self.batch, true, "FocalDiceLoss")?;
        let dice = DiceLoss {
            batch: self.batch,
            smooth_nr: self.smooth,
            smooth_dr: self.smooth,
            ..DiceLoss::default()
        };
        let d = dice.scores(&p, &y, w.as_ref())?.powf(1.0 / self.beta)?;
        reduce_class_image(&d.affine(-1.0, 1.0)?, None, iw.as_ref())
    }
}

/// How [`GeneralizedDiceLoss`] turns a class volume `g = Σ y` into a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GdlWeight {
    /// `1 / g²` (Sudre et al.).
    Square,
    /// `1 / g`.
    Simple,
    /// `1`.
    Uniform,
}

/// Generalized Dice loss (Sudre et al. 2017), MONAI's `GeneralizedDiceLoss`:
/// `1 − (2 Σ_c w_c Σ p y + s_nr) / (Σ_c w_c Σ (p + y) + s_dr)` with
/// `w_c = 1/g_c²`; infinite weights (absent classes) are replaced by the
/// largest finite weight (per image, or over the batch with `batch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneralizedDiceLoss {
    /// Class weighting.
    pub w_type: GdlWeight,
    /// Sum over the batch before dividing.
    pub batch: bool,
    /// Numerator smoothing.
    pub smooth_nr: f64,
    /// Denominator smoothing.
    pub smooth_dr: f64,
    /// Keep class 0.
    pub include_background: bool,
}

impl Default for GeneralizedDiceLoss {
    fn default() -> Self {
        Self {
            w_type: GdlWeight::Square,
            batch: false,
            smooth_nr: 1e-5,
            smooth_dr: 1e-5,
            include_background: true,
        }
    }
}

impl GeneralizedDiceLoss {
    /// Checks the parameters.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.smooth_nr < 0.0 || self.smooth_dr < 0.0 {
            return Err("`smooth_nr` and `smooth_dr` must be >= 0".into());
        }
        Ok(())
    }
}

impl Loss for GeneralizedDiceLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        let (p, y, w, iw) = region_inputs(
            pred,
            target,
            self.batch,
            self.include_background,
            "GeneralizedDiceLoss",
        )?;
        let axes = reduce_axes(p.rank(), self.batch);
        let s = region_stats(&p, &y, w.as_ref(), &axes, false)?;
        // class weights from the (constant) target volumes
        let g = s.sy.detach();
        let dims = g.dims().to_vec();
        let c = *dims.last().unwrap_or(&1);
        let gv = g
            .to_dtype(candle_core::DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let mut wv: Vec<f64> = gv
            .iter()
            .map(|&x| match self.w_type {
                GdlWeight::Square => 1.0 / (x * x),
                GdlWeight::Simple => 1.0 / x,
                GdlWeight::Uniform => 1.0,
            })
            .collect();
        for row in wv.chunks_mut(c) {
            let mx = row
                .iter()
                .filter(|v| v.is_finite())
                .fold(0.0f64, |a, &b| a.max(b));
            for v in row.iter_mut() {
                if !v.is_finite() {
                    *v = mx;
                }
            }
        }
        let wt = Tensor::from_vec(wv, dims, p.device())?.to_dtype(p.dtype())?;
        let numer = ((s.tp.mul(&wt)?.sum_keepdim(D::Minus1)? * 2.0)? + self.smooth_nr)?;
        let denom = (s.sp.add(&s.sy)?.mul(&wt)?.sum_keepdim(D::Minus1)? + self.smooth_dr)?;
        let f = numer.div(&denom)?.affine(-1.0, 1.0)?;
        reduce_class_image(&f, None, iw.as_ref())
    }
}

/// Tversky loss `1 − (Σ p y + s_nr) / (Σ p y + α Σ p (1 − y) + β Σ (1 − p) y + s_dr)`
/// (MONAI's `TverskyLoss`), per image by default. `α = β = 0.5` is the Dice
/// loss; `β > α` is the asymmetric (F-β) Tversky loss that penalises false
/// negatives more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TverskyLoss {
    /// Weight α of false positives.
    pub alpha: f64,
    /// Weight β of false negatives.
    pub beta: f64,
    /// Sum over the batch before dividing.
    pub batch: bool,
    /// Numerator smoothing.
    pub smooth_nr: f64,
    /// Denominator smoothing.
    pub smooth_dr: f64,
    /// Keep class 0.
    pub include_background: bool,
}

impl Default for TverskyLoss {
    fn default() -> Self {
        Self {
            alpha: 0.5,
            beta: 0.5,
            batch: false,
            smooth_nr: 1e-5,
            smooth_dr: 1e-5,
            include_background: true,
        }
    }
}

impl TverskyLoss {
    /// Checks the parameters.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(self.alpha >= 0.0 && self.beta >= 0.0) {
            return Err("`alpha` and `beta` must be >= 0".into());
        }
        Ok(())
    }
}

impl Loss for TverskyLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        let (p, y, w, iw) = region_inputs(
            pred,
            target,
            self.batch,
            self.include_background,
            "TverskyLoss",
        )?;
        let axes = reduce_axes(p.rank(), self.batch);
        let s = region_stats(&p, &y, w.as_ref(), &axes, false)?;
        // Σ w p (1 − y) = Σ w p − Σ w p y;  Σ w (1 − p) y = Σ w y − Σ w p y
        let fp = s.sp.sub(&s.tp)?;
        let fneg = s.sy.sub(&s.tp)?;
        let num = (&s.tp + self.smooth_nr)?;
        let den = ((&s.tp + (fp * self.alpha)?)? + (fneg * self.beta)?)?;
        let f = num.div(&(den + self.smooth_dr)?)?.affine(-1.0, 1.0)?;
        reduce_class_image(&f, None, iw.as_ref())
    }
}

/// Softmax focal loss `−α_c (1 − p_c)^γ y_c ln p_c` (Lin et al.; MONAI's
/// `FocalLoss` with `use_softmax=True`), averaged over classes and pixels
/// (MONAI's `mean` reduction). A scalar `alpha` weights class 0 by `1 − α` and
/// the others by `α`; `class_weight` multiplies per class. With an ignore value
/// or pixel weights it is the weighted mean over pixels of the class mean
/// (MONAI with `ignore_index` divides by the valid-pixel count alone, i.e. is
/// C times larger).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FocalLoss {
    /// Focusing parameter γ ≥ 0.
    pub gamma: f64,
    /// Optional α balancing (background `1 − α`, foreground `α`).
    pub alpha: Option<f64>,
    /// Optional per-class weights.
    pub class_weight: Option<Vec<f64>>,
}

impl Default for FocalLoss {
    fn default() -> Self {
        Self {
            gamma: 2.0,
            alpha: None,
            class_weight: None,
        }
    }
}

impl FocalLoss {
    /// Checks the parameters.
    pub fn validate(&self) -> std::result::Result<(), String> {
        check_nonneg("class_weight", &self.class_weight)?;
        if self.gamma.is_nan() || self.gamma < 0.0 {
            return Err(format!("`gamma` must be >= 0, got {}", self.gamma));
        }
        if let Some(a) = self.alpha {
            if !(0.0..=1.0).contains(&a) {
                return Err(format!("`alpha` must be in [0, 1], got {a}"));
            }
        }
        Ok(())
    }
}

impl Loss for FocalLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        pred.check()?;
        let lp = pred.log_probs()?;
        let p = pred.probs()?;
        let r = resolve(&lp, target, "FocalLoss")?;
        let c = lp.dim(1)?;
        let modulator = p.affine(-1.0, 1.0)?.maximum(0.0)?.powf(self.gamma)?;
        let mut l = modulator.mul(&lp)?.mul(&r.y)?.neg()?;
        let mut cw = vec![1.0f64; c];
        if let Some(a) = self.alpha {
            for (i, v) in cw.iter_mut().enumerate() {
                *v *= if i == 0 { 1.0 - a } else { a };
            }
        }
        if let Some(w) = &self.class_weight {
            if w.len() != c {
                candle_core::bail!("FocalLoss: {} class weights given for {c} classes", w.len());
            }
            for (v, x) in cw.iter_mut().zip(w) {
                *v *= x;
            }
        }
        if self.alpha.is_some() || self.class_weight.is_some() {
            l = l.broadcast_mul(&class_view(&cw, &lp)?)?;
        }
        let per_pixel = (l.sum_keepdim(1)? / c as f64)?;
        pixel_mean(&per_pixel, r.combined(&lp)?.as_ref())
    }
}

/// Exponential-logarithmic loss (Wong et al. 2018; PyMIC's `ExpLogLoss`):
/// `w_dice · mean_c (−ln D'_c)^γ + (1 − w_dice) · mean_pixels Σ_c y_c ω_c (−ln p'_c)^γ`
/// with `D' = 0.005 + 0.99 D` (batch soft Dice), `p' = 0.005 + 0.99 p` and
/// `ω_c = (mean(y_c) + 0.1)^{-1/2}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpLogLoss {
    /// Weight of the Dice term in `[0, 1]`.
    pub w_dice: f64,
    /// Exponent γ.
    pub gamma: f64,
}

impl Default for ExpLogLoss {
    fn default() -> Self {
        Self {
            w_dice: 0.5,
            gamma: 0.3,
        }
    }
}

impl ExpLogLoss {
    /// Checks the parameters.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(0.0..=1.0).contains(&self.w_dice) {
            return Err(format!("`w_dice` must be in [0, 1], got {}", self.w_dice));
        }
        if self.gamma.is_nan() || self.gamma <= 0.0 {
            return Err(format!("`gamma` must be > 0, got {}", self.gamma));
        }
        Ok(())
    }
}

impl Loss for ExpLogLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        pred.check()?;
        let p = pred.probs()?;
        let r = resolve(&p, target, "ExpLogLoss")?;
        let w = r.combined(&p)?;
        let d = DiceLoss::default().scores(&p, &r.y, w.as_ref())?;
        let d = d.affine(0.99, 0.005)?;
        let exp_dice = d.log()?.neg()?.powf(self.gamma)?.mean_all()?;
        let axes = reduce_axes(p.rank(), true);
        let ymean = match &w {
            None => r.y.mean_keepdim(axes.clone())?,
            Some(w) => {
                r.y.broadcast_mul(w)?
                    .sum_keepdim(axes.clone())?
                    .broadcast_div(&(w.sum_all()? + 1e-10)?)?
            }
        };
        let wc = (ymean + 0.1)?.powf(-0.5)?;
        let ce = p.affine(0.99, 0.005)?.log()?.neg()?.powf(self.gamma)?;
        let exp_ce = ce.broadcast_mul(&wc)?.mul(&r.y)?.sum_keepdim(1)?;
        let exp_ce = pixel_mean(&exp_ce, w.as_ref())?;
        (exp_dice * self.w_dice)? + (exp_ce * (1.0 - self.w_dice))?
    }
}

/// Mean squared error between probabilities and the (one-hot/soft) target,
/// averaged over classes and pixels (PyMIC's `MSELoss`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MseLoss {}

impl Loss for MseLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        pred.check()?;
        let p = pred.probs()?;
        let r = resolve(&p, target, "MSELoss")?;
        let per_pixel = p.sub(&r.y)?.sqr()?.mean_keepdim(1)?;
        pixel_mean(&per_pixel, r.combined(&p)?.as_ref())
    }
}

/// Mean absolute error between probabilities and the target, averaged over
/// classes and pixels (PyMIC's `MAELoss`; robust to label noise, Ghosh et al.).
/// With pixel weights this is the weighted mean over pixels of the class mean
/// (PyMIC's weighted variant sums over classes instead, i.e. is C times larger).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaeLoss {}

impl Loss for MaeLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        pred.check()?;
        let p = pred.probs()?;
        let r = resolve(&p, target, "MAELoss")?;
        let per_pixel = p.sub(&r.y)?.abs()?.mean_keepdim(1)?;
        pixel_mean(&per_pixel, r.combined(&p)?.as_ref())
    }
}
