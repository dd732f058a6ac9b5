//! Test-time augmentation by flipping.

use crate::Result;
use ndarray::{ArrayD, ArrayViewD, Axis};

/// Every subset of the spatial axes `0..ndim` (the empty set first), as
/// nnU-Net's mirroring: 4 variants in 2D, 8 in 3D.
pub fn flip_axes_subsets(ndim: usize) -> Vec<Vec<usize>> {
    (0..1usize << ndim)
        .map(|m| (0..ndim).filter(|a| m & (1 << a) != 0).collect())
        .collect()
}

fn flip(mut a: ArrayD<f32>, spatial_axes: &[usize]) -> ArrayD<f32> {
    for &ax in spatial_axes {
        a.invert_axis(Axis(ax + 1));
    }
    // make the layout standard again so that later slicing is cheap
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

/// Runs `predict` on `image` (`[C, ...spatial]`) and on its flips along every
/// subset of spatial axes (when `flips` is true), flips each output back and
/// averages them. `predict` maps `[C, ...spatial]` to `[K, ...spatial]`.
pub fn predict_with_flips<F>(
    image: ArrayViewD<f32>,
    flips: bool,
    mut predict: F,
) -> Result<ArrayD<f32>>
where
    F: FnMut(ArrayViewD<f32>) -> Result<ArrayD<f32>>,
{
    if !flips {
        return predict(image);
    }
    let subsets = flip_axes_subsets(image.ndim() - 1);
    let mut acc: Option<ArrayD<f32>> = None;
    for axes in &subsets {
        let x = flip(image.to_owned(), axes);
        let y = flip(predict(x.view())?, axes);
        match acc.as_mut() {
            None => acc = Some(y),
            Some(a) => *a += &y,
        }
    }
    let mut acc = acc.expect("at least the identity subset");
    acc.mapv_inplace(|v| v / subsets.len() as f32);
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, IxDyn};

    #[test]
    fn subsets() {
        assert_eq!(
            flip_axes_subsets(2),
            vec![vec![], vec![0], vec![1], vec![0, 1]]
        );
        assert_eq!(flip_axes_subsets(3).len(), 8);
    }

    #[test]
    fn equivariant_predictor_is_unchanged_and_others_are_symmetrised() {
        let img = Array::from_shape_fn(IxDyn(&[1, 5, 6]), |d| (d[1] * 6 + d[2]) as f32);
        // pointwise predictor: flip-equivariant, TTA must not change it
        let plain = predict_with_flips(img.view(), false, |x| Ok(x.mapv(|v| v * 0.5))).unwrap();
        let tta = predict_with_flips(img.view(), true, |x| Ok(x.mapv(|v| v * 0.5))).unwrap();
        assert_eq!(plain, tta);
        // a predictor that outputs the row index of its input frame: TTA
        // averages row r and its mirror 4 - r, giving 2 everywhere
        let rows = predict_with_flips(img.view(), true, |x| {
            Ok(Array::from_shape_fn(IxDyn(x.shape()), |d| d[1] as f32))
        })
        .unwrap();
        assert!(rows.iter().all(|v| (*v - 2.0).abs() < 1e-6));
    }
}
