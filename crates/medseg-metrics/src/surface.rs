//! Surfaces (mask minus its erosion) and the distances between two of them.

use crate::edt::directed_surface_distances;
use crate::options::{AssdDefinition, Connectivity, EmptyPolicies, Hd95Definition};
use crate::overlap::{scan_one, SlotScan};
use crate::stats::{max, mean, percentile};
use crate::util::{check_pair, spacing3, to3};
use crate::Result;
use ndarray::{Array3, ArrayView3, ArrayViewD, Axis, Zip};
use serde::{Deserialize, Serialize};

/// The two directed sets of surface distances between a prediction and a
/// ground truth, in mm.
///
/// The surface of a mask is the mask minus its binary erosion (with the
/// chosen [`Connectivity`]), where everything outside the image counts as
/// background, so mask voxels on the image border are surface voxels. This
/// is MedPy's `__surface_distances` and MONAI's `get_mask_edges`. Each
/// distance is the exact Euclidean distance from a surface voxel centre of
/// one mask to the nearest surface voxel centre of the other (MedPy's
/// `distance_transform_edt`, MONAI's KD-tree). A set is empty exactly when
/// its mask is empty; when only the other mask is empty, every distance in
/// it is `+inf` (so the surface voxel count stays available). The metric
/// methods apply an [`EmptyPolicies`] in both cases.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SurfaceDistances {
    /// For every prediction surface voxel, the distance to the ground-truth
    /// surface (MedPy `__surface_distances(result, reference)`).
    pub pred_to_gt: Vec<f64>,
    /// For every ground-truth surface voxel, the distance to the prediction
    /// surface.
    pub gt_to_pred: Vec<f64>,
}

impl SurfaceDistances {
    fn resolve(&self, empty: &EmptyPolicies) -> Option<f64> {
        empty.resolve(self.pred_to_gt.len(), self.gt_to_pred.len())
    }

    /// Hausdorff distance: the largest distance in either direction (MedPy
    /// `hd`, MONAI `HausdorffDistanceMetric()`).
    pub fn hausdorff(&self, empty: &EmptyPolicies) -> f64 {
        if let Some(v) = self.resolve(empty) {
            return v;
        }
        max(&self.pred_to_gt).max(max(&self.gt_to_pred))
    }

    /// Percentile Hausdorff distance (`q = 95` for HD95) under `def`:
    /// [`Hd95Definition::Pooled`] matches MedPy `hd95`,
    /// [`Hd95Definition::MaxOfDirected`] matches MONAI
    /// `HausdorffDistanceMetric(percentile=q)`.
    pub fn percentile_hausdorff(&self, q: f64, def: Hd95Definition, empty: &EmptyPolicies) -> f64 {
        if let Some(v) = self.resolve(empty) {
            return v;
        }
        match def {
            Hd95Definition::Pooled => {
                let mut all = Vec::with_capacity(self.pred_to_gt.len() + self.gt_to_pred.len());
                all.extend_from_slice(&self.pred_to_gt);
                all.extend_from_slice(&self.gt_to_pred);
                percentile(&mut all, q)
            }
            Hd95Definition::MaxOfDirected => {
                let a = percentile(&mut self.pred_to_gt.clone(), q);
                let b = percentile(&mut self.gt_to_pred.clone(), q);
                a.max(b)
            }
        }
    }

    /// Directed percentile from the prediction surface to the ground truth
    /// (MONAI `HausdorffDistanceMetric(percentile=q, directed=True)`).
    pub fn directed_percentile(&self, q: f64, empty: &EmptyPolicies) -> f64 {
        if let Some(v) = self.resolve(empty) {
            return v;
        }
        percentile(&mut self.pred_to_gt.clone(), q)
    }

    /// Average surface distance from the prediction to the ground truth
    /// (MedPy `asd(result, reference)`, MONAI
    /// `SurfaceDistanceMetric(symmetric=False)`).
    pub fn asd_pred_to_gt(&self, empty: &EmptyPolicies) -> f64 {
        self.resolve(empty)
            .unwrap_or_else(|| mean(&self.pred_to_gt))
    }

    /// Average surface distance from the ground truth to the prediction.
    pub fn asd_gt_to_pred(&self, empty: &EmptyPolicies) -> f64 {
        self.resolve(empty)
            .unwrap_or_else(|| mean(&self.gt_to_pred))
    }

    /// Average symmetric surface distance under `def`:
    /// [`AssdDefinition::PooledMean`] matches MedPy 0.5 `assd` and MONAI
    /// `SurfaceDistanceMetric(symmetric=True)`.
    pub fn assd(&self, def: AssdDefinition, empty: &EmptyPolicies) -> f64 {
        if let Some(v) = self.resolve(empty) {
            return v;
        }
        match def {
            AssdDefinition::PooledMean => {
                let n = (self.pred_to_gt.len() + self.gt_to_pred.len()) as f64;
                (self.pred_to_gt.iter().sum::<f64>() + self.gt_to_pred.iter().sum::<f64>()) / n
            }
            AssdDefinition::MeanOfDirectedMeans => {
                0.5 * (mean(&self.pred_to_gt) + mean(&self.gt_to_pred))
            }
        }
    }

    /// Normalised surface Dice at `tolerance_mm`: the fraction of surface
    /// voxels of both masks within the tolerance of the other surface
    /// (MONAI `compute_surface_dice(class_thresholds=[tolerance_mm])` without
    /// sub-voxels). MONAI gives 0 when one mask is empty and NaN when both
    /// are.
    pub fn nsd(&self, tolerance_mm: f64, empty: &EmptyPolicies) -> f64 {
        if let Some(v) = self.resolve(empty) {
            return v;
        }
        let ok = self
            .pred_to_gt
            .iter()
            .filter(|&&d| d <= tolerance_mm)
            .count()
            + self
                .gt_to_pred
                .iter()
                .filter(|&&d| d <= tolerance_mm)
                .count();
        ok as f64 / (self.pred_to_gt.len() + self.gt_to_pred.len()) as f64
    }
}

/// Neighbour offsets (in flat indices of the padded box) for the active axes.
fn neighbour_offsets(strides: [isize; 3], active: [bool; 3], conn: Connectivity) -> Vec<isize> {
    let range = |a: usize| if active[a] { -1isize..=1 } else { 0..=0 };
    let mut out = Vec::new();
    for i in range(0) {
        for j in range(1) {
            for k in range(2) {
                let nonzero = (i != 0) as u8 + (j != 0) as u8 + (k != 0) as u8;
                let keep = match conn {
                    Connectivity::Face => nonzero == 1,
                    Connectivity::Full => nonzero >= 1,
                };
                if keep {
                    out.push(i * strides[0] + j * strides[1] + k * strides[2]);
                }
            }
        }
    }
    out
}

/// Distances for one pair whose union lies in the inclusive box `lo..=hi`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pair_distances<T, FP, FG>(
    pred: ArrayView3<T>,
    gt: ArrayView3<T>,
    is_pred: FP,
    is_gt: FG,
    bbox: &SlotScan,
    active: [bool; 3],
    spacing: [f64; 3],
    conn: Connectivity,
) -> SurfaceDistances
where
    T: Sync,
    FP: Fn(&T) -> bool + Sync,
    FG: Fn(&T) -> bool + Sync,
{
    if bbox.is_empty() {
        return SurfaceDistances::default();
    }
    // padded box: one voxel of background around the union on active axes
    let pad = |a: usize| active[a] as usize;
    let dims = [0, 1, 2].map(|a| bbox.hi[a] - bbox.lo[a] + 1 + 2 * pad(a));
    let mut lab = Array3::<u8>::zeros(dims);
    Zip::indexed(lab.lanes_mut(Axis(2))).par_for_each(|(d, h), mut row| {
        if active[0] && (d == 0 || d == dims[0] - 1) || active[1] && (h == 0 || h == dims[1] - 1) {
            return;
        }
        let sd = bbox.lo[0] + d - pad(0);
        let sh = bbox.lo[1] + h - pad(1);
        let p = pred.slice(ndarray::s![sd, sh, bbox.lo[2]..=bbox.hi[2]]);
        let g = gt.slice(ndarray::s![sd, sh, bbox.lo[2]..=bbox.hi[2]]);
        let row = row.as_slice_mut().expect("contiguous row");
        match (p.as_slice(), g.as_slice()) {
            (Some(p), Some(g)) => {
                for ((o, pv), gv) in row[1..].iter_mut().zip(p).zip(g) {
                    *o = is_pred(pv) as u8 | ((is_gt(gv) as u8) << 1);
                }
            }
            _ => {
                for ((o, pv), gv) in row[1..].iter_mut().zip(p.iter()).zip(g.iter()) {
                    *o = is_pred(pv) as u8 | ((is_gt(gv) as u8) << 1);
                }
            }
        }
    });
    // surface: a voxel whose label bit is missing in some neighbour
    let strides = [(dims[1] * dims[2]) as isize, dims[2] as isize, 1];
    let offsets = neighbour_offsets(strides, active, conn);
    let labs = lab.as_slice().expect("standard layout");
    let mut surf = Array3::<u8>::zeros(dims);
    Zip::indexed(surf.lanes_mut(Axis(2))).par_for_each(|(d, h), mut row| {
        if active[0] && (d == 0 || d == dims[0] - 1) || active[1] && (h == 0 || h == dims[1] - 1) {
            return;
        }
        let base = (d * dims[1] + h) * dims[2];
        let row = row.as_slice_mut().expect("contiguous row");
        for (w, out) in row.iter_mut().enumerate().take(dims[2] - 1).skip(1) {
            let i = base + w;
            let v = labs[i];
            if v == 0 {
                continue;
            }
            let mut all = v;
            for &o in &offsets {
                all &= labs[(i as isize + o) as usize];
            }
            *out = v & !all;
        }
    });
    drop(lab);
    let surfs = surf.as_slice().expect("standard layout");
    let mut buf = Vec::new();
    let mut directed = |target: u8, source: u8| -> Vec<f64> {
        directed_surface_distances(surfs, dims, spacing, target, source, &mut buf)
    };
    let has_pred = bbox.n_pred > 0;
    let has_gt = bbox.n_gt > 0;
    let pred_to_gt = if has_pred && has_gt {
        directed(2, 1)
    } else {
        Vec::new()
    };
    let gt_to_pred = if has_pred && has_gt {
        directed(1, 2)
    } else {
        Vec::new()
    };
    // an empty mask on one side: report the other side's surface as infinite
    // distances so that counts stay available
    let count = |bit: u8| surfs.iter().filter(|&&s| s & bit != 0).count();
    let (pred_to_gt, gt_to_pred) = match (has_pred, has_gt) {
        (true, false) => (vec![f64::INFINITY; count(1)], Vec::new()),
        (false, true) => (Vec::new(), vec![f64::INFINITY; count(2)]),
        _ => (pred_to_gt, gt_to_pred),
    };
    SurfaceDistances {
        pred_to_gt,
        gt_to_pred,
    }
}

/// Surface distances of `class` between two label maps of the same shape
/// (`[W]`, `[H, W]` or `[D, H, W]`, spatial axes only), with `spacing` in mm
/// in array axis order.
pub fn surface_distances(
    pred: ArrayViewD<u16>,
    gt: ArrayViewD<u16>,
    class: u16,
    spacing: &[f64],
    connectivity: Connectivity,
) -> Result<SurfaceDistances> {
    surface_distances_by(pred, gt, spacing, connectivity, move |&v| v == class)
}

/// Surface distances between two binary masks of the same shape, with
/// `spacing` in mm in array axis order.
pub fn surface_distances_masks(
    pred: ArrayViewD<bool>,
    gt: ArrayViewD<bool>,
    spacing: &[f64],
    connectivity: Connectivity,
) -> Result<SurfaceDistances> {
    surface_distances_by(pred, gt, spacing, connectivity, |&v| v)
}

fn surface_distances_by<T: Sync>(
    pred: ArrayViewD<T>,
    gt: ArrayViewD<T>,
    spacing: &[f64],
    connectivity: Connectivity,
    is_fg: impl Fn(&T) -> bool + Sync,
) -> Result<SurfaceDistances> {
    check_pair(&pred, &gt)?;
    let sp = spacing3(spacing, pred.ndim())?;
    let p = to3(pred)?;
    let g = to3(gt)?.view;
    let s = scan_one(p.view, g, &is_fg);
    Ok(pair_distances(
        p.view,
        g,
        &is_fg,
        &is_fg,
        &s,
        p.active,
        sp,
        connectivity,
    ))
}
