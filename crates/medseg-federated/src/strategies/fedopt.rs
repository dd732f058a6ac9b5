//! FedAdam and FedYogi (Reddi et al. 2021, "Adaptive Federated
//! Optimization"): the weighted mean of the sites' weights minus the
//! global weights is a pseudo-gradient for a server-side adaptive
//! optimiser.

use std::collections::BTreeMap;

use ndarray::{ArrayD, Zip};
use serde::{Deserialize, Serialize};

use super::{ensure, parse_params, to_json};
use crate::aggregator::{validate_updates, weighted_mean_f64, Aggregator};
use crate::error::{FedError, Result};
use crate::weights::{ClientUpdate, Weights};

/// Which second-moment rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Adam,
    Yogi,
}

/// numpy's `sign`: `0` at `0` (Rust's `signum` gives `1`).
fn np_sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// The server optimiser's state: first and second moments per array (as
/// `f32`, like Flower's numpy arrays), initialised to zeros on first use as
/// Flower does, and the number of steps taken.
#[derive(Debug, Clone, Default)]
struct Moments {
    m: BTreeMap<String, ArrayD<f32>>,
    v: BTreeMap<String, ArrayD<f32>>,
    steps: usize,
}

/// The shared numeric core of FedAdam and FedYogi.
#[derive(Debug, Clone, Copy)]
struct Hyper {
    rule: Rule,
    eta: f64,
    beta1: f64,
    beta2: f64,
    tau: f64,
    bias_correction: bool,
}

impl Moments {
    fn step(
        &mut self,
        h: Hyper,
        round: usize,
        global: &Weights,
        updates: &[ClientUpdate],
    ) -> Result<Weights> {
        validate_updates(round, global, updates, &|_| false)?;
        let means = weighted_mean_f64(global, updates, &|_| false);
        // moments must fit before anything changes
        for (key, g) in global.iter() {
            for (which, map) in [("m", &self.m), ("v", &self.v)] {
                if let Some(a) = map.get(key) {
                    if a.shape() != g.shape() {
                        return Err(FedError::Array {
                            key: key.to_string(),
                            msg: format!(
                                "the server's {which} has shape {:?}, the global model's is {:?}",
                                a.shape(),
                                g.shape()
                            ),
                        });
                    }
                }
            }
        }
        self.steps += 1;
        let t = self.steps as f64;
        let eta_t = if h.bias_correction {
            h.eta * (1.0 - h.beta2.powf(t)).sqrt() / (1.0 - h.beta1.powf(t))
        } else {
            h.eta
        };
        let (b1, b2, tau) = (h.beta1, h.beta2, h.tau);
        let mut out = Weights::new();
        for (key, g) in global.iter() {
            let mean = &means[key];
            let m = self
                .m
                .entry(key.to_string())
                .or_insert_with(|| ArrayD::zeros(g.raw_dim()));
            let v = self
                .v
                .entry(key.to_string())
                .or_insert_with(|| ArrayD::zeros(g.raw_dim()));
            let mut w_new = ArrayD::<f32>::zeros(g.raw_dim());
            Zip::from(&mut w_new)
                .and(g)
                .and(mean)
                .and(m)
                .and(v)
                .for_each(|w, &g, &avg, m, v| {
                    let g = f64::from(g);
                    let delta = avg - g;
                    let d2 = delta * delta;
                    let m1 = b1 * f64::from(*m) + (1.0 - b1) * delta;
                    let v0 = f64::from(*v);
                    let v1 = match h.rule {
                        Rule::Adam => b2 * v0 + (1.0 - b2) * d2,
                        Rule::Yogi => v0 - (1.0 - b2) * d2 * np_sign(v0 - d2),
                    };
                    *m = m1 as f32;
                    *v = v1 as f32;
                    *w = (g + eta_t * m1 / (v1.sqrt() + tau)) as f32;
                });
            out.insert(key.to_string(), w_new);
        }
        Ok(out)
    }

    fn state(&self) -> Weights {
        let mut w = Weights::new();
        for (k, a) in &self.m {
            w.insert(format!("m/{k}"), a.clone());
        }
        for (k, a) in &self.v {
            w.insert(format!("v/{k}"), a.clone());
        }
        w.insert(
            "steps",
            ArrayD::from_elem(ndarray::IxDyn(&[]), self.steps as f32),
        );
        w
    }

    fn load_state(name: &str, state: &Weights) -> Result<Self> {
        let mut out = Moments::default();
        let mut have_steps = false;
        for (k, a) in state.iter() {
            if let Some(rest) = k.strip_prefix("m/") {
                out.m.insert(rest.to_string(), a.clone());
            } else if let Some(rest) = k.strip_prefix("v/") {
                out.v.insert(rest.to_string(), a.clone());
            } else if k == "steps" {
                let s = a.iter().next().copied().unwrap_or(-1.0);
                if a.len() != 1 || s < 0.0 || s.fract() != 0.0 {
                    return Err(FedError::Array {
                        key: k.to_string(),
                        msg: format!("{name} state: `steps` must be one whole number >= 0"),
                    });
                }
                out.steps = s as usize;
                have_steps = true;
            } else {
                return Err(FedError::Array {
                    key: k.to_string(),
                    msg: format!("{name} state has only `m/…`, `v/…` and `steps` arrays"),
                });
            }
        }
        if !have_steps {
            return Err(FedError::Array {
                key: "steps".into(),
                msg: format!("missing from the {name} state"),
            });
        }
        if let Some(k) = out
            .m
            .keys()
            .find(|k| !out.v.contains_key(*k))
            .or_else(|| out.v.keys().find(|k| !out.m.contains_key(*k)))
        {
            return Err(FedError::Array {
                key: k.clone(),
                msg: format!("{name} state has only one of `m/{k}` and `v/{k}`"),
            });
        }
        Ok(out)
    }
}

fn check_hyper(name: &str, eta: f64, beta1: f64, beta2: f64, tau: f64) -> Result<()> {
    ensure(name, eta.is_finite() && eta > 0.0, || {
        format!("`eta` must be a finite number > 0, got {eta}")
    })?;
    for (field, b) in [("beta1", beta1), ("beta2", beta2)] {
        ensure(name, (0.0..1.0).contains(&b), || {
            format!("`{field}` must be in [0, 1), got {b}")
        })?;
    }
    ensure(name, tau.is_finite() && tau > 0.0, || {
        format!("`tau` must be a finite number > 0, got {tau}")
    })
}

/// FedAdam's parameters; the defaults are Flower's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedAdamParams {
    /// Server learning rate η. Default `0.1`.
    pub eta: f64,
    /// First-moment decay β1 (alias `beta_1`). Default `0.9`.
    #[serde(alias = "beta_1")]
    pub beta1: f64,
    /// Second-moment decay β2 (alias `beta_2`). Default `0.99`.
    #[serde(alias = "beta_2")]
    pub beta2: f64,
    /// Adaptivity τ, added to `sqrt(v)`. Default `1e-9`.
    pub tau: f64,
    /// Scale η by Adam's bias correction `sqrt(1 - β2^t) / (1 - β1^t)`,
    /// `t` the number of server steps taken (1 on the first). Default
    /// `false`, as in Reddi et al. (recent Flower releases apply a
    /// correction with `t = server_round + 1`).
    pub bias_correction: bool,
}

impl Default for FedAdamParams {
    fn default() -> Self {
        Self {
            eta: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-9,
            bias_correction: false,
        }
    }
}

/// FedAdam. With `Δ` the example-weighted mean of the sites' weights minus
/// the global weights (per array, in `f64`):
/// `m ← β1 m + (1−β1) Δ`, `v ← β2 v + (1−β2) Δ²`,
/// `w ← w + η m / (sqrt(v) + τ)`; `m` and `v` start at zero (as in
/// Flower) and are kept as `f32`. Registered as `FedAdam`.
#[derive(Debug, Clone, Default)]
pub struct FedAdam {
    params: FedAdamParams,
    moments: Moments,
}

impl FedAdam {
    /// FedAdam with `params`.
    ///
    /// # Errors
    /// `eta` or `tau` not > 0, a β outside `[0, 1)`.
    pub fn new(params: FedAdamParams) -> Result<Self> {
        check_hyper(
            "FedAdam",
            params.eta,
            params.beta1,
            params.beta2,
            params.tau,
        )?;
        Ok(Self {
            params,
            moments: Moments::default(),
        })
    }

    /// Builds from JSON parameters, e.g. `{"eta": 0.01, "tau": 1e-3}`.
    ///
    /// # Errors
    /// Unknown keys or bad values, named.
    pub fn from_json(params: &serde_json::Value) -> Result<Self> {
        Self::new(parse_params("FedAdam", params)?)
    }

    /// The parameters.
    pub fn params(&self) -> &FedAdamParams {
        &self.params
    }

    /// Server steps taken so far.
    pub fn steps(&self) -> usize {
        self.moments.steps
    }
}

impl Aggregator for FedAdam {
    fn name(&self) -> &str {
        "FedAdam"
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
        let p = &self.params;
        let h = Hyper {
            rule: Rule::Adam,
            eta: p.eta,
            beta1: p.beta1,
            beta2: p.beta2,
            tau: p.tau,
            bias_correction: p.bias_correction,
        };
        self.moments.step(h, round, global, updates)
    }

    /// `m/<key>`, `v/<key>` and `steps` (rank 0).
    fn state(&self) -> Weights {
        self.moments.state()
    }

    fn load_state(&mut self, state: &Weights) -> Result<()> {
        self.moments = Moments::load_state("FedAdam", state)?;
        Ok(())
    }
}

/// FedYogi's parameters; the defaults are Flower's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedYogiParams {
    /// Server learning rate η. Default `0.01`.
    pub eta: f64,
    /// First-moment decay β1 (alias `beta_1`). Default `0.9`.
    #[serde(alias = "beta_1")]
    pub beta1: f64,
    /// Second-moment decay β2 (alias `beta_2`). Default `0.99`.
    #[serde(alias = "beta_2")]
    pub beta2: f64,
    /// Adaptivity τ, added to `sqrt(v)`. Default `1e-3`.
    pub tau: f64,
}

impl Default for FedYogiParams {
    fn default() -> Self {
        Self {
            eta: 0.01,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
        }
    }
}

/// FedYogi: as [`FedAdam`] but with Yogi's additive second moment,
/// `v ← v − (1−β2) Δ² sign(v − Δ²)` (`sign(0) = 0`, as numpy's); `m` and
/// `v` start at zero (as in Flower). Registered as `FedYogi`.
#[derive(Debug, Clone, Default)]
pub struct FedYogi {
    params: FedYogiParams,
    moments: Moments,
}

impl FedYogi {
    /// FedYogi with `params`.
    ///
    /// # Errors
    /// `eta` or `tau` not > 0, a β outside `[0, 1)`.
    pub fn new(params: FedYogiParams) -> Result<Self> {
        check_hyper(
            "FedYogi",
            params.eta,
            params.beta1,
            params.beta2,
            params.tau,
        )?;
        Ok(Self {
            params,
            moments: Moments::default(),
        })
    }

    /// Builds from JSON parameters, e.g. `{"eta": 0.01}`.
    ///
    /// # Errors
    /// Unknown keys or bad values, named.
    pub fn from_json(params: &serde_json::Value) -> Result<Self> {
        Self::new(parse_params("FedYogi", params)?)
    }

    /// The parameters.
    pub fn params(&self) -> &FedYogiParams {
        &self.params
    }

    /// Server steps taken so far.
    pub fn steps(&self) -> usize {
        self.moments.steps
    }
}

impl Aggregator for FedYogi {
    fn name(&self) -> &str {
        "FedYogi"
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
        let p = &self.params;
        let h = Hyper {
            rule: Rule::Yogi,
            eta: p.eta,
            beta1: p.beta1,
            beta2: p.beta2,
            tau: p.tau,
            bias_correction: false,
        };
        self.moments.step(h, round, global, updates)
    }

    /// `m/<key>`, `v/<key>` and `steps` (rank 0).
    fn state(&self) -> Weights {
        self.moments.state()
    }

    fn load_state(&mut self, state: &Weights) -> Result<()> {
        self.moments = Moments::load_state("FedYogi", state)?;
        Ok(())
    }
}
