//! Partial labels: keep only a subset of the classes of each image (chosen
//! at random per image, or fixed per site); the other classes become
//! background or the ignore value.

use medseg_core::{Error, LabelMap, Result};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// What the dropped classes become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dropped {
    /// Dropped classes become background (0), as in partially labelled
    /// multi-organ data sets where each site labels some organs.
    Background,
    /// Dropped classes become this "not annotated" value.
    Ignore(u16),
}

/// Keeps the classes in `keep` (and the background); every other class
/// except the value `ignore` (left as is) becomes what `dropped` says.
pub fn keep_classes(
    label: &LabelMap,
    keep: &[u16],
    dropped: Dropped,
    ignore: Option<u16>,
) -> LabelMap {
    let to = match dropped {
        Dropped::Background => 0,
        Dropped::Ignore(v) => v,
    };
    let mut out = label.clone();
    out.data.mapv_inplace(|v| {
        if v == 0 || Some(v) == ignore || keep.contains(&v) {
            v
        } else {
            to
        }
    });
    out
}

/// Draws between `min` and `max` classes (inclusive, clamped to the number
/// available) from `classes`, returned sorted. Deterministic for a given
/// `seed`.
///
/// # Errors
/// [`Error::InvalidValue`] when `min > max` or `max == 0`.
pub fn random_subset(classes: &[u16], min: usize, max: usize, seed: u64) -> Result<Vec<u16>> {
    let rng = &mut ChaCha8Rng::seed_from_u64(seed);
    if min > max || max == 0 {
        return Err(Error::invalid(
            "classes per image",
            format!("need 1 <= max and min <= max, got min {min}, max {max}"),
        ));
    }
    let hi = max.min(classes.len());
    let lo = min.min(hi);
    let n = if hi > lo {
        rng.random_range(lo..=hi)
    } else {
        hi
    };
    let mut pick: Vec<u16> = classes.choose_multiple(rng, n).copied().collect();
    pick.sort_unstable();
    Ok(pick)
}

/// Assigns each distinct subject to one of `sites` sites: subjects are
/// sorted, shuffled with `seed` and dealt round-robin, so site sizes differ
/// by at most one. Returns `(subject, site)` sorted by subject.
///
/// # Errors
/// [`Error::InvalidValue`] when `sites == 0`.
pub fn assign_sites(subjects: &[String], sites: usize, seed: u64) -> Result<Vec<(String, usize)>> {
    if sites == 0 {
        return Err(Error::invalid("sites", "need at least one site"));
    }
    let mut uniq: Vec<String> = subjects.to_vec();
    uniq.sort();
    uniq.dedup();
    let mut order = uniq.clone();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut out: Vec<(String, usize)> = order
        .into_iter()
        .enumerate()
        .map(|(i, s)| (s, i % sites))
        .collect();
    out.sort();
    Ok(out)
}
