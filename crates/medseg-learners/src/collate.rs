//! Batches of samples to candle tensors: the one place where arrays meet tensors.

use candle_core::{Device, Tensor};
use medseg_core::{Batch, Error as CoreError};
use medseg_losses::LossTarget;

/// Tensors of one batch.
#[derive(Debug, Clone)]
pub struct TensorBatch {
    /// Images `[N, C, ...spatial]`.
    pub image: Tensor,
    /// The loss target: class map `[N, 1, ...spatial]` (u32) with the ignore
    /// value, pixel weights and image weights when the samples have them,
    /// and the images themselves (for losses that read them).
    pub target: LossTarget,
    /// Class maps `[N, 1, ...spatial]` as u32, when the samples have labels.
    pub labels: Option<Tensor>,
}

fn shape_err(e: CoreError) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "{e} (training samples must share one shape: add a RandomCrop or Pad transform)"
    ))
}

/// Stacks a batch into tensors on `device`.
pub fn collate(batch: &Batch, ignore: u16, device: &Device) -> candle_core::Result<TensorBatch> {
    let images = batch.stack_images().map_err(shape_err)?;
    let image = Tensor::from_vec(
        images.iter().copied().collect::<Vec<f32>>(),
        images.shape(),
        device,
    )?;
    let has_labels = batch.samples.iter().all(|s| s.label.is_some());
    let (mut target, labels) = if has_labels {
        let l = batch.stack_labels().map_err(shape_err)?;
        let t = Tensor::from_vec(
            l.iter().map(|&v| v as u32).collect::<Vec<u32>>(),
            l.shape(),
            device,
        )?;
        (
            LossTarget::class_map(t.clone()).with_ignore(ignore as u32),
            Some(t),
        )
    } else {
        (LossTarget::none(), None)
    };
    if batch.samples.iter().all(|s| s.pixel_weight.is_some()) && !batch.is_empty() {
        let views: Vec<_> = batch
            .samples
            .iter()
            .map(|s| s.pixel_weight.as_ref().expect("checked").view())
            .collect();
        let w = ndarray::stack(ndarray::Axis(0), &views)
            .map_err(|e| candle_core::Error::Msg(format!("stacking pixel weights: {e}")))?;
        target = target.with_pixel_weight(Tensor::from_vec(
            w.iter().copied().collect::<Vec<f32>>(),
            w.shape(),
            device,
        )?);
    }
    if batch.samples.iter().all(|s| s.noisy_mask.is_some()) && !batch.is_empty() {
        let views: Vec<_> = batch
            .samples
            .iter()
            .map(|s| s.noisy_mask.as_ref().expect("checked").view())
            .collect();
        let m = ndarray::stack(ndarray::Axis(0), &views)
            .map_err(|e| candle_core::Error::Msg(format!("stacking noisy masks: {e}")))?;
        target = target.with_noisy_mask(Tensor::from_vec(
            m.iter().copied().collect::<Vec<f32>>(),
            m.shape(),
            device,
        )?);
    }
    if batch.samples.iter().any(|s| s.image_weight.is_some()) {
        let w: Vec<f32> = batch
            .samples
            .iter()
            .map(|s| s.image_weight.unwrap_or(1.0))
            .collect();
        let n = w.len();
        target = target.with_image_weight(Tensor::from_vec(w, n, device)?);
    }
    // losses that look at the image (Gated CRF, Mumford-Shah) see it with
    // the same crop and flips as the labels
    target = target.with_image(image.clone());
    Ok(TensorBatch {
        image,
        target,
        labels,
    })
}

/// Checks that every label value of `sample` is a class `0..class_num` or
/// the ignore value; the error names the case, the value and what was expected.
pub fn check_label_range(
    sample: &medseg_core::Sample,
    class_num: usize,
    ignore: u16,
) -> Result<(), String> {
    if let Some(l) = &sample.label {
        if let Some(bad) = l
            .data
            .iter()
            .copied()
            .find(|&v| v as usize >= class_num && v != ignore)
        {
            return Err(format!(
                "{}: label value {bad} is out of range; expected classes 0..{} or the ignore value {ignore} (dataset.class_num, dataset.ignore_label)",
                sample.name,
                class_num - 1
            ));
        }
    }
    Ok(())
}
