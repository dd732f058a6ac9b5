//! All metrics of several classes of one case in one call.

use crate::label::LabelValue;
use crate::options::MetricOptions;
use crate::overlap::{scan, Counts, NO_SLOT};
use crate::surface::pair_distances;
use crate::util::{check_pair, spacing3, to3};
use crate::{MetricsError, Result};
use ndarray::ArrayViewD;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Every metric of one class of one case. Distances are in mm, volumes in
/// mm³. Undefined values follow the policies of [`MetricOptions`] (NaN
/// serialises to JSON `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// The label value evaluated.
    pub class: u16,
    /// Confusion counts in voxels.
    pub counts: Counts,
    /// Volume of the class in the prediction, mm³.
    pub volume_pred_mm3: f64,
    /// Volume of the class in the ground truth, mm³.
    pub volume_gt_mm3: f64,
    /// Dice, [`Counts::dice`].
    pub dice: f64,
    /// IoU / Jaccard, [`Counts::iou`].
    pub iou: f64,
    /// Precision, [`Counts::precision`].
    pub precision: f64,
    /// Recall / sensitivity, [`Counts::recall`].
    pub recall: f64,
    /// Specificity, [`Counts::specificity`].
    pub specificity: f64,
    /// Volume similarity, [`Counts::volume_similarity`].
    pub volume_similarity: f64,
    /// Signed relative volume error, [`Counts::relative_volume_error`].
    pub relative_volume_error: f64,
    /// Hausdorff distance, [`crate::SurfaceDistances::hausdorff`].
    pub hausdorff: f64,
    /// Percentile Hausdorff distance at [`MetricOptions::percentile`] under
    /// [`MetricOptions::hd95`].
    pub hd95: f64,
    /// Average surface distance, prediction to ground truth.
    pub asd_pred_to_gt: f64,
    /// Average surface distance, ground truth to prediction.
    pub asd_gt_to_pred: f64,
    /// Average symmetric surface distance under [`MetricOptions::assd`].
    pub assd: f64,
    /// Normalised surface Dice at [`MetricOptions::nsd_tolerance_mm`].
    pub nsd: f64,
}

/// Evaluates each label value in `classes` between a prediction and a
/// ground truth label map of the same shape (`[H, W]` or `[D, H, W]`, spatial
/// axes only; `[W]` works too), with `spacing` in mm in array axis order.
///
/// The maps may hold any integer type or `bool` ([`LabelValue`]); they are
/// read in place, in any memory layout. Classes are evaluated one-vs-rest
/// (`label == class`). One parallel pass gathers the counts and bounding
/// boxes of all classes; surface distances are then computed per class
/// inside the bounding box of its two masks.
pub fn evaluate_case<T: LabelValue>(
    pred: ArrayViewD<T>,
    gt: ArrayViewD<T>,
    spacing: &[f64],
    classes: &[u16],
    opts: &MetricOptions,
) -> Result<Vec<ClassMetrics>> {
    let mut table = vec![NO_SLOT; 1 << 16];
    for (i, &c) in classes.iter().enumerate() {
        if table[c as usize] != NO_SLOT {
            return Err(MetricsError::InvalidOption(format!(
                "class {c} is listed twice"
            )));
        }
        table[c as usize] = i;
    }
    evaluate_slots(pred, gt, spacing, classes, opts, |&v: &T| {
        v.class().map_or(NO_SLOT, |c| table[c as usize])
    })
}

/// Evaluates two binary masks: every non-zero value is foreground, as MedPy
/// reads its inputs (`numpy.asarray(x).astype(bool)`). Same shapes, spacing
/// and layouts as [`evaluate_case`]; the result is reported as class 1.
pub fn evaluate_foreground<T: LabelValue>(
    pred: ArrayViewD<T>,
    gt: ArrayViewD<T>,
    spacing: &[f64],
    opts: &MetricOptions,
) -> Result<ClassMetrics> {
    let mut m = evaluate_slots(pred, gt, spacing, &[1], opts, |&v: &T| {
        if v.is_nonzero() {
            0
        } else {
            NO_SLOT
        }
    })?;
    Ok(m.remove(0))
}

/// The shared body: `slot` maps a voxel value to the index of its class in
/// `classes`, or `NO_SLOT`.
fn evaluate_slots<T, F>(
    pred: ArrayViewD<T>,
    gt: ArrayViewD<T>,
    spacing: &[f64],
    classes: &[u16],
    opts: &MetricOptions,
    slot: F,
) -> Result<Vec<ClassMetrics>>
where
    T: LabelValue,
    F: Fn(&T) -> usize + Sync,
{
    check_pair(&pred, &gt)?;
    opts.validate()?;
    let sp = spacing3(spacing, pred.ndim())?;
    let voxel = spacing.iter().product::<f64>();
    let total = pred.len() as u64;
    let p = to3(pred)?;
    let g = to3(gt)?.view;
    let scans = scan(p.view, g, classes.len(), &slot);
    let z = opts.overlap_zero_division;
    let metrics = classes
        .par_iter()
        .enumerate()
        .zip(scans.par_iter())
        .map(|((i, &class), s)| {
            let counts = s.counts(total);
            let mut m = ClassMetrics {
                class,
                counts,
                volume_pred_mm3: counts.n_pred() as f64 * voxel,
                volume_gt_mm3: counts.n_gt() as f64 * voxel,
                dice: counts.dice(z),
                iou: counts.iou(z),
                precision: counts.precision(z),
                recall: counts.recall(z),
                specificity: counts.specificity(z),
                volume_similarity: counts.volume_similarity(z),
                relative_volume_error: counts.relative_volume_error(z),
                hausdorff: f64::NAN,
                hd95: f64::NAN,
                asd_pred_to_gt: f64::NAN,
                asd_gt_to_pred: f64::NAN,
                assd: f64::NAN,
                nsd: f64::NAN,
            };
            if opts.surface_distances {
                let sd = pair_distances(
                    p.view,
                    g,
                    |v: &T| slot(v) == i,
                    |v: &T| slot(v) == i,
                    s,
                    p.active,
                    sp,
                    opts.connectivity,
                );
                let e = &opts.distance_empty;
                m.hausdorff = sd.hausdorff(e);
                m.hd95 = sd.percentile_hausdorff(opts.percentile, opts.hd95, e);
                m.asd_pred_to_gt = sd.asd_pred_to_gt(e);
                m.asd_gt_to_pred = sd.asd_gt_to_pred(e);
                m.assd = sd.assd(opts.assd, e);
                m.nsd = sd.nsd(opts.nsd_tolerance_mm, &opts.nsd_empty);
            }
            m
        })
        .collect();
    Ok(metrics)
}
