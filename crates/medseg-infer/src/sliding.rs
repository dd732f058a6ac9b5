//! Sliding-window prediction with Gaussian weighting, as nnU-Net and MONAI do.

use crate::{InferError, Result};
use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, SliceInfoElem};

/// Sliding-window settings. Spatial sizes are in array axis order.
#[derive(Debug, Clone, PartialEq)]
pub struct SlidingWindow {
    /// Window size per spatial axis; `None` predicts the whole image at once.
    pub patch_size: Option<Vec<usize>>,
    /// Fraction of overlap between neighbouring windows, in `[0, 1)`.
    pub overlap: f64,
    /// Weight each window's output with a Gaussian centred on the window.
    pub gaussian: bool,
    /// Gaussian sigma as a fraction of the window size (nnU-Net: 1/8).
    pub sigma_scale: f64,
    /// Number of windows per call of the prediction function.
    pub batch_size: usize,
}

impl Default for SlidingWindow {
    fn default() -> Self {
        SlidingWindow {
            patch_size: None,
            overlap: 0.5,
            gaussian: true,
            sigma_scale: 0.125,
            batch_size: 4,
        }
    }
}

/// Start offsets of windows of size `patch` over an axis of length `size`
/// (`size >= patch`), with at least the requested `overlap`: the number of
/// windows is `ceil((size - patch) / (patch * (1 - overlap))) + 1`, spread
/// evenly so that the first starts at 0 and the last ends at `size`.
pub fn window_starts(size: usize, patch: usize, overlap: f64) -> Vec<usize> {
    if size <= patch {
        return vec![0];
    }
    let step = (patch as f64 * (1.0 - overlap)).max(1.0);
    let n = ((size - patch) as f64 / step).ceil() as usize + 1;
    let span = (size - patch) as f64;
    (0..n)
        .map(|i| (span * i as f64 / (n - 1) as f64).round() as usize)
        .collect()
}

/// A Gaussian weight map of the given spatial shape, centred, with sigma
/// `sigma_scale * size` per axis, scaled to a maximum of 1; values below the
/// smallest positive value are raised to it so that no voxel gets zero weight.
pub fn gaussian_importance_map(shape: &[usize], sigma_scale: f64) -> ArrayD<f32> {
    let axes: Vec<Vec<f64>> = shape
        .iter()
        .map(|&n| {
            let sigma = (n as f64 * sigma_scale).max(1e-6);
            let c = (n as f64 - 1.0) / 2.0;
            (0..n)
                .map(|i| (-((i as f64 - c).powi(2)) / (2.0 * sigma * sigma)).exp())
                .collect()
        })
        .collect();
    let mut map = ArrayD::<f32>::zeros(IxDyn(shape));
    for (idx, v) in map.indexed_iter_mut() {
        let mut w = 1.0;
        for (a, ax) in axes.iter().enumerate() {
            w *= ax[idx[a]];
        }
        *v = w as f32;
    }
    let max = map.iter().cloned().fold(0.0f32, f32::max);
    if max > 0.0 {
        map.mapv_inplace(|v| v / max);
    }
    let min_pos = map
        .iter()
        .cloned()
        .filter(|v| *v > 0.0)
        .fold(f32::INFINITY, f32::min);
    if min_pos.is_finite() {
        map.mapv_inplace(|v| v.max(min_pos));
    }
    map
}

fn spatial_slice(starts: &[usize], size: &[usize]) -> Vec<SliceInfoElem> {
    let mut v = vec![SliceInfoElem::Slice {
        start: 0,
        end: None,
        step: 1,
    }];
    for (s, n) in starts.iter().zip(size) {
        v.push(SliceInfoElem::Slice {
            start: *s as isize,
            end: Some((*s + *n) as isize),
            step: 1,
        });
    }
    v
}

impl SlidingWindow {
    /// Predicts a whole image `[C, ...spatial]` window by window.
    ///
    /// `predict` receives a batch of windows `[B, C, ...patch]` and returns
    /// per-class scores `[B, K, ...patch]` (usually softmax probabilities).
    /// Overlapping outputs are averaged with the Gaussian (or uniform)
    /// weights. Images smaller than the window are padded with zeros and the
    /// result cropped back. Returns `[K, ...spatial]`.
    ///
    /// # Errors
    /// A patch size whose length differs from the image's spatial rank, an
    /// invalid overlap, or an error from `predict`.
    pub fn run<F>(&self, image: ArrayViewD<f32>, mut predict: F) -> Result<ArrayD<f32>>
    where
        F: FnMut(ArrayD<f32>) -> Result<ArrayD<f32>>,
    {
        let nd = image.ndim() - 1;
        if nd == 0 {
            return Err(InferError::Shape("image must be [C, ...spatial]".into()));
        }
        if !(0.0..1.0).contains(&self.overlap) {
            return Err(InferError::Invalid {
                key: "overlap".into(),
                message: format!("{} is not in [0, 1)", self.overlap),
            });
        }
        let spatial: Vec<usize> = image.shape()[1..].to_vec();
        let patch: Vec<usize> = match &self.patch_size {
            None => spatial.clone(),
            Some(p) if p.len() == nd => p.clone(),
            Some(p) => {
                return Err(InferError::Invalid {
                    key: "patch_size".into(),
                    message: format!(
                        "{p:?} has {} axes, the image has {nd} spatial axes",
                        p.len()
                    ),
                })
            }
        };
        // pad to at least the patch size
        let padded_shape: Vec<usize> = spatial.iter().zip(&patch).map(|(s, p)| *s.max(p)).collect();
        let padded = if padded_shape != spatial {
            let mut shape = vec![image.shape()[0]];
            shape.extend(&padded_shape);
            let mut p = ArrayD::<f32>::zeros(IxDyn(&shape));
            p.slice_each_axis_mut(|ax| {
                let i = ax.axis.index();
                let end = if i == 0 {
                    image.shape()[0]
                } else {
                    spatial[i - 1]
                };
                ndarray::Slice::from(0..end)
            })
            .assign(&image);
            p
        } else {
            image.to_owned()
        };
        let starts: Vec<Vec<usize>> = padded_shape
            .iter()
            .zip(&patch)
            .map(|(&s, &p)| window_starts(s, p, self.overlap))
            .collect();
        // all window corners
        let mut corners: Vec<Vec<usize>> = vec![vec![]];
        for axis_starts in &starts {
            corners = corners
                .into_iter()
                .flat_map(|c| {
                    axis_starts.iter().map(move |&s| {
                        let mut c2 = c.clone();
                        c2.push(s);
                        c2
                    })
                })
                .collect();
        }
        let weight = if self.gaussian {
            gaussian_importance_map(&patch, self.sigma_scale)
        } else {
            ArrayD::from_elem(IxDyn(&patch), 1.0f32)
        };
        let mut acc: Option<ArrayD<f32>> = None;
        let mut wsum = ArrayD::<f32>::zeros(IxDyn(&padded_shape));
        for chunk in corners.chunks(self.batch_size.max(1)) {
            let views: Vec<_> = chunk
                .iter()
                .map(|c| padded.slice(spatial_slice(c, &patch).as_slice()))
                .collect();
            let batch = ndarray::stack(Axis(0), &views)
                .map_err(|e| InferError::Shape(format!("stacking windows: {e}")))?;
            let out = predict(batch)?;
            if out.ndim() != nd + 2
                || out.shape()[0] != chunk.len()
                || out.shape()[2..] != patch[..]
            {
                return Err(InferError::Shape(format!(
                    "prediction shape {:?} does not match [{}, K, {:?}]",
                    out.shape(),
                    chunk.len(),
                    patch
                )));
            }
            let k = out.shape()[1];
            let acc = acc.get_or_insert_with(|| {
                let mut shape = vec![k];
                shape.extend(&padded_shape);
                ArrayD::zeros(IxDyn(&shape))
            });
            if acc.shape()[0] != k {
                return Err(InferError::Shape(
                    "prediction class count changed between windows".into(),
                ));
            }
            for (b, c) in chunk.iter().enumerate() {
                let o = out.index_axis(Axis(0), b);
                let sl = spatial_slice(c, &patch);
                let mut region = acc.slice_mut(sl.as_slice());
                region.zip_mut_with(&(&o * &weight.view().insert_axis(Axis(0))), |a, v| *a += *v);
                let mut wr = wsum.slice_mut(&sl[1..]);
                wr += &weight;
            }
        }
        let mut acc = acc.ok_or_else(|| InferError::Shape("no window was predicted".into()))?;
        for mut plane in acc.outer_iter_mut() {
            plane.zip_mut_with(&wsum, |a, w| *a /= *w);
        }
        if padded_shape != spatial {
            let k = acc.shape()[0];
            let mut sl = vec![SliceInfoElem::Slice {
                start: 0,
                end: Some(k as isize),
                step: 1,
            }];
            for &n in &spatial {
                sl.push(SliceInfoElem::Slice {
                    start: 0,
                    end: Some(n as isize),
                    step: 1,
                });
            }
            acc = acc.slice(sl.as_slice()).to_owned();
        }
        Ok(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    #[test]
    fn starts_cover_the_axis() {
        assert_eq!(window_starts(10, 10, 0.5), vec![0]);
        assert_eq!(window_starts(8, 10, 0.5), vec![0]);
        assert_eq!(window_starts(20, 10, 0.5), vec![0, 5, 10]);
        assert_eq!(window_starts(21, 10, 0.5), vec![0, 4, 7, 11]);
        for (size, patch, ov) in [(37, 8, 0.25), (100, 33, 0.5), (64, 64, 0.9), (65, 64, 0.0)] {
            let st = window_starts(size, patch, ov);
            assert_eq!(st[0], 0);
            assert_eq!(st.last().unwrap() + patch, size);
            for w in st.windows(2) {
                assert!(w[1] > w[0]);
                // the gap never exceeds the allowed step
                assert!((w[1] - w[0]) as f64 <= (patch as f64 * (1.0 - ov)).ceil().max(1.0));
            }
        }
    }

    #[test]
    fn gaussian_map_peaks_at_centre_and_is_positive() {
        let g = gaussian_importance_map(&[9, 7], 0.125);
        assert_eq!(g[[4, 3]], 1.0);
        assert!(g.iter().all(|v| *v > 0.0 && *v <= 1.0));
        assert!(g[[0, 0]] < g[[2, 2]]);
        // symmetric
        assert_eq!(g[[1, 2]], g[[7, 4]]);
    }

    #[test]
    fn identity_network_reconstructs_the_image() {
        // a "network" that returns its input as 2 classes (x and 2x): the
        // weighted average of overlapping identical values must be the value.
        let img = Array::from_shape_fn(IxDyn(&[1, 23, 31]), |d| (d[1] * 31 + d[2]) as f32 * 0.01);
        for (patch, gaussian) in [
            (Some(vec![8, 10]), true),
            (Some(vec![8, 10]), false),
            (None, true),
            (Some(vec![30, 40]), true),
        ] {
            let sw = SlidingWindow {
                patch_size: patch.clone(),
                overlap: 0.5,
                gaussian,
                sigma_scale: 0.125,
                batch_size: 3,
            };
            let mut calls = 0;
            let out = sw
                .run(img.view(), |b| {
                    calls += 1;
                    let two = b.mapv(|v| 2.0 * v);
                    Ok(ndarray::concatenate(Axis(1), &[b.view(), two.view()]).unwrap())
                })
                .unwrap();
            assert_eq!(out.shape(), &[2, 23, 31]);
            for (idx, v) in img.index_axis(Axis(0), 0).indexed_iter() {
                let a = out[[0, idx[0], idx[1]]];
                let b = out[[1, idx[0], idx[1]]];
                assert!((a - v).abs() < 1e-4, "{patch:?} {idx:?} {a} vs {v}");
                assert!((b - 2.0 * v).abs() < 2e-4);
            }
            assert!(calls >= 1);
        }
    }

    #[test]
    fn position_dependent_outputs_are_blended_by_weights() {
        // each window predicts a constant equal to its start row: with uniform
        // weights the result at a voxel is the mean start row of the windows
        // covering it.
        let img = ArrayD::<f32>::zeros(IxDyn(&[1, 20, 4]));
        let sw = SlidingWindow {
            patch_size: Some(vec![10, 4]),
            overlap: 0.5,
            gaussian: false,
            sigma_scale: 0.125,
            batch_size: 1,
        };
        let mut starts = window_starts(20, 10, 0.5).into_iter();
        let out = sw
            .run(img.view(), |b| {
                let s = starts.next().unwrap() as f32;
                Ok(ArrayD::from_elem(
                    IxDyn(&[1, 1, b.shape()[2], b.shape()[3]]),
                    s,
                ))
            })
            .unwrap();
        // windows start at 0, 5, 10: row 7 is covered by windows 0 and 5
        assert!((out[[0, 7, 0]] - 2.5).abs() < 1e-6);
        assert!((out[[0, 2, 0]] - 0.0).abs() < 1e-6);
        assert!((out[[0, 12, 0]] - 7.5).abs() < 1e-6);
        assert!((out[[0, 19, 3]] - 10.0).abs() < 1e-6);
    }

    #[test]
    fn bad_settings_are_errors() {
        let img = ArrayD::<f32>::zeros(IxDyn(&[1, 8, 8]));
        let sw = SlidingWindow {
            patch_size: Some(vec![4, 4, 4]),
            ..Default::default()
        };
        assert!(sw.run(img.view(), Ok).is_err());
        let sw = SlidingWindow {
            overlap: 1.0,
            ..Default::default()
        };
        assert!(sw.run(img.view(), Ok).is_err());
        let sw = SlidingWindow::default();
        assert!(sw
            .run(img.view(), |_| Ok(ArrayD::zeros(IxDyn(&[1, 1, 3, 3]))))
            .is_err());
    }
}
