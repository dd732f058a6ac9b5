//! numpy arrays as ndarray views, without copying: one code path per
//! element type, chosen from the arrays' dtype.

use medseg_metrics::{
    evaluate_case, evaluate_foreground, labels_present, ClassMetrics, LabelValue, MetricOptions,
    MetricsError,
};
use ndarray::ArrayViewD;
use numpy::{Element, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// What to evaluate: the non-zero foreground of two binary masks, or
/// listed classes one-vs-rest.
pub enum Classes {
    /// Every non-zero value is foreground (MedPy's reading of masks).
    Foreground,
    /// These label values.
    Labels(Vec<u16>),
}

fn value_error(e: MetricsError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// Both views with their axes reversed (and the spacing with them) when both
/// arrays are Fortran-ordered and not C-ordered, so that the innermost loop
/// of every pass runs over contiguous memory; the metrics do not depend on
/// the order of the axes when the spacing follows them.
fn c_order<'a, T>(
    gt: ArrayViewD<'a, T>,
    pred: ArrayViewD<'a, T>,
    spacing: &[f64],
    fortran: bool,
) -> (ArrayViewD<'a, T>, ArrayViewD<'a, T>, Vec<f64>) {
    if fortran {
        let sp = spacing.iter().rev().copied().collect();
        (gt.reversed_axes(), pred.reversed_axes(), sp)
    } else {
        (gt, pred, spacing.to_vec())
    }
}

fn evaluate_typed<T: Element + LabelValue>(
    py: Python<'_>,
    gt: PyReadonlyArrayDyn<'_, T>,
    pred: PyReadonlyArrayDyn<'_, T>,
    spacing: &[f64],
    classes: &Classes,
    opts: &MetricOptions,
) -> PyResult<Vec<ClassMetrics>> {
    let fortran = |a: &PyReadonlyArrayDyn<'_, T>| {
        a.ndim() > 1 && a.is_fortran_contiguous() && !a.is_c_contiguous()
    };
    let f = fortran(&gt) && fortran(&pred) && spacing.len() == gt.ndim();
    let (g, p, sp) = c_order(gt.as_array(), pred.as_array(), spacing, f);
    // the views borrow numpy's memory; the readonly borrows keep it alive
    // and unwritten by Rust code while the GIL is released
    py.detach(|| match classes {
        Classes::Foreground => evaluate_foreground(p, g, &sp, opts).map(|m| vec![m]),
        Classes::Labels(l) => evaluate_case(p, g, &sp, l, opts),
    })
    .map_err(value_error)
}

fn labels_typed<T: Element + LabelValue>(
    py: Python<'_>,
    gt: PyReadonlyArrayDyn<'_, T>,
) -> PyResult<Vec<u16>> {
    let g = gt.as_array();
    py.detach(|| labels_present(g)).map_err(value_error)
}

/// Calls `$body` with `$g`/`$p` extracted as readonly arrays of the first
/// element type that both arrays have.
macro_rules! dispatch {
    ($gt:expr, $pred:expr, |$g:ident, $p:ident| $body:expr) => {{
        dispatch!(@each $gt, $pred, $g, $p, $body, bool, u8, u16, u32, u64, i8, i16, i32, i64)
    }};
    (@each $gt:expr, $pred:expr, $g:ident, $p:ident, $body:expr, $($t:ty),*) => {{
        $(
            if let (Ok($g), Ok($p)) = (
                $gt.extract::<PyReadonlyArrayDyn<'_, $t>>(),
                $pred.extract::<PyReadonlyArrayDyn<'_, $t>>(),
            ) {
                return $body;
            }
        )*
    }};
}

/// Evaluates two numpy arrays of one integer or bool dtype (native byte
/// order) in place.
pub fn evaluate_arrays(
    py: Python<'_>,
    gt: &Bound<'_, PyAny>,
    pred: &Bound<'_, PyAny>,
    spacing: &[f64],
    classes: &Classes,
    opts: &MetricOptions,
) -> PyResult<Vec<ClassMetrics>> {
    dispatch!(gt, pred, |g, p| evaluate_typed(
        py, g, p, spacing, classes, opts
    ));
    Err(PyTypeError::new_err(
        "gt and pred must be numpy arrays of the same integer or bool dtype in native byte order",
    ))
}

/// The non-zero labels of a numpy array of an integer or bool dtype.
pub fn labels_of_array(py: Python<'_>, gt: &Bound<'_, PyAny>) -> PyResult<Vec<u16>> {
    dispatch!(gt, gt, |g, _p| labels_typed(py, g));
    Err(PyTypeError::new_err(
        "gt must be a numpy array of an integer or bool dtype in native byte order",
    ))
}
