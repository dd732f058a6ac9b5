//! Element types of label maps: every integer type and `bool` is evaluated
//! in place, without converting the arrays to `u16` first.

use crate::{MetricsError, Result};
use ndarray::{ArrayViewD, Axis, Zip};
use rayon::prelude::*;

/// An element type of label maps that the metrics read in place.
///
/// Classes are label values in `0..=65535` (medseg's label maps are `u16`);
/// array values outside that range (negative values, or larger ones in
/// `u32`/`i64` arrays) belong to no class and count as background of every
/// class. `bool` masks hold the classes 0 (`false`) and 1 (`true`).
pub trait LabelValue: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// The class this value stands for, `None` outside `0..=65535`.
    fn class(self) -> Option<u16>;
    /// Whether the value is non-zero: the foreground of a binary mask, as
    /// MedPy's `astype(bool)` reads any label map.
    fn is_nonzero(self) -> bool;
}

impl LabelValue for bool {
    #[inline]
    fn class(self) -> Option<u16> {
        Some(self as u16)
    }
    #[inline]
    fn is_nonzero(self) -> bool {
        self
    }
}

macro_rules! label_value {
    ($($t:ty),*) => {$(
        impl LabelValue for $t {
            #[inline]
            fn class(self) -> Option<u16> {
                u16::try_from(self).ok()
            }
            #[inline]
            fn is_nonzero(self) -> bool {
                self != 0
            }
        }
    )*};
}

label_value!(u8, u16, u32, u64, i8, i16, i32, i64);

/// The non-zero labels present in a label map, sorted.
///
/// # Errors
/// [`MetricsError::InvalidOption`] naming the value when a non-zero value
/// lies outside `0..=65535` (it cannot be a class: give the classes
/// explicitly instead).
pub fn labels_present<T: LabelValue>(labels: ArrayViewD<T>) -> Result<Vec<u16>> {
    let fold = |mut seen: (Vec<bool>, Option<T>), row: ndarray::ArrayView1<T>| {
        for &v in row.iter() {
            match v.class() {
                Some(c) => seen.0[c as usize] = true,
                None => {
                    seen.1.get_or_insert(v);
                }
            }
        }
        seen
    };
    let init = || (vec![false; 1 << 16], None);
    let (seen, bad) = if labels.ndim() == 0 {
        fold(
            init(),
            labels
                .insert_axis(Axis(0))
                .into_dimensionality()
                .expect("1D"),
        )
    } else {
        let last = Axis(labels.ndim() - 1);
        Zip::from(labels.lanes(last))
            .into_par_iter()
            .fold(init, |s, (row,)| fold(s, row))
            .reduce(init, |mut a, b| {
                for (x, y) in a.0.iter_mut().zip(&b.0) {
                    *x |= *y;
                }
                (a.0, a.1.or(b.1))
            })
    };
    if let Some(v) = bad {
        return Err(MetricsError::InvalidOption(format!(
            "label value {v:?} lies outside 0..=65535 and cannot be a class; give the labels to evaluate explicitly"
        )));
    }
    Ok((1..=u16::MAX).filter(|&c| seen[c as usize]).collect())
}
