//! `MetricOptions` from the keyword arguments of the Python functions (the
//! Python layer has already turned names such as `"inf"` into numbers).

use medseg_metrics::{Connectivity, EmptyPolicies, EmptyPolicy, Hd95Definition, MetricOptions};
use pyo3::exceptions::PyValueError;
use pyo3::PyResult;

/// The keyword arguments that choose definitions and empty-mask values.
pub struct Args<'a> {
    /// `"pooled"` (MedPy) or `"max-of-directed"` (MONAI).
    pub hd95: &'a str,
    /// Percentile of the "hd95" value, in [0, 100].
    pub percentile: f64,
    /// `"face"` or `"full"`.
    pub connectivity: &'a str,
    /// Distance metrics when exactly one mask is empty.
    pub one_empty: f64,
    /// Distance metrics when both masks are empty.
    pub both_empty: f64,
    /// Tolerance of the normalised surface Dice, mm.
    pub nsd_tolerance: f64,
    /// Overlap ratios whose denominator is zero.
    pub zero_division: f64,
    /// Whether surface distances are needed at all.
    pub surface: bool,
}

/// NaN, +inf and 0 are the named policies; any other finite number is a cap.
fn policy(v: f64, what: &str) -> PyResult<EmptyPolicy> {
    Ok(if v.is_nan() {
        EmptyPolicy::Nan
    } else if v == f64::INFINITY {
        EmptyPolicy::Inf
    } else if v == 0.0 {
        EmptyPolicy::Zero
    } else if v.is_finite() {
        EmptyPolicy::Cap(v)
    } else {
        return Err(PyValueError::new_err(format!(
            "{what}: expected 'nan', 'inf', 'zero' or a finite number, got {v}"
        )));
    })
}

/// Builds and validates the options.
pub fn options(a: &Args) -> PyResult<MetricOptions> {
    let hd95 = match a.hd95 {
        "pooled" => Hd95Definition::Pooled,
        "max-of-directed" => Hd95Definition::MaxOfDirected,
        o => {
            return Err(PyValueError::new_err(format!(
                "hd95={o:?}: expected 'pooled' (MedPy, seg-metrics) or 'max-of-directed' (MONAI)"
            )))
        }
    };
    let connectivity = match a.connectivity {
        "face" => Connectivity::Face,
        "full" => Connectivity::Full,
        o => {
            return Err(PyValueError::new_err(format!(
                "connectivity={o:?}: expected 'face' (1) or 'full' (ndim)"
            )))
        }
    };
    let opts = MetricOptions {
        connectivity,
        hd95,
        percentile: a.percentile,
        nsd_tolerance_mm: a.nsd_tolerance,
        distance_empty: EmptyPolicies {
            one_empty: policy(a.one_empty, "empty (one mask empty)")?,
            both_empty: policy(a.both_empty, "empty (both masks empty)")?,
        },
        overlap_zero_division: policy(a.zero_division, "zero_division")?,
        surface_distances: a.surface,
        ..MetricOptions::default()
    };
    opts.validate()
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(opts)
}
