//! Images and label maps: channel-first arrays with geometry.

use crate::{Error, Geometry, Result};
use ndarray::{ArrayD, IxDyn};

fn check_rank(shape: &[usize], what: &str) -> Result<()> {
    if shape.len() != 3 && shape.len() != 4 {
        return Err(Error::Shape(format!(
            "{what} must be channel-first [C, H, W] or [C, D, H, W], got shape {shape:?}"
        )));
    }
    if shape.contains(&0) {
        return Err(Error::Shape(format!("{what} has an empty axis: {shape:?}")));
    }
    Ok(())
}

/// A channel-first `f32` image: `[C, H, W]` (2D) or `[C, D, H, W]` (3D), with
/// its [`Geometry`] in array axis order `(D, H, W)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Voxel values, channel-first.
    pub data: ArrayD<f32>,
    /// Spacing, origin and direction of the spatial axes.
    pub geometry: Geometry,
}

impl Image {
    /// Wraps `data` (`[C, H, W]` or `[C, D, H, W]`) with `geometry`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the rank is not 3 or 4 or an axis is empty.
    pub fn new(data: ArrayD<f32>, geometry: Geometry) -> Result<Self> {
        check_rank(data.shape(), "image")?;
        Ok(Image { data, geometry })
    }

    /// A zero-filled image of the given channel-first shape.
    pub fn zeros(shape: &[usize], geometry: Geometry) -> Result<Self> {
        Image::new(ArrayD::zeros(IxDyn(shape)), geometry)
    }

    /// Number of channels (modalities).
    pub fn channels(&self) -> usize {
        self.data.shape()[0]
    }

    /// Shape without the channel axis: `[H, W]` or `[D, H, W]`.
    pub fn spatial_shape(&self) -> &[usize] {
        &self.data.shape()[1..]
    }

    /// 2 for 2D images, 3 for volumes.
    pub fn spatial_ndim(&self) -> usize {
        self.data.ndim() - 1
    }

    /// Spacing of the spatial axes actually present, in array axis order.
    pub fn spacing(&self) -> &[f64] {
        self.geometry.spatial_spacing(self.spatial_ndim())
    }
}

/// An integer class map: `[1, H, W]` or `[1, D, H, W]` (one channel, as PyMIC
/// stores labels), with the same geometry conventions as [`Image`].
///
/// Values are class indices; [`crate::DEFAULT_IGNORE_LABEL`] (or a configured
/// value) marks unannotated voxels. `u16` holds both `u8` and `u16` label files.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelMap {
    /// Class indices, shape `[1, ...spatial]`.
    pub data: ArrayD<u16>,
    /// Spacing, origin and direction of the spatial axes.
    pub geometry: Geometry,
}

impl LabelMap {
    /// Wraps `data` (`[1, H, W]` or `[1, D, H, W]`) with `geometry`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the rank is not 3 or 4, an axis is empty, or there
    /// is more than one channel.
    pub fn new(data: ArrayD<u16>, geometry: Geometry) -> Result<Self> {
        check_rank(data.shape(), "label map")?;
        if data.shape()[0] != 1 {
            return Err(Error::Shape(format!(
                "label map must have one channel, got shape {:?}",
                data.shape()
            )));
        }
        Ok(LabelMap { data, geometry })
    }

    /// Shape without the channel axis.
    pub fn spatial_shape(&self) -> &[usize] {
        &self.data.shape()[1..]
    }

    /// 2 for 2D maps, 3 for volumes.
    pub fn spatial_ndim(&self) -> usize {
        self.data.ndim() - 1
    }

    /// The largest class value present, ignoring `ignore` (the unannotated value).
    pub fn max_class(&self, ignore: Option<u16>) -> Option<u16> {
        self.data
            .iter()
            .copied()
            .filter(|v| Some(*v) != ignore)
            .max()
    }

    /// The sorted set of values present.
    pub fn classes(&self) -> Vec<u16> {
        let mut seen = [false; 65536];
        for &v in self.data.iter() {
            seen[v as usize] = true;
        }
        (0..=u16::MAX).filter(|&v| seen[v as usize]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_ranks() {
        assert!(Image::new(ArrayD::zeros(IxDyn(&[4, 4])), Geometry::identity()).is_err());
        assert!(Image::new(ArrayD::zeros(IxDyn(&[1, 0, 4])), Geometry::identity()).is_err());
        assert!(LabelMap::new(ArrayD::zeros(IxDyn(&[2, 4, 4])), Geometry::identity()).is_err());
        let im = Image::zeros(&[2, 3, 4, 5], Geometry::with_spacing([3.0, 2.0, 1.0])).unwrap();
        assert_eq!(im.spatial_shape(), &[3, 4, 5]);
        assert_eq!(im.spacing(), &[3.0, 2.0, 1.0]);
        let im2 = Image::zeros(&[1, 4, 5], Geometry::with_spacing([3.0, 2.0, 1.0])).unwrap();
        assert_eq!(im2.spacing(), &[2.0, 1.0]);
    }

    #[test]
    fn classes_and_max() {
        let mut d = ArrayD::zeros(IxDyn(&[1, 2, 3]));
        d[[0, 0, 1]] = 3u16;
        d[[0, 1, 2]] = 255;
        let l = LabelMap::new(d, Geometry::identity()).unwrap();
        assert_eq!(l.classes(), vec![0, 3, 255]);
        assert_eq!(l.max_class(Some(255)), Some(3));
        assert_eq!(l.max_class(None), Some(255));
    }
}
