//! Per-pixel tools of the selecting methods: the cross-entropy of every
//! pixel, the small-loss selection and the agreement of two predictions.

use candle_core::{DType, Tensor};

/// The cross-entropy of every pixel, `[N, 1, ...spatial]`, and the mask of
/// annotated pixels (label not `ignore`), both f32. Ignored pixels get loss 0.
pub fn pixel_ce(
    logits: &Tensor,
    labels: &Tensor,
    ignore: u32,
) -> candle_core::Result<(Tensor, Tensor)> {
    let labels = labels.to_dtype(DType::U32)?;
    let valid = labels.ne(ignore)?;
    let safe = valid.where_cond(&labels, &labels.zeros_like()?)?;
    let logp = candle_nn::ops::log_softmax(logits, 1)?;
    let ce = logp.gather(&safe.contiguous()?, 1)?.neg()?;
    let valid = valid.to_dtype(ce.dtype())?;
    Ok(((ce * &valid)?, valid))
}

/// The mask `[same shape as loss]` (f32) of exactly `round(keep * n)` of the
/// `n` valid pixels with the smallest loss (ties broken by position); `loss`
/// is read detached.
pub fn small_loss_mask(loss: &Tensor, valid: &Tensor, keep: f64) -> candle_core::Result<Tensor> {
    select_small(loss, valid, None, keep)
}

/// As [`small_loss_mask`], but the fraction `keep` is taken within each
/// class of `labels` separately (class-balanced selection), so that a small
/// structure, whose pixels are the hardest, is not dropped as a whole.
pub fn small_loss_mask_per_class(
    loss: &Tensor,
    valid: &Tensor,
    labels: &Tensor,
    keep: f64,
) -> candle_core::Result<Tensor> {
    select_small(loss, valid, Some(labels), keep)
}

/// The smallest-loss `keep` fraction of the valid pixels of each group
/// (`groups`: a class per pixel; `None`: one group).
fn select_small(
    loss: &Tensor,
    valid: &Tensor,
    groups: Option<&Tensor>,
    keep: f64,
) -> candle_core::Result<Tensor> {
    let l = loss
        .detach()
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    let v = valid
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    let y = match groups {
        Some(g) => g.flatten_all()?.to_dtype(DType::U32)?.to_vec1::<u32>()?,
        None => vec![0; l.len()],
    };
    let mut by_group: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for i in (0..l.len()).filter(|&i| v[i] > 0.0) {
        by_group.entry(y[i]).or_default().push(i);
    }
    let mut m = vec![0f32; l.len()];
    for idx in by_group.values_mut() {
        let k = ((keep.clamp(0.0, 1.0) * idx.len() as f64).round() as usize).min(idx.len());
        idx.sort_by(|&a, &b| l[a].total_cmp(&l[b]).then(a.cmp(&b)));
        for &i in &idx[..k] {
            m[i] = 1.0;
        }
    }
    Tensor::from_vec(m, loss.dims(), loss.device())?.to_dtype(loss.dtype())
}

/// The noisy labels of the step's batch.
pub(crate) fn batch_labels<'a>(s: &'a crate::semi::SemiStep) -> candle_core::Result<&'a Tensor> {
    s.ctx
        .labelled
        .labels
        .as_ref()
        .ok_or_else(|| candle_core::Error::Msg("a noisy-label method needs labels".into()))
}

/// `[argmax a == argmax b]` per pixel, `[N, 1, ...spatial]` f32.
pub fn agreement_mask(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    a.argmax_keepdim(1)?
        .eq(&b.argmax_keepdim(1)?)?
        .to_dtype(DType::F32)
}

/// `sum(loss * mask) / max(sum(mask), 1)`.
pub(crate) fn masked_mean(loss: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let n = mask
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?
        .max(1.0);
    (loss * mask)?.sum_all()? / n
}
