//! Running medseg networks (one or an ensemble) over whole images.

use crate::{predict_with_flips, InferError, Result, SlidingWindow};
use candle_core::{DType, Device, Tensor};
use medseg_nets::SegNetwork;
use ndarray::{ArrayD, ArrayViewD, IxDyn};

/// Converts a standard-layout array into a tensor of the same shape.
pub fn array_to_tensor(a: ArrayViewD<f32>, device: &Device) -> candle_core::Result<Tensor> {
    let data: Vec<f32> = match a.as_slice() {
        Some(s) => s.to_vec(),
        None => a.iter().copied().collect(),
    };
    Tensor::from_vec(data, a.shape(), device)
}

/// Converts a tensor into an `f32` array of the same shape.
pub fn tensor_to_array(t: &Tensor) -> candle_core::Result<ArrayD<f32>> {
    let shape = t.dims().to_vec();
    let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| candle_core::Error::Msg(e.to_string()))
}

/// Class probabilities of one network for a batch `[B, C, ...spatial]`:
/// eval-mode logits, softmax over channels.
///
/// A spatial size the network does not accept ([`SegNetwork::input_size`]:
/// too small, or not a multiple of its total downsampling) is padded with
/// zeros, split evenly before and after as nnU-Net does, and the
/// probabilities cropped back to the batch's size.
pub fn network_probabilities(
    net: &dyn SegNetwork,
    batch: ArrayViewD<f32>,
    device: &Device,
) -> Result<ArrayD<f32>> {
    if batch.ndim() < 3 {
        return Err(InferError::Shape(format!(
            "a batch must be [B, C, ...spatial], got shape {:?}",
            batch.shape()
        )));
    }
    let spatial = &batch.shape()[2..];
    let want = net
        .input_size()
        .for_rank(spatial.len())
        .fit_within(spatial)
        .map_err(InferError::Shape)?;
    let before: Vec<usize> = want.iter().zip(spatial).map(|(w, s)| (w - s) / 2).collect();
    let padded = if want != spatial {
        let mut shape = batch.shape()[..2].to_vec();
        shape.extend(&want);
        let mut p = ArrayD::<f32>::zeros(IxDyn(&shape));
        p.slice_each_axis_mut(|ax| {
            let i = ax.axis.index();
            match i {
                0 | 1 => ndarray::Slice::from(..),
                _ => ndarray::Slice::from(before[i - 2]..before[i - 2] + spatial[i - 2]),
            }
        })
        .assign(&batch);
        Some(p)
    } else {
        None
    };
    let input = padded.as_ref().map_or(batch.view(), |p| p.view());
    let run = || -> candle_core::Result<ArrayD<f32>> {
        let x = array_to_tensor(input.view(), device)?;
        let logits = net.forward(&x)?;
        let p = candle_nn::ops::softmax(&logits, 1)?;
        tensor_to_array(&p)
    };
    let probs = run().map_err(|e| InferError::Predict(e.to_string()))?;
    if padded.is_none() {
        return Ok(probs);
    }
    if probs.shape()[2..] != want[..] {
        return Err(InferError::Shape(format!(
            "the network returned spatial size {:?} for an input of {want:?}",
            &probs.shape()[2..]
        )));
    }
    Ok(probs
        .slice_each_axis(|ax| {
            let i = ax.axis.index();
            match i {
                0 | 1 => ndarray::Slice::from(..),
                _ => ndarray::Slice::from(before[i - 2]..before[i - 2] + spatial[i - 2]),
            }
        })
        .to_owned())
}

/// Predicts class probabilities of whole images with one network or the
/// average of several (an ensemble), by sliding window and optional flip TTA.
pub struct Predictor<'a> {
    nets: Vec<&'a dyn SegNetwork>,
    device: Device,
    /// Window settings.
    pub window: SlidingWindow,
    /// Average over flips of every subset of spatial axes.
    pub tta_flip: bool,
}

impl<'a> Predictor<'a> {
    /// A predictor over `nets` (at least one; all with the same class count
    /// and input channels).
    pub fn new(
        nets: Vec<&'a dyn SegNetwork>,
        device: Device,
        window: SlidingWindow,
        tta_flip: bool,
    ) -> Result<Self> {
        let Some(first) = nets.first() else {
            return Err(InferError::Invalid {
                key: "checkpoints".into(),
                message: "at least one network is needed".into(),
            });
        };
        for n in &nets {
            if n.class_num() != first.class_num() || n.in_chns() != first.in_chns() {
                return Err(InferError::Invalid {
                    key: "checkpoints".into(),
                    message: format!(
                        "ensemble members differ: {} classes/{} channels vs {}/{}",
                        n.class_num(),
                        n.in_chns(),
                        first.class_num(),
                        first.in_chns()
                    ),
                });
            }
        }
        Ok(Predictor {
            nets,
            device,
            window,
            tta_flip,
        })
    }

    /// Number of classes predicted.
    pub fn class_num(&self) -> usize {
        self.nets[0].class_num()
    }

    /// Probabilities `[K, ...spatial]` for an image `[C, ...spatial]`.
    ///
    /// # Errors
    /// An image whose channel count differs from the network's, or a failure
    /// inside the network.
    pub fn predict(&self, image: ArrayViewD<f32>) -> Result<ArrayD<f32>> {
        let want = self.nets[0].in_chns();
        if image.shape()[0] != want {
            return Err(InferError::Shape(format!(
                "the image has {} channels, the network expects {want} (the fourth axis of a \
                 4D NIfTI is read as channels; several files of one case are stacked as channels)",
                image.shape()[0]
            )));
        }
        let mut acc: Option<ArrayD<f32>> = None;
        for net in &self.nets {
            let p = predict_with_flips(image.view(), self.tta_flip, |x| {
                self.window.run(x, |batch| {
                    network_probabilities(*net, batch.view(), &self.device)
                })
            })?;
            match acc.as_mut() {
                None => acc = Some(p),
                Some(a) => *a += &p,
            }
        }
        let mut acc = acc.expect("at least one network");
        if self.nets.len() > 1 {
            let n = self.nets.len() as f32;
            acc.mapv_inplace(|v| v / n);
        }
        Ok(acc)
    }
}
