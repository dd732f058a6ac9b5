//! `medseg_metrics._native`: the Rust half of the `medseg-metrics` Python
//! package. The Python half (`python/medseg_metrics/__init__.py`) checks and
//! normalises the arguments (dtypes, labels, names of definitions) and
//! shapes the results; this module evaluates numpy arrays in place with the
//! GIL released.

mod arrays;
mod options;

use arrays::{evaluate_arrays, labels_of_array, Classes};
use medseg_metrics::ClassMetrics;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// One class's metrics as a dict (names as in the Python documentation).
fn to_dict<'py>(py: Python<'py>, m: &ClassMetrics) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("label", m.class)?;
    d.set_item("dice", m.dice)?;
    d.set_item("iou", m.iou)?;
    d.set_item("precision", m.precision)?;
    d.set_item("recall", m.recall)?;
    d.set_item("specificity", m.specificity)?;
    d.set_item("volume_similarity", m.volume_similarity)?;
    d.set_item("relative_volume_error", m.relative_volume_error)?;
    d.set_item("hd", m.hausdorff)?;
    d.set_item("hd95", m.hd95)?;
    d.set_item("asd", m.asd_pred_to_gt)?;
    d.set_item("asd_gt_to_pred", m.asd_gt_to_pred)?;
    d.set_item("assd", m.assd)?;
    d.set_item("nsd", m.nsd)?;
    d.set_item("tp", m.counts.tp)?;
    d.set_item("fp", m.counts.fp)?;
    d.set_item("fn", m.counts.fn_)?;
    d.set_item("tn", m.counts.tn)?;
    d.set_item("volume_gt_mm3", m.volume_gt_mm3)?;
    d.set_item("volume_pred_mm3", m.volume_pred_mm3)?;
    Ok(d)
}

/// Every metric of each class (`labels`, or the non-zero foreground when
/// `labels` is None) between `gt` and `pred`: a list of dicts, one per class.
#[pyfunction]
#[pyo3(signature = (gt, pred, spacing, labels, hd95, percentile, connectivity, one_empty, both_empty, nsd_tolerance, zero_division, surface))]
#[allow(clippy::too_many_arguments)]
fn evaluate<'py>(
    py: Python<'py>,
    gt: &Bound<'py, PyAny>,
    pred: &Bound<'py, PyAny>,
    spacing: Vec<f64>,
    labels: Option<Vec<u16>>,
    hd95: &str,
    percentile: f64,
    connectivity: &str,
    one_empty: f64,
    both_empty: f64,
    nsd_tolerance: f64,
    zero_division: f64,
    surface: bool,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let opts = options::options(&options::Args {
        hd95,
        percentile,
        connectivity,
        one_empty,
        both_empty,
        nsd_tolerance,
        zero_division,
        surface,
    })?;
    let classes = match labels {
        Some(l) => Classes::Labels(l),
        None => Classes::Foreground,
    };
    let metrics = evaluate_arrays(py, gt, pred, &spacing, &classes, &opts)?;
    metrics.iter().map(|m| to_dict(py, m)).collect()
}

/// The non-zero labels present in `gt`, sorted.
#[pyfunction]
fn labels_present<'py>(py: Python<'py>, gt: &Bound<'py, PyAny>) -> PyResult<Vec<u16>> {
    labels_of_array(py, gt)
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(labels_present, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
