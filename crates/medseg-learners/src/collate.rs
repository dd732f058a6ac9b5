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

/// [`collate`] for a dataset of `class_num` classes: the same tensors, and
/// when any sample of the batch lists its `annotated_classes` (partial
/// labels), the target also gets them as `[N, class_num]` (see
/// [`annotated_tensor`]) for the marginal and exclusion losses. [`collate`]
/// alone cannot build that tensor: it does not know the class count.
pub fn collate_with_classes(
    batch: &Batch,
    ignore: u16,
    class_num: usize,
    device: &Device,
) -> candle_core::Result<TensorBatch> {
    let mut tb = collate(batch, ignore, device)?;
    if let Some(a) = annotated_tensor(batch, class_num, device)? {
        tb.target = tb.target.with_annotated(a);
    }
    Ok(tb)
}

/// The classes each sample annotates as an `[N, class_num]` f32 tensor (1 =
/// annotated), or `None` when no sample lists `annotated_classes`. A sample
/// without a list annotates every class; the background (class 0) is always
/// annotated. A listed class `>= class_num` is an error naming the sample and
/// the value.
pub fn annotated_tensor(
    batch: &Batch,
    class_num: usize,
    device: &Device,
) -> candle_core::Result<Option<Tensor>> {
    if batch.samples.iter().all(|s| s.annotated_classes.is_none()) {
        return Ok(None);
    }
    let n = batch.samples.len();
    let mut a = vec![0f32; n * class_num];
    for (i, s) in batch.samples.iter().enumerate() {
        let row = &mut a[i * class_num..(i + 1) * class_num];
        match &s.annotated_classes {
            None => row.fill(1.0),
            Some(list) => {
                for &c in list {
                    if c as usize >= class_num {
                        candle_core::bail!(
                            "{}: annotated_classes lists class {c}, but the dataset has {class_num} classes (0..{}; dataset.class_num)",
                            s.name,
                            class_num.saturating_sub(1)
                        );
                    }
                    row[c as usize] = 1.0;
                }
                if let Some(bg) = row.first_mut() {
                    *bg = 1.0;
                }
            }
        }
    }
    Ok(Some(Tensor::from_vec(a, (n, class_num), device)?))
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

#[cfg(test)]
mod tests {
    use super::*;
    use medseg_core::{Image, LabelMap, Sample};

    fn sample(name: &str, annotated: Option<Vec<u16>>) -> Sample {
        let lab = ndarray::ArrayD::from_elem(vec![1, 2, 2], 0u16);
        let img = Image::new(lab.mapv(f32::from), Default::default()).unwrap();
        let mut s = Sample::new(name, img);
        s.label = Some(LabelMap::new(lab, Default::default()).unwrap());
        s.annotated_classes = annotated;
        s
    }

    #[test]
    fn annotated_classes_become_an_n_by_c_tensor() {
        let dev = Device::Cpu;
        let batch = Batch {
            samples: vec![
                sample("a", Some(vec![0, 2])),
                sample("b", None),
                // background added even when the list leaves it out
                sample("c", Some(vec![3])),
            ],
        };
        let tb = collate_with_classes(&batch, 255, 4, &dev).unwrap();
        let a = tb.target.annotated.expect("annotated is set");
        assert_eq!(
            a.to_vec2::<f32>().unwrap(),
            vec![
                vec![1.0, 0.0, 1.0, 0.0],
                vec![1.0, 1.0, 1.0, 1.0],
                vec![1.0, 0.0, 0.0, 1.0]
            ]
        );
        // no sample lists its classes: no tensor
        let full = Batch {
            samples: vec![sample("a", None), sample("b", None)],
        };
        let tb = collate_with_classes(&full, 255, 4, &dev).unwrap();
        assert!(tb.target.annotated.is_none());
    }

    #[test]
    fn annotated_class_out_of_range_names_the_sample_and_value() {
        let batch = Batch {
            samples: vec![sample("ok", None), sample("case7", Some(vec![0, 5]))],
        };
        let e = collate_with_classes(&batch, 255, 4, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("case7") && e.contains("class 5") && e.contains("4 classes"),
            "{e}"
        );
    }
}
