//! FedBN (Li et al. 2021): normalisation layers stay at each site.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{parse_params, to_json};
use crate::aggregator::{check_patterns, weighted_average, Aggregator, NormKeys};
use crate::error::Result;
use crate::weights::{ClientUpdate, Weights};

/// The default normalisation name patterns: batch-norm running statistics
/// (as medseg-nets and PyTorch name them). Everything else is found from
/// the arrays' shapes ([`detect_norm_keys`](crate::detect_norm_keys)),
/// since medseg-nets names most norm layers by their `Sequential` index
/// (`…conv_conv.1.*`, `…conv_conv.5.*`).
pub const DEFAULT_NORM_PATTERNS: [&str; 3] =
    ["*.running_mean", "*.running_var", "*.num_batches_tracked"];

pub(crate) fn default_norm_patterns() -> Vec<String> {
    DEFAULT_NORM_PATTERNS
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// FedBN's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedBNParams {
    /// Glob patterns ([`key_matches`](crate::key_matches)) of arrays that
    /// stay local, on top of the detected layers. Default
    /// [`DEFAULT_NORM_PATTERNS`]; add e.g. `"*bn*"` or `"*norm*"` for
    /// networks that name their norms so.
    pub norm_patterns: Vec<String>,
    /// Find normalisation layers from the arrays' names and shapes
    /// ([`detect_norm_keys`](crate::detect_norm_keys)). Default `true`.
    pub detect_norm_layers: bool,
}

impl Default for FedBNParams {
    fn default() -> Self {
        Self {
            norm_patterns: default_norm_patterns(),
            detect_norm_layers: true,
        }
    }
}

/// FedBN: FedAvg for every array except those of normalisation layers
/// (weights, biases and running statistics), which stay at each site and
/// keep the global's values in the aggregate. Registered as `FedBN`.
///
/// Normalisation arrays are those matching a pattern of
/// [`FedBNParams::norm_patterns`] and, with
/// [`FedBNParams::detect_norm_layers`], those of the layers
/// [`detect_norm_keys`](crate::detect_norm_keys) finds in the weights given
/// to [`Aggregator::prepare`] and [`Aggregator::aggregate`] (global and
/// updates). Call `prepare` before asking [`Aggregator::is_local`].
#[derive(Debug, Clone)]
pub struct FedBN {
    params: FedBNParams,
    norms: NormKeys,
}

impl Default for FedBN {
    fn default() -> Self {
        let params = FedBNParams::default();
        Self {
            norms: NormKeys::new(params.norm_patterns.clone(), params.detect_norm_layers),
            params,
        }
    }
}

impl FedBN {
    /// FedBN with `params`.
    ///
    /// # Errors
    /// An empty pattern.
    pub fn new(params: FedBNParams) -> Result<Self> {
        check_patterns("FedBN", "norm_patterns", &params.norm_patterns)?;
        Ok(Self {
            norms: NormKeys::new(params.norm_patterns.clone(), params.detect_norm_layers),
            params,
        })
    }

    /// Builds from JSON parameters, e.g. `{"norm_patterns": ["*bn*"]}`.
    ///
    /// # Errors
    /// Unknown keys or bad values, named.
    pub fn from_json(params: &serde_json::Value) -> Result<Self> {
        Self::new(parse_params("FedBN", params)?)
    }

    /// The parameters.
    pub fn params(&self) -> &FedBNParams {
        &self.params
    }

    /// The normalisation arrays detected so far (pattern matches aside).
    pub fn detected_norm_keys(&self) -> &BTreeSet<String> {
        &self.norms.detected
    }
}

impl Aggregator for FedBN {
    fn name(&self) -> &str {
        "FedBN"
    }

    fn params_json(&self) -> serde_json::Value {
        to_json(&self.params)
    }

    fn prepare(&mut self, initial: &Weights) -> Result<()> {
        self.norms.observe(initial);
        Ok(())
    }

    fn aggregate(
        &mut self,
        round: usize,
        global: &Weights,
        updates: &[ClientUpdate],
    ) -> Result<Weights> {
        self.norms.observe(global);
        for u in updates {
            self.norms.observe(&u.weights);
        }
        let norms = &self.norms;
        weighted_average(round, global, updates, &|k| norms.contains(k))
    }

    fn is_local(&self, key: &str) -> bool {
        self.norms.contains(key)
    }
}
