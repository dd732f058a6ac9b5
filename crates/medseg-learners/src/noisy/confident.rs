//! Confident learning (Northcutt, Jiang and Chuang, JAIR 2021), applied to
//! pixels as in Zhang et al., MICCAI 2020 (PyMIC's CL-SLSR): from each
//! pixel's given (noisy) label and out-of-sample class probabilities, count
//! the confident joint of given and true labels, and flag as label errors
//! the pixels that the counts say are most likely mislabelled.
//!
//! The steps and their integer arithmetic follow cleanlab 1.0.1 (the version
//! PyMIC uses), `get_noise_indices` with `prune_method` `prune_by_class`,
//! `prune_by_noise_rate` or `both`; `tests/noisy_confident.rs` checks the
//! joint and the flags against values that cleanlab produced. One
//! difference: where cleanlab's rounding meets a tie (two equal counts in a
//! row), numpy's unstable sort picks the winner, which varies by machine;
//! here the earlier class wins when rounding up and the later when rounding
//! down, as with a stable sort (the fixtures pin numpy to a stable sort).
//!
//! 1. Per class `k`, the threshold `t_k` is the mean probability of `k`
//!    over the pixels labelled `k`.
//! 2. A pixel is confidently of class `j` when `p_j >= t_j` (with
//!    several such classes, the arg-max of `p`); the counts `C[given][true]`
//!    over those pixels, calibrated so that each row sums to the number of
//!    pixels with that given label, form the confident joint.
//! 3. Prune by class: in each class `k`, the `n_k - C[k][k]` pixels labelled
//!    `k` with the lowest `p_k` are flagged. Prune by noise rate: for each
//!    off-diagonal count `C[k][j]`, the pixels labelled `k` with the largest
//!    margin `p_j - p_k` are flagged. `both` keeps the pixels flagged by both.
//! 4. A pixel whose arg-max is its given label is never flagged.

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

/// Classes with at most this many pixels are never pruned (cleanlab's
/// `MIN_NUM_PER_CLASS`), and every class keeps at least this many.
pub const MIN_PER_CLASS: usize = 5;

/// Which pixels are flagged (cleanlab's `prune_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Prune {
    /// In each given class, the pixels with the lowest self-confidence.
    PruneByClass,
    /// For each pair of given and true class, the pixels with the largest
    /// margin towards the true class.
    PruneByNoiseRate,
    /// Flagged by both rules (PyMIC's choice).
    #[default]
    Both,
}

/// Why confident learning could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfidentError {
    /// Labels and probabilities disagree in length, or there is no pixel.
    #[error("confident learning: {0}")]
    Shape(String),
    /// A label is out of range or a class has no pixel.
    #[error("confident learning: {0}")]
    Classes(String),
}

/// Checks the inputs and returns the pixel count per given class.
fn class_counts(labels: &[u16], probs: ArrayView2<f32>) -> Result<Vec<usize>, ConfidentError> {
    let (n, k) = probs.dim();
    if n != labels.len() || n == 0 || k < 2 {
        return Err(ConfidentError::Shape(format!(
            "{} labels against probabilities of shape [{n}, {k}] (expected one row of at least \
             two class probabilities per pixel)",
            labels.len()
        )));
    }
    let mut counts = vec![0usize; k];
    for &l in labels {
        let l = l as usize;
        if l >= k {
            return Err(ConfidentError::Classes(format!(
                "label {l} is out of range for {k} classes"
            )));
        }
        counts[l] += 1;
    }
    if let Some(c) = counts.iter().position(|&c| c == 0) {
        return Err(ConfidentError::Classes(format!(
            "class {c} has no pixel in the given labels; every class must occur"
        )));
    }
    Ok(counts)
}

/// Index of the first largest entry.
fn argmax(row: ndarray::ArrayView1<f32>) -> usize {
    let mut best = 0;
    for (j, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = j;
        }
    }
    best
}

/// Rounds each value (half to even) and then moves the largest fractional
/// parts up (or the smallest down) until the integers keep the rounded sum
/// (cleanlab's `round_preserving_sum`).
fn round_preserving_sum(values: &[f64]) -> Vec<i64> {
    let mut ints: Vec<f64> = values.iter().map(|v| v.round_ties_even()).collect();
    let orig = values.iter().sum::<f64>().round_ties_even();
    let mut int_sum = ints.iter().sum::<f64>().round_ties_even();
    while (int_sum - orig).abs() > 1e-6 {
        let diff = (orig - int_sum).round_ties_even();
        let up = diff >= 0.0;
        let changes = (diff.abs() as usize).min(values.len());
        let mut order: Vec<usize> = (0..values.len()).collect();
        let frac: Vec<f64> = values.iter().zip(&ints).map(|(v, i)| v - i).collect();
        order.sort_by(|&a, &b| frac[a].total_cmp(&frac[b]));
        if up {
            order.reverse();
        }
        for &i in order.iter().take(changes) {
            ints[i] += if up { 1.0 } else { -1.0 };
        }
        int_sum = ints.iter().sum::<f64>().round_ties_even();
    }
    ints.into_iter().map(|v| v as i64).collect()
}

/// Row-wise [`round_preserving_sum`].
fn round_rows(m: &Array2<f64>) -> Array2<i64> {
    let (r, c) = m.dim();
    let mut out = Array2::zeros((r, c));
    for (i, row) in m.rows().into_iter().enumerate() {
        let v = round_preserving_sum(&row.to_vec());
        for (j, x) in v.into_iter().enumerate() {
            out[[i, j]] = x;
        }
    }
    out
}

/// The calibrated confident joint `C[given][true]` (integer counts; row `k`
/// sums to the number of pixels labelled `k`).
///
/// # Errors
/// [`ConfidentError`] when the shapes disagree, a label is out of range or
/// a class has no pixel.
pub fn confident_joint(
    labels: &[u16],
    probs: ArrayView2<f32>,
) -> Result<Array2<i64>, ConfidentError> {
    let counts = class_counts(labels, probs)?;
    let k = counts.len();
    let mut sums = vec![0f64; k];
    for (i, &l) in labels.iter().enumerate() {
        sums[l as usize] += probs[[i, l as usize]] as f64;
    }
    let thresholds: Vec<f64> = sums
        .iter()
        .zip(&counts)
        .map(|(s, &c)| s / c as f64 - 1e-6)
        .collect();
    let mut joint = Array2::<f64>::zeros((k, k));
    for (i, &l) in labels.iter().enumerate() {
        let row = probs.row(i);
        let mut confident = row
            .iter()
            .enumerate()
            .filter(|&(j, &p)| p as f64 >= thresholds[j])
            .map(|(j, _)| j);
        let Some(first) = confident.next() else {
            continue;
        };
        let guess = if confident.next().is_some() {
            argmax(row)
        } else {
            first
        };
        joint[[l as usize, guess]] += 1.0;
    }
    // calibrate: each row to its class count, then the whole to the total
    for (r, &c) in counts.iter().enumerate() {
        let s: f64 = joint.row(r).sum();
        if s > 0.0 {
            joint.row_mut(r).mapv_inplace(|v| v / s * c as f64);
        } else {
            joint[[r, r]] = c as f64;
        }
    }
    let total: f64 = joint.sum();
    joint.mapv_inplace(|v| v / total * labels.len() as f64);
    Ok(round_rows(&joint))
}

/// cleanlab's `keep_at_least_n_per_class` (with `frac_noise` 1) on the
/// transposed joint `M[true][given]`: every diagonal entry becomes at least
/// `n`, taking what it gains evenly from the column's nonzero noise counts.
fn prune_counts(joint: &Array2<i64>, n: usize) -> Array2<i64> {
    let m = joint.t().mapv(|v| v as f64);
    let k = m.nrows();
    let mut out = m.clone();
    for col in 0..k {
        let diag = m[[col, col]];
        let new_diag = diag.max(n as f64);
        let nonzero = m.column(col).iter().filter(|&&v| v != 0.0).count() as f64;
        let share = (new_diag - diag) / (nonzero - 1.0).max(1.0);
        for row in 0..k {
            out[[row, col]] = if row == col {
                new_diag
            } else {
                (m[[row, col]] - share).max(0.0)
            };
        }
    }
    // reduce_prune_counts truncates to integers
    out.mapv(|v| v.trunc() as i64)
}

/// The pixels flagged as label errors (`true` = suspected wrong label).
///
/// `labels` holds each pixel's given class, `probs` one row of class
/// probabilities per pixel, predicted by a model that did not train on that
/// pixel (out of sample).
///
/// # Errors
/// [`ConfidentError`] as for [`confident_joint`].
pub fn find_label_issues(
    labels: &[u16],
    probs: ArrayView2<f32>,
    prune: Prune,
) -> Result<Vec<bool>, ConfidentError> {
    let counts = class_counts(labels, probs)?;
    let k = counts.len();
    let joint = confident_joint(labels, probs)?;
    let pcm = prune_counts(&joint, MIN_PER_CLASS);
    let members: Vec<Vec<usize>> = (0..k)
        .map(|c| {
            labels
                .iter()
                .enumerate()
                .filter(|&(_, &l)| l as usize == c)
                .map(|(i, _)| i)
                .collect()
        })
        .collect();
    let by_class = || {
        let mut flags = vec![false; labels.len()];
        for c in 0..k {
            if counts[c] <= MIN_PER_CLASS {
                continue;
            }
            let errors = (counts[c] as i64 - pcm[[c, c]]).clamp(0, counts[c] as i64 - 1) as usize;
            let mut p: Vec<f32> = members[c].iter().map(|&i| probs[[i, c]]).collect();
            let (_, &mut rank, _) = p.select_nth_unstable_by(errors, f32::total_cmp);
            for &i in &members[c] {
                if probs[[i, c]] < rank {
                    flags[i] = true;
                }
            }
        }
        flags
    };
    let by_rate = || {
        let mut flags = vec![false; labels.len()];
        for c in 0..k {
            if counts[c] <= MIN_PER_CLASS {
                continue;
            }
            for j in (0..k).filter(|&j| j != c) {
                let prune = pcm[[j, c]];
                if prune <= 0 {
                    continue;
                }
                let prune = (prune as usize).min(members[c].len());
                let margin = |i: usize| probs[[i, j]] as f64 - probs[[i, c]] as f64;
                let mut margins: Vec<f64> = members[c].iter().map(|&i| margin(i)).collect();
                // the prune-th largest margin
                let (_, &mut cut, _) =
                    margins.select_nth_unstable_by(prune - 1, |a, b| b.total_cmp(a));
                for &i in &members[c] {
                    if margin(i) >= cut {
                        flags[i] = true;
                    }
                }
            }
        }
        flags
    };
    let mut flags = match prune {
        Prune::PruneByClass => by_class(),
        Prune::PruneByNoiseRate => by_rate(),
        Prune::Both => {
            let a = by_class();
            let b = by_rate();
            a.into_iter().zip(b).map(|(x, y)| x && y).collect()
        }
    };
    for (i, f) in flags.iter_mut().enumerate() {
        if argmax(probs.row(i)) == labels[i] as usize {
            *f = false;
        }
    }
    Ok(flags)
}

/// The labels with every flagged pixel set to its most probable class
/// (confident learning's label correction).
pub fn correct_labels(labels: &[u16], probs: ArrayView2<f32>, flags: &[bool]) -> Vec<u16> {
    labels
        .iter()
        .zip(flags)
        .enumerate()
        .map(|(i, (&l, &f))| if f { argmax(probs.row(i)) as u16 } else { l })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn rounding_keeps_the_sum() {
        assert_eq!(round_preserving_sum(&[0.4, 0.4, 0.2]), vec![0, 1, 0]);
        assert_eq!(round_preserving_sum(&[2.5, 1.5, 1.0]), vec![2, 2, 1]);
        assert_eq!(round_preserving_sum(&[0.6, 0.6, 0.8]), vec![0, 1, 1]);
    }

    #[test]
    fn missing_class_is_an_error() {
        let p = array![[0.9f32, 0.1], [0.8, 0.2]];
        let e = find_label_issues(&[0, 0], p.view(), Prune::Both).unwrap_err();
        assert!(e.to_string().contains("class 1 has no pixel"), "{e}");
        let e = find_label_issues(&[0, 2], p.view(), Prune::Both).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
    }
}
