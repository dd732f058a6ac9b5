//! Helpers shared by the screen-photo transforms ([`crate::ColorJitter`],
//! [`crate::RandomPerspective`], [`crate::JpegQuality`], [`crate::Moire`],
//! [`crate::ScreenColorCast`], [`crate::ScreenPhoto`]): the intensity window
//! that maps a sample's values to display levels and back, and per-slice
//! iteration (a volume `[C, D, H, W]` is photographed slice by slice, each
//! depth slice `[C, H, W]` being one picture on the screen).

use medseg_core::{Error, Result};
use ndarray::{s, ArrayD, ArrayViewMut3, Axis, Ix4};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A uniform draw from `[r[0], r[1])`, or `r[0]` when the range is a point.
pub(crate) fn draw(rng: &mut ChaCha8Rng, r: [f64; 2]) -> f64 {
    if r[0] == r[1] {
        r[0]
    } else {
        rng.random_range(r[0]..r[1])
    }
}

pub(crate) use crate::pipeline::skipped;

/// The intensity window `[lo, hi]` of a transform: the `given` one, or the
/// minimum and maximum of the finite values of `data` (all channels
/// together, so that RGB colours keep their balance). A window of zero or
/// negative width (a constant image) is widened to `[lo, lo + 1]`.
///
/// # Errors
/// [`Error::InvalidValue`] under `key` for a given window whose values are
/// not finite or whose low end is not below its high end.
pub(crate) fn window_of(
    data: &ArrayD<f32>,
    given: Option<[f32; 2]>,
    key: &str,
) -> Result<[f32; 2]> {
    if let Some(w) = given {
        check_window(key, w)?;
        return Ok(w);
    }
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in data.iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return Ok([0.0, 1.0]);
    }
    if hi <= lo {
        hi = lo + 1.0;
    }
    Ok([lo, hi])
}

/// Checks a configured intensity window.
pub(crate) fn check_window(key: &str, w: [f32; 2]) -> Result<()> {
    if w[0].is_finite() && w[1].is_finite() && w[0] < w[1] {
        Ok(())
    } else {
        Err(Error::invalid(
            key,
            format!("must be [low, high] with finite low < high, got {w:?}"),
        ))
    }
}

/// Checks an optional window parameter.
pub(crate) fn check_opt_window(key: &str, w: Option<[f32; 2]>) -> Result<()> {
    w.map_or(Ok(()), |w| check_window(key, w))
}

/// Calls `f` on every 2D picture `[C, H, W]` of a channel-first image: the
/// image itself for `[C, H, W]`, each depth slice for `[C, D, H, W]`.
///
/// # Errors
/// [`Error::Shape`] for other ranks.
pub(crate) fn for_each_slice(
    data: &mut ArrayD<f32>,
    mut f: impl FnMut(ArrayViewMut3<'_, f32>) -> Result<()>,
) -> Result<()> {
    match data.ndim() {
        3 => f(data
            .view_mut()
            .into_dimensionality()
            .map_err(|e| Error::Shape(e.to_string()))?),
        4 => {
            let mut v = data
                .view_mut()
                .into_dimensionality::<Ix4>()
                .map_err(|e| Error::Shape(e.to_string()))?;
            for d in 0..v.shape()[1] {
                f(v.slice_mut(s![.., d, .., ..]))?;
            }
            Ok(())
        }
        n => Err(Error::Shape(format!(
            "expected a channel-first image [C, H, W] or [C, D, H, W], got rank {n}"
        ))),
    }
}

/// Maps a picture to `[0, scale]` through `window` (values outside the window
/// are left outside; callers clamp where their model needs it).
pub(crate) fn to_unit(mut v: ArrayViewMut3<'_, f32>, window: [f32; 2], scale: f32) {
    let span = window[1] - window[0];
    v.mapv_inplace(|x| (x - window[0]) / span * scale);
}

/// Undoes [`to_unit`].
pub(crate) fn from_unit(mut v: ArrayViewMut3<'_, f32>, window: [f32; 2], scale: f32) {
    let span = window[1] - window[0];
    v.mapv_inplace(|x| window[0] + x / scale * span);
}

/// The number of channels of a channel-first image.
pub(crate) fn channels(data: &ArrayD<f32>) -> usize {
    data.len_of(Axis(0))
}
