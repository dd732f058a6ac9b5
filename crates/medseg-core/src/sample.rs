//! Samples (what datasets yield and transforms act on) and batches.

use crate::{Error, Image, LabelMap, Result};
use ndarray::{ArrayD, Axis};
use serde::{Deserialize, Serialize};

/// What one transform did to a sample, kept so that inference can undo it.
///
/// `name` is the transform's registry name; `params` holds whatever the
/// transform needs to invert itself (crop box, flip axes, original shape,
/// original spacing...), as JSON so that any transform, built-in or user-added,
/// can record itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformRecord {
    /// Registry name of the transform, e.g. `"RandomFlip"`.
    pub name: String,
    /// Parameters of this application (the random draw included).
    pub params: serde_json::Value,
}

/// One training or inference item.
///
/// All arrays share the image's spatial shape; the label and pixel-weight map
/// have one channel. The geometry is the image's ([`Image::geometry`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Case name (usually the image file stem), used to name outputs.
    pub name: String,
    /// The image, channel-first.
    pub image: Image,
    /// The label map, if the sample has one (full, scribble or partial).
    pub label: Option<LabelMap>,
    /// Per-voxel weight `[1, ...spatial]`, e.g. 0 where unannotated.
    pub pixel_weight: Option<ArrayD<f32>>,
    /// Per-voxel flag `[1, ...spatial]` of suspected label errors (nonzero =
    /// suspect), e.g. from confident learning; used by the SLSR loss.
    pub noisy_mask: Option<ArrayD<f32>>,
    /// Per-image weight (e.g. label quality), 1 when absent.
    pub image_weight: Option<f32>,
    /// For partial labels: the classes annotated in this sample. `None` means
    /// all classes are annotated.
    pub annotated_classes: Option<Vec<u16>>,
    /// Transforms applied so far, oldest first.
    pub history: Vec<TransformRecord>,
}

impl Sample {
    /// A sample holding just an image.
    pub fn new(name: impl Into<String>, image: Image) -> Self {
        Sample {
            name: name.into(),
            image,
            label: None,
            pixel_weight: None,
            noisy_mask: None,
            image_weight: None,
            annotated_classes: None,
            history: Vec::new(),
        }
    }

    /// Adds a label map, checking that its spatial shape matches the image.
    pub fn with_label(mut self, label: LabelMap) -> Result<Self> {
        if label.spatial_shape() != self.image.spatial_shape() {
            return Err(Error::Shape(format!(
                "{}: label shape {:?} differs from image shape {:?}",
                self.name,
                label.spatial_shape(),
                self.image.spatial_shape()
            )));
        }
        self.label = Some(label);
        Ok(self)
    }

    /// Adds a pixel-weight map `[1, ...spatial]`, checking its shape.
    pub fn with_pixel_weight(mut self, weight: ArrayD<f32>) -> Result<Self> {
        if weight.ndim() != self.image.data.ndim()
            || weight.shape()[0] != 1
            || &weight.shape()[1..] != self.image.spatial_shape()
        {
            return Err(Error::Shape(format!(
                "{}: pixel weight shape {:?} must be [1, {:?}]",
                self.name,
                weight.shape(),
                self.image.spatial_shape()
            )));
        }
        self.pixel_weight = Some(weight);
        Ok(self)
    }

    /// Checks that every array agrees with the image's spatial shape.
    pub fn validate(&self) -> Result<()> {
        if let Some(l) = &self.label {
            if l.spatial_shape() != self.image.spatial_shape() {
                return Err(Error::Shape(format!(
                    "{}: label shape {:?} differs from image shape {:?}",
                    self.name,
                    l.spatial_shape(),
                    self.image.spatial_shape()
                )));
            }
        }
        for (what, map) in [
            ("pixel weight", &self.pixel_weight),
            ("noisy mask", &self.noisy_mask),
        ] {
            if let Some(w) = map {
                if &w.shape()[1..] != self.image.spatial_shape() {
                    return Err(Error::Shape(format!(
                        "{}: {what} shape {:?} differs from image shape {:?}",
                        self.name,
                        w.shape(),
                        self.image.spatial_shape()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Samples of equal shape gathered for one step. Collation into tensors
/// happens in the learners; this type only stacks arrays.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// The samples, in loader order.
    pub samples: Vec<Sample>,
}

impl Batch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when the batch holds no sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Stacks the images into `[N, C, ...spatial]`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the batch is empty or shapes differ.
    pub fn stack_images(&self) -> Result<ArrayD<f32>> {
        let views: Vec<_> = self.samples.iter().map(|s| s.image.data.view()).collect();
        if views.is_empty() {
            return Err(Error::Shape("cannot stack an empty batch".into()));
        }
        ndarray::stack(Axis(0), &views).map_err(|e| Error::Shape(format!("stacking images: {e}")))
    }

    /// Stacks the label maps into `[N, 1, ...spatial]`.
    ///
    /// # Errors
    /// [`Error::Shape`] when a sample has no label or shapes differ.
    pub fn stack_labels(&self) -> Result<ArrayD<u16>> {
        let mut views = Vec::with_capacity(self.samples.len());
        for s in &self.samples {
            let l = s
                .label
                .as_ref()
                .ok_or_else(|| Error::Shape(format!("{}: sample has no label", s.name)))?;
            views.push(l.data.view());
        }
        if views.is_empty() {
            return Err(Error::Shape("cannot stack an empty batch".into()));
        }
        ndarray::stack(Axis(0), &views).map_err(|e| Error::Shape(format!("stacking labels: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Geometry;
    use ndarray::IxDyn;

    #[test]
    fn label_shape_checked_and_batch_stacks() {
        let im = Image::zeros(&[1, 4, 5], Geometry::identity()).unwrap();
        let bad = LabelMap::new(ArrayD::zeros(IxDyn(&[1, 5, 4])), Geometry::identity()).unwrap();
        assert!(Sample::new("a", im.clone()).with_label(bad).is_err());
        let good = LabelMap::new(ArrayD::zeros(IxDyn(&[1, 4, 5])), Geometry::identity()).unwrap();
        let s = Sample::new("a", im).with_label(good).unwrap();
        let b = Batch {
            samples: vec![s.clone(), s],
        };
        assert_eq!(b.stack_images().unwrap().shape(), &[2, 1, 4, 5]);
        assert_eq!(b.stack_labels().unwrap().shape(), &[2, 1, 4, 5]);
        assert!(Batch::default().stack_images().is_err());
    }
}
