//! Losses for partially labelled multi-organ data: the marginal loss and the
//! exclusion loss (Shi, Xiao, Chen and Zhou, "Marginal loss and exclusion loss
//! for partially supervised multi-organ segmentation", Medical Image Analysis
//! 70, 2021).
//!
//! In such data each image annotates only some organs: its annotated classes
//! `A_n` (read from [`LossTarget::annotated`], `[N, C]`, 1 where class `k` is
//! annotated in image `n`; the background, class 0, always is). Every
//! unannotated organ is drawn as background (label 0), so label 0 means
//! "background or an unannotated organ". Plain cross-entropy or Dice would
//! teach the network that the unannotated organs are background; these two
//! losses do not. Images in one batch may have different annotated sets: the
//! merging below is done per image. Without `annotated` every class counts as
//! annotated: the marginal loss is then plain CE + Dice and the exclusion loss
//! is 0.
//!
//! Both losses read the labels like the other supervised losses: pixels equal
//! to the ignore value and the pixel weights (× image weights) weight every
//! sum, `w = pixel_weight × (label ≠ ignore) × image_weight`. Dice sums run
//! over the whole batch (PyMIC's default for [`crate::DiceLoss`]).

use candle_core::{DType, Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::input::{pixel_mean, reduce_axes, resolve, Prediction};
use crate::supervised::region_stats;
use crate::{Loss, LossTarget};

/// Smallest value fed to `ln` (as [`Prediction::log_probs`] does for probabilities).
const LOG_FLOOR: f64 = 1e-30;

/// Checks the CE / Dice weights and the smoothing of both losses.
fn check_params(ce_weight: f64, dice_weight: f64, smooth: f64) -> std::result::Result<(), String> {
    for (name, v) in [("ce_weight", ce_weight), ("dice_weight", dice_weight)] {
        if !v.is_finite() || v < 0.0 {
            return Err(format!("`{name}` must be finite and >= 0, got {v}"));
        }
    }
    if ce_weight == 0.0 && dice_weight == 0.0 {
        return Err("`ce_weight` and `dice_weight` must not both be 0".into());
    }
    if !smooth.is_finite() || smooth <= 0.0 {
        return Err(format!("`smooth` must be finite and > 0, got {smooth}"));
    }
    Ok(())
}

/// The checked `annotated` field of a target, on the host and as tensors
/// shaped for a prediction `[N, C, ...spatial]`.
struct Annotated {
    /// `a[n · C + k]`, 0 or 1, with `a[n · C] = 1`.
    host: Vec<f64>,
    /// Number of images.
    n: usize,
    /// Number of classes.
    c: usize,
}

impl Annotated {
    /// Reads and checks `target.annotated` against `pred`; `None` when absent.
    fn read(pred: &Tensor, target: &LossTarget, loss: &str) -> Result<Option<Self>> {
        let Some(a) = &target.annotated else {
            return Ok(None);
        };
        let (n, c) = (pred.dim(0)?, pred.dim(1)?);
        if a.dims() != [n, c] {
            candle_core::bail!(
                "{loss}: `annotated` must have shape [N, C] = [{n}, {c}] (one row per image, one column per class) to match the prediction {:?}, got {:?}",
                pred.dims(),
                a.dims()
            );
        }
        let host = a.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        for i in 0..n {
            for k in 0..c {
                let v = host[i * c + k];
                if v != 0.0 && v != 1.0 {
                    candle_core::bail!("{loss}: `annotated`[{i}, {k}] is {v}, expected 0 or 1");
                }
                if k == 0 && v != 1.0 {
                    candle_core::bail!(
                        "{loss}: `annotated`[{i}, 0] is {v}; the background (class 0) is always annotated, expected 1"
                    );
                }
            }
        }
        Ok(Some(Self { host, n, c }))
    }

    /// Whether class `k` is annotated in image `i`.
    fn is(&self, i: usize, k: usize) -> bool {
        self.host[i * self.c + k] == 1.0
    }

    /// `f(i, k)` for every image and class as a `[N, C, 1, ...]` tensor of
    /// `pred`'s dtype and device.
    fn view(&self, pred: &Tensor, f: impl Fn(usize, usize) -> f64) -> Result<Tensor> {
        let v: Vec<f64> = (0..self.n)
            .flat_map(|i| (0..self.c).map(move |k| (i, k)))
            .map(|(i, k)| f(i, k))
            .collect();
        let mut shape = vec![1usize; pred.rank()];
        shape[0] = self.n;
        shape[1] = self.c;
        Tensor::from_vec(v, shape, pred.device())?.to_dtype(pred.dtype())
    }

    /// Merges, per image, the channels of the unannotated classes into
    /// channel 0: `t'_0 = t_0 + Σ_{k ∉ A_n} t_k`, `t'_k = t_k` for `k ∈ A_n`,
    /// `t'_k = 0` for `k ∉ A_n`. `t` is `[N, C, ...spatial]`.
    fn merge(&self, t: &Tensor) -> Result<Tensor> {
        let keep = self.view(t, |i, k| if self.is(i, k) { 1.0 } else { 0.0 })?;
        let drop = self.view(t, |i, k| if self.is(i, k) { 0.0 } else { 1.0 })?;
        let extra = t.broadcast_mul(&drop)?.sum_keepdim(1)?;
        let bg = channel0(t)?;
        t.broadcast_mul(&keep)?.add(&extra.broadcast_mul(&bg)?)
    }

    /// Log of the merged probabilities, from the log-probabilities `lp`:
    /// channel 0 is `ln Σ_{k ∈ {0} ∪ (not A_n)} p_k`, a log-sum-exp of `lp`
    /// with a detached shift (exact value and gradient, no underflow);
    /// annotated organs keep `lp_k`; unannotated channels are 0 (their merged
    /// target is 0 too).
    fn merged_log_probs(&self, lp: &Tensor) -> Result<Tensor> {
        // 0 on the merged set {0} ∪ (not A_n), −1e30 (−inf in half precision) elsewhere
        let bias = self.view(
            lp,
            |i, k| {
                if k == 0 || !self.is(i, k) {
                    0.0
                } else {
                    -1e30
                }
            },
        )?;
        let x = lp.broadcast_add(&bias)?;
        let m = x.max_keepdim(1)?.detach();
        let lse = x.broadcast_sub(&m)?.exp()?.sum_keepdim(1)?.log()?.add(&m)?;
        let organs = self.view(lp, |i, k| if k > 0 && self.is(i, k) { 1.0 } else { 0.0 })?;
        let bg = channel0(lp)?;
        lp.broadcast_mul(&organs)?.add(&lse.broadcast_mul(&bg)?)
    }
}

/// The one-hot of channel 0 as a `[1, C, 1, ...]` tensor of `t`'s dtype.
fn channel0(t: &Tensor) -> Result<Tensor> {
    let c = t.dim(1)?;
    let mut v = vec![0.0f64; c];
    v[0] = 1.0;
    let mut shape = vec![1usize; t.rank()];
    shape[1] = c;
    Tensor::from_vec(v, shape, t.device())?.to_dtype(t.dtype())
}

/// Mean of a per-class vector `[C]` over the classes where `keep` is true.
fn masked_class_mean(v: &Tensor, keep: &[bool]) -> Result<Tensor> {
    let k = keep.iter().filter(|&&b| b).count();
    let mask: Vec<f64> = keep.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
    let mask = Tensor::from_vec(mask, keep.len(), v.device())?.to_dtype(v.dtype())?;
    v.mul(&mask)?.sum_all()? / k as f64
}

/// Adds `weight × v` to an optional running total.
fn accumulate(total: Option<Tensor>, weight: f64, v: Tensor) -> Result<Option<Tensor>> {
    let v = (v * weight)?;
    Ok(Some(match total {
        None => v,
        Some(t) => t.add(&v)?,
    }))
}

/// Marginal loss (Shi et al. 2021): cross-entropy and Dice on the *marginal*
/// probabilities of the labels an image actually has.
///
/// For image `n` with annotated classes `A_n` (background included), the
/// probabilities and the one-hot target are merged: `p'_0 = p_0 + Σ_{k ∉ A_n} p_k`
/// (the merged background: true background or any unannotated organ),
/// `p'_k = p_k` for annotated organs, and unannotated channels vanish; the
/// target is merged the same way (a pixel labelled with a class that its image
/// does not annotate counts as merged background). Then
///
/// - marginal CE: `−Σ_k y'_k ln p'_k` averaged over pixels
///   (`Σ w ℓ / (Σ w + 1e-10)`), with `ln p'_0` a log-sum-exp of the
///   log-probabilities (stable for logits);
/// - marginal Dice: `1 − mean_k (2 Σ w p'_k y'_k + s) / (Σ w p'_k + Σ w y'_k + s)`,
///   sums over the batch and all pixels, mean over the classes annotated in at
///   least one image of the batch (class 0 always is);
///
/// and the loss is `ce_weight × CE + dice_weight × Dice`. With every class
/// annotated (or no `annotated` field) this is exactly
/// [`crate::CrossEntropyLoss`] (default) `× ce_weight` + [`crate::DiceLoss`]
/// (default, `smooth_nr = smooth_dr = smooth`) `× dice_weight`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarginalLoss {
    /// Weight of the marginal cross-entropy (default 1).
    pub ce_weight: f64,
    /// Weight of the marginal Dice loss (default 1).
    pub dice_weight: f64,
    /// Dice smoothing `s`, added to numerator and denominator (default 1e-5).
    pub smooth: f64,
}

impl Default for MarginalLoss {
    fn default() -> Self {
        Self {
            ce_weight: 1.0,
            dice_weight: 1.0,
            smooth: 1e-5,
        }
    }
}

impl MarginalLoss {
    /// Checks the parameters: weights finite, `>= 0` and not both 0; `smooth > 0`.
    pub fn validate(&self) -> std::result::Result<(), String> {
        check_params(self.ce_weight, self.dice_weight, self.smooth)
    }
}

impl Loss for MarginalLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        const NAME: &str = "MarginalLoss";
        pred.check()?;
        let p = pred.probs()?;
        let r = resolve(&p, target, NAME)?;
        let ann = Annotated::read(&p, target, NAME)?;
        let w = r.combined(&p)?;
        let y = match &ann {
            None => r.y.clone(),
            Some(a) => a.merge(&r.y)?,
        };
        let mut total = None;
        if self.ce_weight > 0.0 {
            let lp = pred.log_probs()?;
            let lp = match &ann {
                None => lp,
                Some(a) => a.merged_log_probs(&lp)?,
            };
            let ce = y.mul(&lp)?.sum_keepdim(1)?.neg()?;
            total = accumulate(total, self.ce_weight, pixel_mean(&ce, w.as_ref())?)?;
        }
        if self.dice_weight > 0.0 {
            let pm = match &ann {
                None => p.clone(),
                Some(a) => a.merge(&p)?,
            };
            let axes = reduce_axes(p.rank(), true);
            let s = region_stats(&pm, &y, w.as_ref(), &axes, false)?;
            let dice = ((s.tp * 2.0)? + self.smooth)?.div(&(s.sp.add(&s.sy)? + self.smooth)?)?;
            let c = p.dim(1)?;
            let keep: Vec<bool> = match &ann {
                None => vec![true; c],
                Some(a) => (0..c).map(|k| (0..a.n).any(|i| a.is(i, k))).collect(),
            };
            let loss = masked_class_mean(&dice, &keep)?.affine(-1.0, 1.0)?;
            total = accumulate(total, self.dice_weight, loss)?;
        }
        total.ok_or_else(|| candle_core::Error::Msg(format!("{NAME}: both weights are 0")))
    }
}

/// Exclusion loss (Shi et al. 2021): organs do not overlap, so a pixel labelled
/// as an annotated organ is certainly none of the unannotated ones.
///
/// For image `n`, the exclusion map `e_n = Σ_{k ∈ A_n, k ≠ 0} y_k` is 1 on the
/// pixels labelled with an annotated foreground organ (the union of the
/// annotated organs' masks; 0 on background-labelled and ignored pixels).
/// For every class `k` not annotated in image `n` the prediction `p_k` is
/// pushed off `e_n`:
///
/// - exclusion Dice: `mean_k 2 Σ w u_{n,k} p_k e_n / (Σ w u_{n,k} (p_k + e_n) + s)`,
///   where `u_{n,k} = 1` when image `n` does not annotate `k`, sums over the
///   batch and all pixels, mean over the classes unannotated in at least one
///   image of the batch. It is an overlap to minimise: 0 when no unannotated
///   class has probability on `e`. (`s` is in the denominator only.)
/// - exclusion CE: `−e_n Σ_{k ∉ A_n} ln(1 − p_k)` averaged over all pixels
///   (`Σ w ℓ / (Σ w + 1e-10)`). For logits, `1 − p_k` is the sum of the other
///   classes' probabilities when `p_k > 1/2` (no cancellation); for
///   probabilities it is `1 − p_k`; `ln` is floored at `1e-30`.
///
/// The loss is `ce_weight × CE + dice_weight × Dice`, and 0 when every class is
/// annotated in every image (or there is no `annotated` field). Annotated
/// classes get no term here: combine with [`MarginalLoss`] for them.
///
/// Only the paper's abstract could be consulted when this was written: it
/// describes the exclusion loss as the dissimilarity between the labelled
/// organs and the predicted segmentation of the unlabelled ones. The CE form
/// `−e ln(1 − p)` and the Dice form above are this crate's reading of it, both
/// bounded below by 0; the paper's exact equations may differ (e.g. in how the
/// classes are averaged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExclusionLoss {
    /// Weight of the exclusion cross-entropy (default 1).
    pub ce_weight: f64,
    /// Weight of the exclusion Dice term (default 1).
    pub dice_weight: f64,
    /// Denominator smoothing `s` of the exclusion Dice (default 1e-5).
    pub smooth: f64,
}

impl Default for ExclusionLoss {
    fn default() -> Self {
        Self {
            ce_weight: 1.0,
            dice_weight: 1.0,
            smooth: 1e-5,
        }
    }
}

impl ExclusionLoss {
    /// Checks the parameters: weights finite, `>= 0` and not both 0; `smooth > 0`.
    pub fn validate(&self) -> std::result::Result<(), String> {
        check_params(self.ce_weight, self.dice_weight, self.smooth)
    }
}

/// `ln(1 − p_k)` per class, `[N, C, ...spatial]`, floored at `ln 1e-30`.
fn log_one_minus(pred: &Prediction, p: &Tensor) -> Result<Tensor> {
    let q = match pred.kind() {
        crate::PredKind::Probabilities => p.affine(-1.0, 1.0)?,
        crate::PredKind::Logits => {
            // when p_k > 1/2 every other class is below 1/2, so 1 − p_k is the
            // sum of the probabilities at most 1/2: computed without cancellation
            let small = p.le(0.5)?.to_dtype(p.dtype())?;
            let rest = p.mul(&small)?.sum_keepdim(1)?.broadcast_as(p.dims())?;
            p.gt(0.5)?.where_cond(&rest, &p.affine(-1.0, 1.0)?)?
        }
    };
    q.maximum(LOG_FLOOR)?.log()
}

impl Loss for ExclusionLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        const NAME: &str = "ExclusionLoss";
        pred.check()?;
        let p = pred.probs()?;
        let r = resolve(&p, target, NAME)?;
        let zero = || Tensor::zeros((), p.dtype(), p.device());
        let Some(a) = Annotated::read(&p, target, NAME)? else {
            return zero();
        };
        let c = p.dim(1)?;
        let excluded: Vec<bool> = (0..c)
            .map(|k| k > 0 && (0..a.n).any(|i| !a.is(i, k)))
            .collect();
        if !excluded.iter().any(|&b| b) {
            return zero();
        }
        let w = r.combined(&p)?;
        let organs = a.view(&p, |i, k| if k > 0 && a.is(i, k) { 1.0 } else { 0.0 })?;
        let u = a.view(&p, |i, k| if k > 0 && !a.is(i, k) { 1.0 } else { 0.0 })?;
        // e_n: 1 on pixels labelled as an annotated organ, [N, 1, ...spatial]
        let e = r.y.broadcast_mul(&organs)?.sum_keepdim(1)?;
        let mut total = None;
        if self.ce_weight > 0.0 {
            let l = log_one_minus(pred, &p)?;
            let ce = l.broadcast_mul(&u)?.sum_keepdim(1)?.mul(&e)?.neg()?;
            total = accumulate(total, self.ce_weight, pixel_mean(&ce, w.as_ref())?)?;
        }
        if self.dice_weight > 0.0 {
            let pu = p.broadcast_mul(&u)?;
            let eu = e.broadcast_mul(&u)?;
            let axes = reduce_axes(p.rank(), true);
            let s = region_stats(&pu, &eu, w.as_ref(), &axes, false)?;
            let overlap = (s.tp * 2.0)?.div(&(s.sp.add(&s.sy)? + self.smooth)?)?;
            total = accumulate(
                total,
                self.dice_weight,
                masked_class_mean(&overlap, &excluded)?,
            )?;
        }
        total.ok_or_else(|| candle_core::Error::Msg(format!("{NAME}: both weights are 0")))
    }
}
