//! Shape and spacing helpers: every array is handled internally as 3D, with
//! leading axes of length 1 marked inactive for 1D and 2D input.

use crate::{MetricsError, Result};
use ndarray::{ArrayView3, ArrayViewD, Axis, Ix3};

/// A view brought to three axes, and which axes carry data (inactive axes
/// have length 1 and no neighbours).
pub(crate) struct View3<'a, T> {
    pub view: ArrayView3<'a, T>,
    pub active: [bool; 3],
}

pub(crate) fn check_pair<T, U>(pred: &ArrayViewD<T>, gt: &ArrayViewD<U>) -> Result<()> {
    if pred.shape() != gt.shape() {
        return Err(MetricsError::ShapeMismatch {
            pred: pred.shape().to_vec(),
            gt: gt.shape().to_vec(),
        });
    }
    let nd = pred.ndim();
    if nd == 0 || nd > 3 {
        return Err(MetricsError::Dimensionality(nd));
    }
    Ok(())
}

pub(crate) fn to3<'a, T>(v: ArrayViewD<'a, T>) -> Result<View3<'a, T>> {
    let nd = v.ndim();
    if nd == 0 || nd > 3 {
        return Err(MetricsError::Dimensionality(nd));
    }
    let mut v = v;
    let mut active = [true; 3];
    for a in active.iter_mut().take(3 - nd) {
        *a = false;
    }
    for _ in nd..3 {
        v = v.insert_axis(Axis(0));
    }
    let view = v
        .into_dimensionality::<Ix3>()
        .map_err(|_| MetricsError::Dimensionality(nd))?;
    Ok(View3 { view, active })
}

pub(crate) fn spacing3(spacing: &[f64], ndim: usize) -> Result<[f64; 3]> {
    if spacing.len() != ndim {
        return Err(MetricsError::SpacingLength {
            got: spacing.len(),
            ndim,
        });
    }
    if spacing.iter().any(|s| !s.is_finite() || *s <= 0.0) {
        return Err(MetricsError::BadSpacing(spacing.to_vec()));
    }
    let mut out = [1.0; 3];
    out[3 - ndim..].copy_from_slice(spacing);
    Ok(out)
}
