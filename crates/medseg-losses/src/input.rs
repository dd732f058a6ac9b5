//! What a loss consumes: the network's prediction (explicitly logits or
//! probabilities) and a [`LossTarget`] holding labels, weights and any extra
//! inputs (image, teacher prediction, masks).
//!
//! All tensors are channel-first, PyTorch layout: predictions `[N, C, H, W]`
//! or `[N, C, D, H, W]`; maps that carry one value per pixel are
//! `[N, 1, ...spatial]` (a map without the singleton channel, `[N, ...spatial]`,
//! is accepted too).

use std::sync::OnceLock;

use candle_core::{DType, Result, Tensor, D};
use serde::{Deserialize, Serialize};

/// Whether a prediction tensor holds raw network outputs or class probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredKind {
    /// Unnormalised scores; losses apply a softmax over the channel axis.
    Logits,
    /// Class probabilities that already sum to one over the channel axis.
    Probabilities,
}

/// Smallest probability fed to `ln` when the prediction is given as probabilities.
const PROB_FLOOR: f64 = 1e-30;

/// A prediction `[N, C, ...spatial]` together with its [`PredKind`]. The
/// softmax and log-softmax are computed at most once and shared by every loss
/// that reads them (e.g. the terms of a [`crate::CombinedLoss`]).
#[derive(Debug, Clone)]
pub struct Prediction {
    raw: Tensor,
    kind: PredKind,
    probs: OnceLock<Tensor>,
    log_probs: OnceLock<Tensor>,
}

impl Prediction {
    /// Wraps raw network outputs (logits) `[N, C, ...spatial]`.
    pub fn logits(t: Tensor) -> Self {
        Self::new(t, PredKind::Logits)
    }

    /// Wraps class probabilities `[N, C, ...spatial]` (already soft-maxed).
    pub fn probabilities(t: Tensor) -> Self {
        Self::new(t, PredKind::Probabilities)
    }

    /// Wraps `t` with an explicit kind.
    pub fn new(t: Tensor, kind: PredKind) -> Self {
        Self {
            raw: t,
            kind,
            probs: OnceLock::new(),
            log_probs: OnceLock::new(),
        }
    }

    /// The tensor as given.
    pub fn raw(&self) -> &Tensor {
        &self.raw
    }

    /// Whether [`Prediction::raw`] holds logits or probabilities.
    pub fn kind(&self) -> PredKind {
        self.kind
    }

    /// A detached copy (no gradient flows through it), e.g. for a teacher.
    pub fn detach(&self) -> Self {
        Self::new(self.raw.detach(), self.kind)
    }

    /// Checks that the prediction is `[N, C, H, W]` or `[N, C, D, H, W]`, floating point.
    pub fn check(&self) -> Result<()> {
        let r = self.raw.rank();
        if r != 4 && r != 5 {
            candle_core::bail!(
                "prediction must be [N, C, H, W] or [N, C, D, H, W], got shape {:?}",
                self.raw.dims()
            );
        }
        if !self.raw.dtype().is_float() {
            candle_core::bail!(
                "prediction must be floating point, got {:?}",
                self.raw.dtype()
            );
        }
        Ok(())
    }

    /// Number of classes (size of axis 1).
    pub fn num_classes(&self) -> Result<usize> {
        self.raw.dim(1)
    }

    /// Class probabilities: the softmax over channels of logits, or the tensor itself.
    pub fn probs(&self) -> Result<Tensor> {
        if let Some(p) = self.probs.get() {
            return Ok(p.clone());
        }
        let p = match self.kind {
            PredKind::Logits => softmax_channels(&self.raw)?,
            PredKind::Probabilities => self.raw.clone(),
        };
        Ok(self.probs.get_or_init(|| p).clone())
    }

    /// Log class probabilities: a stable log-softmax of logits, or
    /// `ln(max(p, 1e-30))` of probabilities.
    pub fn log_probs(&self) -> Result<Tensor> {
        if let Some(p) = self.log_probs.get() {
            return Ok(p.clone());
        }
        let lp = match self.kind {
            PredKind::Logits => log_softmax_channels(&self.raw)?,
            PredKind::Probabilities => self.raw.maximum(PROB_FLOOR)?.log()?,
        };
        Ok(self.log_probs.get_or_init(|| lp).clone())
    }
}

/// Softmax over the channel axis (dim 1): `medseg-ops`' fused kernel on CPU
/// f32, candle's composition elsewhere.
pub(crate) fn softmax_channels(x: &Tensor) -> Result<Tensor> {
    medseg_ops::softmax_channels(x)
}

/// Log-softmax over the channel axis (dim 1), as [`softmax_channels`].
pub(crate) fn log_softmax_channels(x: &Tensor) -> Result<Tensor> {
    medseg_ops::log_softmax_channels(x)
}

/// Ground-truth labels.
#[derive(Debug, Clone)]
pub enum Labels {
    /// Integer class indices, `[N, 1, ...spatial]` or `[N, ...spatial]`, any dtype
    /// (u8, u32, i64, f32, f64 holding whole numbers). Pixels equal to `ignore`
    /// are left out of every loss (they get weight 0).
    ClassMap {
        /// The class map.
        map: Tensor,
        /// The "not annotated" value (medseg's default is 255), if any.
        ignore: Option<u32>,
    },
    /// One-hot or soft maps `[N, C, ...spatial]`, same shape as the prediction.
    Soft(Tensor),
}

/// Everything besides the prediction that a loss may read. Fields that a loss
/// needs and finds missing produce an error naming the field.
#[derive(Debug, Clone, Default)]
pub struct LossTarget {
    /// Ground-truth labels (supervised, noisy and partial losses).
    pub labels: Option<Labels>,
    /// Per-pixel weights `[N, 1, ...spatial]`, e.g. 1 on annotated pixels and 0
    /// elsewhere for partial cross-entropy.
    pub pixel_weight: Option<Tensor>,
    /// Per-image weights `[N]`.
    pub image_weight: Option<Tensor>,
    /// The input image `[N, Ci, ...spatial]` (Mumford–Shah, Gated CRF).
    pub image: Option<Tensor>,
    /// Valid-pixel mask `[N, 1, ...spatial]` for the Gated CRF loss (1 = valid).
    pub valid_mask: Option<Tensor>,
    /// Mask of pixels whose label is suspected noisy `[N, 1, ...spatial]`
    /// (nonzero = smooth the label), read by the SLSR loss.
    pub noisy_mask: Option<Tensor>,
    /// Teacher / second-view prediction for consistency losses; it is detached.
    pub teacher: Option<Prediction>,
    /// Classes annotated in each image, `[N, C]` (f32 or any dtype holding 0
    /// and 1): 1 where class `c` is annotated in image `n`; the background
    /// (column 0) is always 1. Read by [`crate::MarginalLoss`] and
    /// [`crate::ExclusionLoss`] for partially labelled data; `None` means every
    /// class is annotated in every image.
    pub annotated: Option<Tensor>,
}

impl LossTarget {
    /// A target with no fields set (entropy, total variation...).
    pub fn none() -> Self {
        Self::default()
    }

    /// A class-map target without an ignore value.
    pub fn class_map(map: Tensor) -> Self {
        Self {
            labels: Some(Labels::ClassMap { map, ignore: None }),
            ..Self::default()
        }
    }

    /// A one-hot or soft target `[N, C, ...spatial]`.
    pub fn soft(t: Tensor) -> Self {
        Self {
            labels: Some(Labels::Soft(t)),
            ..Self::default()
        }
    }

    /// Sets the ignore value of a class-map target (no effect on soft targets).
    pub fn with_ignore(mut self, ignore: u32) -> Self {
        if let Some(Labels::ClassMap { ignore: ig, .. }) = &mut self.labels {
            *ig = Some(ignore);
        }
        self
    }

    /// Sets per-pixel weights `[N, 1, ...spatial]`.
    pub fn with_pixel_weight(mut self, w: Tensor) -> Self {
        self.pixel_weight = Some(w);
        self
    }

    /// Sets per-image weights `[N]`.
    pub fn with_image_weight(mut self, w: Tensor) -> Self {
        self.image_weight = Some(w);
        self
    }

    /// Sets the input image `[N, Ci, ...spatial]`.
    pub fn with_image(mut self, img: Tensor) -> Self {
        self.image = Some(img);
        self
    }

    /// Sets the valid-pixel mask `[N, 1, ...spatial]`.
    pub fn with_valid_mask(mut self, m: Tensor) -> Self {
        self.valid_mask = Some(m);
        self
    }

    /// Sets the noisy-label mask `[N, 1, ...spatial]`.
    pub fn with_noisy_mask(mut self, m: Tensor) -> Self {
        self.noisy_mask = Some(m);
        self
    }

    /// Sets the teacher prediction (stored detached).
    pub fn with_teacher(mut self, t: Prediction) -> Self {
        self.teacher = Some(t.detach());
        self
    }

    /// Sets the annotated classes `[N, C]` (1 = class annotated in that image,
    /// column 0 always 1) for partial labels.
    pub fn with_annotated(mut self, a: Tensor) -> Self {
        self.annotated = Some(a);
        self
    }
}

/// Labels and weights brought to the prediction's shape and dtype.
pub(crate) struct Resolved {
    /// One-hot / soft target `[N, C, ...spatial]` (zero on ignored pixels).
    pub y: Tensor,
    /// Pixel weight × valid (not ignored) mask, `[N, 1, ...spatial]`, without image weights.
    pub pixel: Option<Tensor>,
    /// Image weights `[N]`.
    pub image: Option<Tensor>,
}

impl Resolved {
    /// Pixel weights with the image weights folded in, `[N, 1, ...spatial]`.
    pub fn combined(&self, pred: &Tensor) -> Result<Option<Tensor>> {
        match (&self.pixel, &self.image) {
            (None, None) => Ok(None),
            (Some(p), None) => Ok(Some(p.clone())),
            (p, Some(iw)) => {
                let shape = pixel_shape(pred)?;
                let iw = per_image_view(iw, pred.rank())?;
                let w = match p {
                    Some(p) => p.broadcast_mul(&iw)?,
                    None => iw.broadcast_as(shape)?.contiguous()?,
                };
                Ok(Some(w))
            }
        }
    }
}

/// `[N, 1, ...spatial]` for a prediction `[N, C, ...spatial]`.
pub(crate) fn pixel_shape(pred: &Tensor) -> Result<Vec<usize>> {
    let mut s = pred.dims().to_vec();
    s[1] = 1;
    Ok(s)
}

/// `[N]` viewed as `[N, 1, 1, 1(, 1)]`.
pub(crate) fn per_image_view(w: &Tensor, rank: usize) -> Result<Tensor> {
    let n = w.elem_count();
    let mut s = vec![1usize; rank];
    s[0] = n;
    w.reshape(s)
}

/// Brings a per-pixel map (`[N, 1, ...]` or `[N, ...]`) to `[N, 1, ...spatial]`
/// of `pred`, in `pred`'s dtype.
pub(crate) fn pixel_map(m: &Tensor, pred: &Tensor, what: &str) -> Result<Tensor> {
    let want = pixel_shape(pred)?;
    let m = if m.rank() + 1 == want.len() {
        m.unsqueeze(1)?
    } else {
        m.clone()
    };
    if m.dims() != want.as_slice() {
        candle_core::bail!(
            "{what} must have shape {:?} (or without the singleton channel) to match the prediction {:?}, got {:?}",
            want,
            pred.dims(),
            m.dims()
        );
    }
    m.to_dtype(pred.dtype())
}

/// Turns the target's labels and weights into tensors matching `pred`
/// `[N, C, ...spatial]`.
pub(crate) fn resolve(pred: &Tensor, target: &LossTarget, loss: &str) -> Result<Resolved> {
    let labels = target.labels.as_ref().ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "{loss}: the target has no labels (`labels` is None)"
        ))
    })?;
    let c = pred.dim(1)?;
    let dtype = pred.dtype();
    let (y, valid) = match labels {
        Labels::Soft(t) => {
            if t.dims() != pred.dims() {
                candle_core::bail!(
                    "{loss}: soft/one-hot target shape {:?} differs from prediction shape {:?}",
                    t.dims(),
                    pred.dims()
                );
            }
            (t.to_dtype(dtype)?, None)
        }
        Labels::ClassMap { map, ignore } => {
            let m = pixel_map(map, pred, "class map")
                .map_err(|e| candle_core::Error::Msg(format!("{loss}: {e}")))?;
            let v = m.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            check_class_values(&v, c, *ignore, loss)?;
            // one-hot (and valid mask) built on the host, where the labels were checked
            let n = pred.dim(0)?;
            let s = v.len() / n.max(1);
            let mut onehot = vec![0.0f64; n * c * s];
            for b in 0..n {
                for i in 0..s {
                    let x = v[b * s + i];
                    if x < c as f64 {
                        onehot[(b * c + x as usize) * s + i] = 1.0;
                    }
                }
            }
            let y = host_tensor(onehot, pred.dims(), dtype, pred.device())?;
            let valid = match ignore {
                Some(ig) => {
                    let valid: Vec<f64> = v
                        .iter()
                        .map(|&x| if x == *ig as f64 { 0.0 } else { 1.0 })
                        .collect();
                    Some(host_tensor(valid, m.dims(), dtype, pred.device())?)
                }
                None => None,
            };
            (y, valid)
        }
    };
    let pw = match &target.pixel_weight {
        Some(w) => Some(
            pixel_map(w, pred, "pixel weight")
                .map_err(|e| candle_core::Error::Msg(format!("{loss}: {e}")))?,
        ),
        None => None,
    };
    let pixel = match (pw, valid) {
        (Some(a), Some(b)) => Some(a.mul(&b)?),
        (Some(a), None) => Some(a),
        (None, Some(b)) => Some(b),
        (None, None) => None,
    };
    let image = match &target.image_weight {
        Some(w) => {
            let n = pred.dim(0)?;
            if w.elem_count() != n {
                candle_core::bail!(
                    "{loss}: image weights have {} values, the batch has {n} images",
                    w.elem_count()
                );
            }
            Some(w.flatten_all()?.to_dtype(dtype)?)
        }
        None => None,
    };
    Ok(Resolved { y, pixel, image })
}

/// A host vector as a tensor of `dtype` on `device`.
fn host_tensor(
    v: Vec<f64>,
    shape: &[usize],
    dtype: DType,
    device: &candle_core::Device,
) -> Result<Tensor> {
    match dtype {
        DType::F32 => Tensor::from_vec(
            v.into_iter().map(|x| x as f32).collect::<Vec<f32>>(),
            shape,
            device,
        ),
        DType::F64 => Tensor::from_vec(v, shape, device),
        _ => Tensor::from_vec(v, shape, device)?.to_dtype(dtype),
    }
}

fn check_class_values(v: &[f64], c: usize, ignore: Option<u32>, loss: &str) -> Result<()> {
    for &x in v {
        let ok_int = x.fract() == 0.0 && x >= 0.0;
        let is_ignore = ignore.is_some_and(|ig| x == ig as f64);
        if !ok_int || (!is_ignore && x >= c as f64) {
            candle_core::bail!(
                "{loss}: class map value {x} is not a class index in 0..{c}{}",
                match ignore {
                    Some(ig) => format!(" nor the ignore value {ig}"),
                    None => String::new(),
                }
            );
        }
    }
    Ok(())
}

/// Weighted mean over pixels of a per-pixel map `[N, 1, ...]`: `Σ w·v / (Σ w + 1e-10)`,
/// or the plain mean without weights.
pub(crate) fn pixel_mean(v: &Tensor, w: Option<&Tensor>) -> Result<Tensor> {
    match w {
        None => v.mean_all(),
        Some(w) => {
            let num = v.broadcast_mul(w)?.sum_all()?;
            let den = (w.sum_all()? + 1e-10)?;
            num.div(&den)
        }
    }
}

/// The spatial axes `2..rank`, with axis 0 in front when `batch`.
pub(crate) fn reduce_axes(rank: usize, batch: bool) -> Vec<usize> {
    let mut v: Vec<usize> = if batch { vec![0] } else { vec![] };
    v.extend(2..rank);
    v
}

/// `t.sum(axes)`, where `axes` are those of [`reduce_axes`]: the spatial axes
/// `2..` are merged into one and summed over contiguous runs first, then the
/// batch axis if it is one of `axes`. candle sums a set of axes that is not a
/// trailing run with index arithmetic per element, which made the Dice sums
/// of a 4x4x256x256 batch take several milliseconds each; the result is the
/// same sum up to rounding order.
pub(crate) fn sum_axes(t: &Tensor, axes: &[usize]) -> Result<Tensor> {
    let r = t.rank();
    if r < 3 || !(2..r).all(|a| axes.contains(&a)) {
        return t.sum(axes);
    }
    let per_class = t.flatten_from(2)?.sum(2)?;
    let rest: Vec<usize> = axes.iter().copied().filter(|&a| a < 2).collect();
    if rest.is_empty() {
        Ok(per_class)
    } else {
        per_class.sum(rest)
    }
}

/// Mean over the last axis with optional per-entry weights `w` (same last length):
/// `Σ w·v / Σ w`. `v` is `[..., K]`.
pub(crate) fn weighted_last_mean(v: &Tensor, w: Option<&[f64]>) -> Result<Tensor> {
    match w {
        None => v.mean(D::Minus1),
        Some(w) => {
            let k = v.dim(D::Minus1)?;
            if w.len() != k {
                candle_core::bail!("{} class weights given for {k} classes", w.len());
            }
            let s: f64 = w.iter().sum();
            let wt = Tensor::from_slice(w, k, v.device())?.to_dtype(v.dtype())?;
            v.broadcast_mul(&wt)?.sum(D::Minus1)? / s
        }
    }
}

/// Per-class weights as a `[1, C, 1, ...]` tensor.
pub(crate) fn class_view(w: &[f64], pred: &Tensor) -> Result<Tensor> {
    let c = pred.dim(1)?;
    if w.len() != c {
        candle_core::bail!("{} class weights given for {c} classes", w.len());
    }
    let mut s = vec![1usize; pred.rank()];
    s[1] = c;
    Tensor::from_slice(w, c, pred.device())?
        .to_dtype(pred.dtype())?
        .reshape(s)
}

/// Pixel weights × image weights without labels (`[N, 1, ...spatial]`), for
/// losses that need no labels (entropy, consistency).
pub(crate) fn weights_only(
    pred: &Tensor,
    target: &LossTarget,
    loss: &str,
) -> Result<Option<Tensor>> {
    let pixel = match &target.pixel_weight {
        Some(w) => Some(
            pixel_map(w, pred, "pixel weight")
                .map_err(|e| candle_core::Error::Msg(format!("{loss}: {e}")))?,
        ),
        None => None,
    };
    let image = match &target.image_weight {
        Some(w) => {
            if w.elem_count() != pred.dim(0)? {
                candle_core::bail!(
                    "{loss}: image weights have {} values, the batch has {} images",
                    w.elem_count(),
                    pred.dim(0)?
                );
            }
            Some(w.flatten_all()?.to_dtype(pred.dtype())?)
        }
        None => None,
    };
    Resolved {
        y: pred.clone(),
        pixel,
        image,
    }
    .combined(pred)
}

/// Nearest-neighbour resampling of the spatial axes (`2..`) of a `[N, C, ...]`
/// tensor to `size`, with PyTorch's `nearest` rule `src = floor(dst · in / out)`.
pub fn resize_nearest(t: &Tensor, size: &[usize]) -> Result<Tensor> {
    if t.rank() != size.len() + 2 {
        candle_core::bail!(
            "resize_nearest: tensor of shape {:?} cannot be resized to spatial size {size:?}",
            t.dims()
        );
    }
    let mut out = t.clone();
    for (i, &o) in size.iter().enumerate() {
        let axis = i + 2;
        let n_in = t.dim(axis)?;
        if n_in == o {
            continue;
        }
        if o == 0 {
            candle_core::bail!("resize_nearest: target size must be positive, got {size:?}");
        }
        let scale = n_in as f64 / o as f64;
        let idx: Vec<u32> = (0..o)
            .map(|j| ((j as f64 * scale).floor() as usize).min(n_in - 1) as u32)
            .collect();
        let idx = Tensor::from_vec(idx, o, t.device())?;
        out = out.index_select(&idx, axis)?;
    }
    Ok(out)
}
