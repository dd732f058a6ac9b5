//! Splits by subject: train / valid / test, and labelled / unlabelled within
//! the training part.

use medseg_core::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Fractions of subjects per part.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitConfig {
    /// Fraction of subjects for validation.
    pub valid: f64,
    /// Fraction of subjects for testing.
    pub test: f64,
    /// Fraction of the training subjects whose labels are kept.
    pub labelled: f64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            valid: 0.2,
            test: 0.2,
            labelled: 0.1,
        }
    }
}

/// The part a subject belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Part {
    /// Training.
    Train,
    /// Validation.
    Valid,
    /// Testing.
    Test,
}

impl Part {
    /// `"train"`, `"valid"` or `"test"`.
    pub fn name(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Valid => "valid",
            Part::Test => "test",
        }
    }
}

/// Where one subject went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectSplit {
    /// Subject name.
    pub subject: String,
    /// Its part.
    pub part: Part,
    /// Whether its labels are used (always false outside training).
    pub labelled: bool,
}

/// Splits the distinct `subjects` (duplicates allowed, e.g. one per slice):
/// they are sorted, shuffled with `seed`, then `round(n * test)` go to test,
/// `round(n * valid)` to validation and the rest to training, of which
/// `round(n_train * labelled)` (at least one when `labelled > 0`) are
/// labelled. Training keeps at least one subject when `n >= 1`. Returns one
/// entry per distinct subject, sorted by name.
///
/// # Errors
/// [`Error::InvalidValue`] when a fraction is outside `[0, 1]` or
/// `valid + test > 1`.
pub fn split_subjects(
    subjects: &[String],
    cfg: &SplitConfig,
    seed: u64,
) -> Result<Vec<SubjectSplit>> {
    for (k, v) in [
        ("valid", cfg.valid),
        ("test", cfg.test),
        ("labelled", cfg.labelled),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(Error::invalid(
                k,
                format!("fraction must be in [0, 1], got {v}"),
            ));
        }
    }
    if cfg.valid + cfg.test > 1.0 {
        return Err(Error::invalid(
            "valid + test",
            format!("fractions sum to {} > 1", cfg.valid + cfg.test),
        ));
    }
    let mut uniq: Vec<String> = subjects.to_vec();
    uniq.sort();
    uniq.dedup();
    let n = uniq.len();
    let mut order = uniq;
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut n_test = (n as f64 * cfg.test).round() as usize;
    let mut n_valid = (n as f64 * cfg.valid).round() as usize;
    while n > 0 && n_test + n_valid >= n {
        if n_valid >= n_test && n_valid > 0 {
            n_valid -= 1;
        } else if n_test > 0 {
            n_test -= 1;
        } else {
            break;
        }
    }
    let n_train = n - n_test - n_valid;
    let mut n_lab = (n_train as f64 * cfg.labelled).round() as usize;
    if cfg.labelled > 0.0 && n_train > 0 {
        n_lab = n_lab.max(1);
    }
    let mut out: Vec<SubjectSplit> = order
        .into_iter()
        .enumerate()
        .map(|(i, subject)| {
            let (part, labelled) = if i < n_test {
                (Part::Test, false)
            } else if i < n_test + n_valid {
                (Part::Valid, false)
            } else {
                (Part::Train, i - n_test - n_valid < n_lab)
            };
            SubjectSplit {
                subject,
                part,
                labelled,
            }
        })
        .collect();
    out.sort_by(|a, b| a.subject.cmp(&b.subject));
    Ok(out)
}
