//! The [`Aggregator`] trait and the pieces every strategy shares: update
//! checks, the weighted mean, metric averaging and key patterns.

use std::collections::{BTreeMap, BTreeSet};

use ndarray::{ArrayD, Zip};

use crate::error::{FedError, Result};
use crate::weights::{ClientUpdate, Weights};

/// A server-side aggregation strategy: turns the global weights and the
/// sites' updates of one round into the next global weights.
///
/// The caller's round, in short:
/// 1. once: [`Aggregator::prepare`] with the initial global weights;
/// 2. each site loads the global weights except its local arrays
///    (`global.load_into_except(&varmap, |k| agg.is_local(k))`), trains
///    (adding FedProx's proximal term when [`Aggregator::proximal_mu`] is
///    set) and sends a [`ClientUpdate`], local arrays left out or not;
/// 3. [`Aggregator::aggregate`] gives the new global weights.
///
/// Sites that dropped out of a round simply send no update: only the
/// updates given take part.
pub trait Aggregator: Send {
    /// The name the strategy is registered under (e.g. `FedAvg`).
    fn name(&self) -> &str;

    /// The strategy's parameters with defaults filled in, as JSON (for
    /// logs and to rebuild it with the registry).
    fn params_json(&self) -> serde_json::Value;

    /// Looks at the initial global weights before the first round. FedBN
    /// (and SegViz with `local_norms`) find the normalisation layers here,
    /// so call this before asking [`Aggregator::is_local`];
    /// [`Aggregator::aggregate`] does it too. The default does nothing.
    ///
    /// # Errors
    /// Strategy-specific.
    fn prepare(&mut self, initial: &Weights) -> Result<()> {
        let _ = initial;
        Ok(())
    }

    /// The next global weights from the current ones (`global`) and the
    /// updates of the sites that took part in round `round` (numbered as
    /// the caller counts, Flower starts at 1). Arrays for which
    /// [`Aggregator::is_local`] holds keep `global`'s values.
    ///
    /// # Errors
    /// No update; a site with zero examples, a missing, extra, mis-shaped
    /// or non-finite array (naming the site and the array); a repeated
    /// site.
    fn aggregate(
        &mut self,
        round: usize,
        global: &Weights,
        updates: &[ClientUpdate],
    ) -> Result<Weights>;

    /// Whether the array `key` stays at each site: it is neither averaged
    /// nor replaced by the global one (FedBN's normalisation layers,
    /// SegViz's heads). The default is `false` for every key.
    fn is_local(&self, key: &str) -> bool {
        let _ = key;
        false
    }

    /// FedProx's `mu` when the sites should add the proximal term
    /// ([`ProximalTerm`](crate::ProximalTerm)) to their loss; `None` (the
    /// default) otherwise.
    fn proximal_mu(&self) -> Option<f64> {
        None
    }

    /// Server-side state to checkpoint between rounds (FedAdam's and
    /// FedYogi's moments); empty for stateless strategies (the default).
    fn state(&self) -> Weights {
        Weights::new()
    }

    /// Restores what [`Aggregator::state`] returned.
    ///
    /// # Errors
    /// A state that does not belong to this strategy, naming the array.
    /// The default accepts only an empty state.
    fn load_state(&mut self, state: &Weights) -> Result<()> {
        match state.keys().next() {
            None => Ok(()),
            Some(k) => Err(FedError::Array {
                key: k.to_string(),
                msg: format!("{} keeps no server state", self.name()),
            }),
        }
    }
}

/// Checks one round's updates against the global weights: at least one
/// update, distinct sites, positive `num_examples`, and for every update
/// every shared array of `global` (those for which `is_local` is false)
/// present with the same shape and finite values, and no shared array that
/// `global` lacks. Local arrays are not looked at (they may be absent or
/// differ in shape, e.g. heads with another number of classes). Problems
/// are reported for the first site in order, keys in sorted order.
///
/// # Errors
/// The first problem found, naming the site and the array.
pub fn validate_updates(
    round: usize,
    global: &Weights,
    updates: &[ClientUpdate],
    is_local: &dyn Fn(&str) -> bool,
) -> Result<()> {
    if updates.is_empty() {
        return Err(FedError::NoUpdates { round });
    }
    let mut seen = BTreeSet::new();
    for u in updates {
        if !seen.insert(u.site.as_str()) {
            return Err(FedError::DuplicateSite {
                site: u.site.clone(),
                round,
            });
        }
        if u.num_examples == 0 {
            return Err(FedError::NoExamples {
                site: u.site.clone(),
            });
        }
        for (key, g) in global.iter() {
            if is_local(key) {
                continue;
            }
            let w = u.weights.get(key).ok_or_else(|| FedError::MissingKey {
                site: u.site.clone(),
                key: key.to_string(),
            })?;
            if w.shape() != g.shape() {
                return Err(FedError::ShapeMismatch {
                    site: u.site.clone(),
                    key: key.to_string(),
                    expected: g.shape().to_vec(),
                    found: w.shape().to_vec(),
                });
            }
            if w.iter().any(|x| !x.is_finite()) {
                return Err(FedError::NonFinite {
                    site: u.site.clone(),
                    key: key.to_string(),
                });
            }
        }
        if let Some(key) = u
            .weights
            .keys()
            .find(|k| !is_local(k) && !global.contains_key(k))
        {
            return Err(FedError::UnexpectedKey {
                site: u.site.clone(),
                key: key.to_string(),
            });
        }
    }
    Ok(())
}

/// The example-weighted mean of every shared array, in `f64`:
/// `Σ n_i w_i / Σ n_i` over the updates in order. Updates must have been
/// checked with [`validate_updates`].
pub(crate) fn weighted_mean_f64(
    global: &Weights,
    updates: &[ClientUpdate],
    is_local: &dyn Fn(&str) -> bool,
) -> BTreeMap<String, ArrayD<f64>> {
    let total: f64 = updates.iter().map(|u| u.num_examples as f64).sum();
    let mut out = BTreeMap::new();
    for (key, g) in global.iter() {
        if is_local(key) {
            continue;
        }
        let mut acc = ArrayD::<f64>::zeros(g.raw_dim());
        for u in updates {
            let n = u.num_examples as f64;
            if let Some(w) = u.weights.get(key) {
                Zip::from(&mut acc)
                    .and(w)
                    .for_each(|a, &x| *a += n * f64::from(x));
            }
        }
        acc.mapv_inplace(|a| a / total);
        out.insert(key.to_string(), acc);
    }
    out
}

/// FedAvg's step, for strategies built on it: checks the updates
/// ([`validate_updates`]) and returns `global` with every shared array
/// replaced by the example-weighted mean `Σ n_i w_i / Σ n_i`, computed in
/// `f64` and rounded to `f32` once. Local arrays keep `global`'s values.
///
/// # Errors
/// As [`validate_updates`].
pub fn weighted_average(
    round: usize,
    global: &Weights,
    updates: &[ClientUpdate],
    is_local: &dyn Fn(&str) -> bool,
) -> Result<Weights> {
    validate_updates(round, global, updates, is_local)?;
    let means = weighted_mean_f64(global, updates, is_local);
    let mut out = global.clone();
    for (key, m) in means {
        out.insert(key, m.mapv(|v| v as f32));
    }
    Ok(out)
}

/// The example-weighted mean of each metric over the updates that report
/// it (`Σ n_i m_i / Σ n_i`, sums over those updates only).
pub fn weighted_metrics(updates: &[ClientUpdate]) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for u in updates {
        let n = u.num_examples as f64;
        for (k, v) in &u.metrics {
            let e = sums.entry(k.as_str()).or_insert((0.0, 0.0));
            e.0 += n * v;
            e.1 += n;
        }
    }
    sums.into_iter()
        .filter(|(_, (_, n))| *n > 0.0)
        .map(|(k, (s, n))| (k.to_string(), s / n))
        .collect()
}

/// Whether `key` matches the glob `pattern` as a whole: `*` stands for any
/// run of characters (dots included), `?` for one character, anything
/// else for itself. E.g. `*out_conv*` matches `decoder.out_conv.weight`,
/// `final.*` matches `final.bias` but not `finalconv3.bias`.
pub fn key_matches(pattern: &str, key: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let k: Vec<char> = key.chars().collect();
    let (mut pi, mut ki) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ki < k.len() {
        if pi < p.len() && p[pi] != '*' && (p[pi] == '?' || p[pi] == k[ki]) {
            pi += 1;
            ki += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ki));
            pi += 1;
        } else if let Some((sp, sk)) = star {
            pi = sp + 1;
            ki = sk + 1;
            star = Some((sp, sk + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether `key` matches any of `patterns` ([`key_matches`]).
pub(crate) fn matches_any(patterns: &[String], key: &str) -> bool {
    patterns.iter().any(|p| key_matches(p, key))
}

/// The arrays of normalisation layers, found from names and shapes: a
/// layer (the name up to the last `.`) is a normalisation layer when it has
/// a `running_mean` or `running_var` array (batch norm), or a rank-1
/// `weight` and a rank-1 `bias` of the same length (an affine norm: group,
/// layer or affine instance norm; a convolution's weight has rank 3 or
/// more, a PReLU's `weight` has no `bias`). All arrays of such a layer are
/// returned.
///
/// Names alone cannot tell: medseg-nets names most norms after their
/// position in a PyTorch `Sequential` (`…conv_conv.1.weight` is UNet's
/// first batch norm, `…conv_conv.0.weight` its convolution).
pub fn detect_norm_keys(weights: &Weights) -> BTreeSet<String> {
    // layer name -> (full key, leaf name, array)
    type Leaves<'a> = Vec<(&'a str, &'a str, &'a ArrayD<f32>)>;
    let mut layers: BTreeMap<&str, Leaves<'_>> = BTreeMap::new();
    for (key, a) in weights.iter() {
        let (layer, leaf) = key.rsplit_once('.').unwrap_or(("", key));
        layers.entry(layer).or_default().push((key, leaf, a));
    }
    let mut out = BTreeSet::new();
    for arrays in layers.values() {
        let leaf = |name: &str| {
            arrays
                .iter()
                .find(|(_, l, _)| *l == name)
                .map(|(_, _, a)| *a)
        };
        let batch = leaf("running_mean").is_some() || leaf("running_var").is_some();
        let affine = match (leaf("weight"), leaf("bias")) {
            (Some(w), Some(b)) => w.ndim() == 1 && b.ndim() == 1 && w.len() == b.len(),
            _ => false,
        };
        if batch || affine {
            out.extend(arrays.iter().map(|(k, _, _)| k.to_string()));
        }
    }
    out
}

/// Which arrays count as normalisation arrays for FedBN-style strategies:
/// name patterns, plus layers found by [`detect_norm_keys`] in the weights
/// seen so far.
#[derive(Debug, Clone)]
pub(crate) struct NormKeys {
    pub patterns: Vec<String>,
    pub detect: bool,
    pub detected: BTreeSet<String>,
}

impl NormKeys {
    pub fn new(patterns: Vec<String>, detect: bool) -> Self {
        Self {
            patterns,
            detect,
            detected: BTreeSet::new(),
        }
    }

    /// Learns the normalisation layers of `w` (when detection is on).
    pub fn observe(&mut self, w: &Weights) {
        if self.detect {
            self.detected.extend(detect_norm_keys(w));
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.detected.contains(key) || matches_any(&self.patterns, key)
    }
}

/// Checks a list of key patterns from parameters.
pub(crate) fn check_patterns(name: &str, field: &str, patterns: &[String]) -> Result<()> {
    if let Some(i) = patterns.iter().position(|p| p.trim().is_empty()) {
        return Err(FedError::Params {
            name: name.to_string(),
            msg: format!("`{field}[{i}]` is an empty pattern"),
        });
    }
    Ok(())
}
