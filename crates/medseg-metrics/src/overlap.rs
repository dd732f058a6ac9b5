//! Overlap metrics from the confusion counts of one class.

use crate::options::EmptyPolicy;
use crate::util::{check_pair, to3};
use crate::Result;
use ndarray::{ArrayView3, ArrayViewD, Axis, Zip};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Confusion counts of one class: voxels labelled with the class in the
/// prediction and/or the ground truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Class in both.
    pub tp: u64,
    /// Class in the prediction only.
    pub fp: u64,
    /// Class in the ground truth only.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// Class in neither.
    pub tn: u64,
}

fn ratio(num: f64, den: f64, zero: EmptyPolicy) -> f64 {
    if den == 0.0 {
        zero.value()
    } else {
        num / den
    }
}

impl Counts {
    /// Voxels of the class in the prediction.
    pub fn n_pred(&self) -> u64 {
        self.tp + self.fp
    }
    /// Voxels of the class in the ground truth.
    pub fn n_gt(&self) -> u64 {
        self.tp + self.fn_
    }
    /// Dice `2TP / (2TP + FP + FN)` (MedPy `dc`); `zero` when both masks are
    /// empty (MedPy 0.5.2 with NumPy 2 gives NaN, MONAI `ignore_empty` NaN).
    pub fn dice(&self, zero: EmptyPolicy) -> f64 {
        let tp = self.tp as f64;
        ratio(2.0 * tp, (2 * self.tp + self.fp + self.fn_) as f64, zero)
    }
    /// IoU / Jaccard `TP / (TP + FP + FN)` (MedPy `jc`, which gives 1.0 for
    /// two empty masks: use `EmptyPolicy::Cap(1.0)`).
    pub fn iou(&self, zero: EmptyPolicy) -> f64 {
        ratio(self.tp as f64, (self.tp + self.fp + self.fn_) as f64, zero)
    }
    /// Precision `TP / (TP + FP)` (MedPy `precision`).
    pub fn precision(&self, zero: EmptyPolicy) -> f64 {
        ratio(self.tp as f64, (self.tp + self.fp) as f64, zero)
    }
    /// Recall / sensitivity `TP / (TP + FN)` (MedPy `recall`).
    pub fn recall(&self, zero: EmptyPolicy) -> f64 {
        ratio(self.tp as f64, (self.tp + self.fn_) as f64, zero)
    }
    /// Specificity `TN / (TN + FP)` (MedPy `specificity`).
    pub fn specificity(&self, zero: EmptyPolicy) -> f64 {
        ratio(self.tn as f64, (self.tn + self.fp) as f64, zero)
    }
    /// Volume similarity `1 - |FN - FP| / (2TP + FP + FN)`.
    pub fn volume_similarity(&self, zero: EmptyPolicy) -> f64 {
        let den = (2 * self.tp + self.fp + self.fn_) as f64;
        if den == 0.0 {
            return zero.value();
        }
        1.0 - (self.fn_ as f64 - self.fp as f64).abs() / den
    }
    /// Signed relative volume error `(V_pred - V_gt) / V_gt` (MedPy `ravd`;
    /// PyMIC's `rve` is its absolute value); `zero` without ground truth.
    pub fn relative_volume_error(&self, zero: EmptyPolicy) -> f64 {
        let g = self.n_gt() as f64;
        ratio(self.n_pred() as f64 - g, g, zero)
    }
}

/// Per-slot accumulator of one scan: counts and the bounding box of the
/// union of prediction and ground truth.
#[derive(Debug, Clone)]
pub(crate) struct SlotScan {
    pub tp: u64,
    pub n_pred: u64,
    pub n_gt: u64,
    /// Inclusive bounding box `[min, max]` per axis of the 3D view.
    pub lo: [usize; 3],
    pub hi: [usize; 3],
}

impl SlotScan {
    fn new() -> Self {
        SlotScan {
            tp: 0,
            n_pred: 0,
            n_gt: 0,
            lo: [usize::MAX; 3],
            hi: [0; 3],
        }
    }
    pub fn is_empty(&self) -> bool {
        self.n_pred == 0 && self.n_gt == 0
    }
    fn merge(&mut self, o: &SlotScan) {
        self.tp += o.tp;
        self.n_pred += o.n_pred;
        self.n_gt += o.n_gt;
        for a in 0..3 {
            self.lo[a] = self.lo[a].min(o.lo[a]);
            self.hi[a] = self.hi[a].max(o.hi[a]);
        }
    }
    pub fn counts(&self, total: u64) -> Counts {
        let fp = self.n_pred - self.tp;
        let fn_ = self.n_gt - self.tp;
        Counts {
            tp: self.tp,
            fp,
            fn_,
            tn: total - self.tp - fp - fn_,
        }
    }
}

pub(crate) const NO_SLOT: usize = usize::MAX;

/// One parallel pass over both arrays: for each slot (class), the counts and
/// the bounding box of the union. `slot` maps a voxel value to a slot index
/// or `NO_SLOT`.
pub(crate) fn scan<T, F>(
    pred: ArrayView3<T>,
    gt: ArrayView3<T>,
    nslots: usize,
    slot: F,
) -> Vec<SlotScan>
where
    T: Sync,
    F: Fn(&T) -> usize + Sync,
{
    let empty = || vec![SlotScan::new(); nslots];
    Zip::indexed(pred.lanes(Axis(2)))
        .and(gt.lanes(Axis(2)))
        .into_par_iter()
        .fold(
            || (empty(), vec![(usize::MAX, 0usize); nslots]),
            |(mut acc, mut row), ((d, h), lp, lg)| {
                for r in row.iter_mut() {
                    *r = (usize::MAX, 0);
                }
                let mut any = false;
                let mut visit = |w: usize, p: &T, g: &T| {
                    let sp = slot(p);
                    let sg = slot(g);
                    if sp != NO_SLOT {
                        acc[sp].n_pred += 1;
                        let r = &mut row[sp];
                        r.0 = r.0.min(w);
                        r.1 = r.1.max(w);
                        any = true;
                        if sp == sg {
                            acc[sp].tp += 1;
                        }
                    }
                    if sg != NO_SLOT {
                        acc[sg].n_gt += 1;
                        let r = &mut row[sg];
                        r.0 = r.0.min(w);
                        r.1 = r.1.max(w);
                        any = true;
                    }
                };
                match (lp.as_slice(), lg.as_slice()) {
                    (Some(a), Some(b)) => {
                        for (w, (p, g)) in a.iter().zip(b).enumerate() {
                            visit(w, p, g);
                        }
                    }
                    _ => {
                        for (w, (p, g)) in lp.iter().zip(lg.iter()).enumerate() {
                            visit(w, p, g);
                        }
                    }
                }
                if any {
                    for (s, r) in row.iter().enumerate() {
                        if r.0 != usize::MAX {
                            let a = &mut acc[s];
                            a.lo[0] = a.lo[0].min(d);
                            a.hi[0] = a.hi[0].max(d);
                            a.lo[1] = a.lo[1].min(h);
                            a.hi[1] = a.hi[1].max(h);
                            a.lo[2] = a.lo[2].min(r.0);
                            a.hi[2] = a.hi[2].max(r.1);
                        }
                    }
                }
                (acc, row)
            },
        )
        .map(|(acc, _)| acc)
        .reduce(empty, |mut a, b| {
            for (x, y) in a.iter_mut().zip(&b) {
                x.merge(y);
            }
            a
        })
}

/// [`scan`] for a single foreground predicate, with branch-free counting
/// on contiguous rows.
pub(crate) fn scan_one<T, F>(pred: ArrayView3<T>, gt: ArrayView3<T>, is_fg: F) -> SlotScan
where
    T: Sync,
    F: Fn(&T) -> bool + Sync,
{
    Zip::indexed(pred.lanes(Axis(2)))
        .and(gt.lanes(Axis(2)))
        .into_par_iter()
        .fold(SlotScan::new, |mut acc, ((d, h), lp, lg)| {
            let (np, ng, tp) = match (lp.as_slice(), lg.as_slice()) {
                (Some(a), Some(b)) => {
                    a.iter()
                        .zip(b)
                        .fold((0u64, 0u64, 0u64), |(np, ng, tp), (p, g)| {
                            let (x, y) = (is_fg(p) as u64, is_fg(g) as u64);
                            (np + x, ng + y, tp + (x & y))
                        })
                }
                _ => lp
                    .iter()
                    .zip(lg.iter())
                    .fold((0, 0, 0), |(np, ng, tp), (p, g)| {
                        let (x, y) = (is_fg(p) as u64, is_fg(g) as u64);
                        (np + x, ng + y, tp + (x & y))
                    }),
            };
            if np + ng > 0 {
                let hit = |(p, g): (&T, &T)| is_fg(p) || is_fg(g);
                let first = lp.iter().zip(lg.iter()).position(hit).unwrap_or(0);
                let last = lp.len() - 1 - lp.iter().zip(lg.iter()).rev().position(hit).unwrap_or(0);
                acc.n_pred += np;
                acc.n_gt += ng;
                acc.tp += tp;
                acc.lo = [acc.lo[0].min(d), acc.lo[1].min(h), acc.lo[2].min(first)];
                acc.hi = [acc.hi[0].max(d), acc.hi[1].max(h), acc.hi[2].max(last)];
            }
            acc
        })
        .reduce(SlotScan::new, |mut a, b| {
            a.merge(&b);
            a
        })
}

/// Confusion counts of `class` between a predicted and a ground-truth label
/// map of the same shape (`[H, W]` or `[D, H, W]`, spatial axes only).
pub fn confusion(pred: ArrayViewD<u16>, gt: ArrayViewD<u16>, class: u16) -> Result<Counts> {
    check_pair(&pred, &gt)?;
    let total = pred.len() as u64;
    let p = to3(pred)?.view;
    let g = to3(gt)?.view;
    Ok(scan_one(p, g, |&v| v == class).counts(total))
}

/// Dice of `class` between two label maps of the same shape; NaN when the
/// class is absent from both (MONAI's convention; MedPy 0.5.2 under NumPy 2
/// also gives NaN). For another convention use [`Counts::dice`].
pub fn dice(pred: ArrayViewD<u16>, gt: ArrayViewD<u16>, class: u16) -> Result<f64> {
    Ok(confusion(pred, gt, class)?.dice(EmptyPolicy::Nan))
}
