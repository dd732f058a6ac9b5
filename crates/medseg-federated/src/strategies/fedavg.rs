//! FedAvg (McMahan et al. 2017) and FedProx (Li et al. 2020), whose server
//! side is FedAvg.

use serde::{Deserialize, Serialize};

use super::{ensure, parse_params, to_json};
use crate::aggregator::{weighted_average, Aggregator};
use crate::error::Result;
use crate::weights::{ClientUpdate, Weights};

/// FedAvg takes no parameter; any key is an error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FedAvgParams {}

/// Federated averaging: every array becomes the example-weighted mean of
/// the sites' arrays, `Σ n_i w_i / Σ n_i` (computed in `f64`, rounded to
/// `f32` once). Registered as `FedAvg`.
#[derive(Debug, Clone, Default)]
pub struct FedAvg;

impl FedAvg {
    /// FedAvg.
    pub fn new() -> Self {
        Self
    }

    /// Builds from JSON parameters (`{}` or `null`).
    ///
    /// # Errors
    /// Any key, named.
    pub fn from_json(params: &serde_json::Value) -> Result<Self> {
        let _: FedAvgParams = parse_params("FedAvg", params)?;
        Ok(Self)
    }
}

impl Aggregator for FedAvg {
    fn name(&self) -> &str {
        "FedAvg"
    }

    fn params_json(&self) -> serde_json::Value {
        to_json(&FedAvgParams {})
    }

    fn aggregate(
        &mut self,
        round: usize,
        global: &Weights,
        updates: &[ClientUpdate],
    ) -> Result<Weights> {
        weighted_average(round, global, updates, &|_| false)
    }
}

/// FedProx's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedProxParams {
    /// Weight of the proximal term `mu/2 Σ ||w - w_global||²` the sites
    /// add to their loss (Flower's `proximal_mu`); `0` is FedAvg. Default
    /// `0.01`.
    pub mu: f64,
}

impl Default for FedProxParams {
    fn default() -> Self {
        Self { mu: 0.01 }
    }
}

/// FedProx: the server averages as [`FedAvg`]; each site adds the
/// proximal term `mu/2 Σ ||w - w_global||²` to its local loss
/// ([`ProximalTerm`](crate::ProximalTerm), told by
/// [`Aggregator::proximal_mu`]). Registered as `FedProx`.
#[derive(Debug, Clone, Default)]
pub struct FedProx {
    params: FedProxParams,
}

impl FedProx {
    /// FedProx with `params`.
    ///
    /// # Errors
    /// A negative or non-finite `mu`.
    pub fn new(params: FedProxParams) -> Result<Self> {
        let mu = params.mu;
        ensure("FedProx", mu.is_finite() && mu >= 0.0, || {
            format!("`mu` must be a finite number >= 0, got {mu}")
        })?;
        Ok(Self { params })
    }

    /// Builds from JSON parameters, e.g. `{"mu": 0.01}`.
    ///
    /// # Errors
    /// Unknown keys or bad values, named.
    pub fn from_json(params: &serde_json::Value) -> Result<Self> {
        Self::new(parse_params("FedProx", params)?)
    }

    /// The proximal weight `mu`.
    pub fn mu(&self) -> f64 {
        self.params.mu
    }

    /// The parameters.
    pub fn params(&self) -> &FedProxParams {
        &self.params
    }
}

impl Aggregator for FedProx {
    fn name(&self) -> &str {
        "FedProx"
    }

    fn params_json(&self) -> serde_json::Value {
        to_json(&self.params)
    }

    fn aggregate(
        &mut self,
        round: usize,
        global: &Weights,
        updates: &[ClientUpdate],
    ) -> Result<Weights> {
        weighted_average(round, global, updates, &|_| false)
    }

    fn proximal_mu(&self) -> Option<f64> {
        Some(self.params.mu)
    }
}
