//! FedProx's client side: the proximal term `mu/2 Σ ||w − w_global||²`
//! added to a site's local loss.

use std::collections::{BTreeMap, BTreeSet};

use candle_core::{DType, Device, Tensor, Var};

use crate::aggregator::Aggregator;
use crate::error::{FedError, Result};
use crate::weights::{array_to_tensor, Weights};

/// Something that is (or holds) a candle tensor: [`Tensor`] itself and
/// [`Var`], so that both `&[(String, Tensor)]` and an optimiser's
/// `&[(String, Var)]` can be given to the proximal term.
pub trait TensorLike {
    /// The tensor.
    fn tensor(&self) -> &Tensor;
}

impl TensorLike for Tensor {
    fn tensor(&self) -> &Tensor {
        self
    }
}

impl TensorLike for Var {
    fn tensor(&self) -> &Tensor {
        self
    }
}

/// The proximal term with the global weights already on the device: build
/// it once per round and evaluate it at every local step.
///
/// In a medseg-learners round this is the extra loss term:
/// `trainer.train_round(&mut session, steps, Some(&|vars| prox.compute(vars)))`.
#[derive(Debug, Clone)]
pub struct ProximalTerm {
    mu: f64,
    device: Device,
    anchors: BTreeMap<String, Tensor>,
    skipped: BTreeSet<String>,
}

impl ProximalTerm {
    /// The term anchored at every array of `global`, on `device`.
    ///
    /// # Errors
    /// A negative or non-finite `mu`; an array that cannot be put on
    /// `device` (named).
    pub fn new(global: &Weights, mu: f64, device: &Device) -> Result<Self> {
        Self::build(global, mu, device, &|_| false)
    }

    /// The term anchored at the arrays of `global` that `aggregator`
    /// shares: variables that are local to the site
    /// ([`Aggregator::is_local`]) are left out of the sum.
    ///
    /// # Errors
    /// As [`ProximalTerm::new`].
    pub fn for_aggregator(
        global: &Weights,
        aggregator: &dyn Aggregator,
        mu: f64,
        device: &Device,
    ) -> Result<Self> {
        Self::build(global, mu, device, &|k| aggregator.is_local(k))
    }

    fn build(
        global: &Weights,
        mu: f64,
        device: &Device,
        skip: &dyn Fn(&str) -> bool,
    ) -> Result<Self> {
        if !(mu.is_finite() && mu >= 0.0) {
            return Err(FedError::Params {
                name: "FedProx".into(),
                msg: format!("`mu` must be a finite number >= 0, got {mu}"),
            });
        }
        let mut anchors = BTreeMap::new();
        let mut skipped = BTreeSet::new();
        for (k, a) in global.iter() {
            if skip(k) {
                skipped.insert(k.to_string());
                continue;
            }
            let t = array_to_tensor(a, device).map_err(|e| FedError::Array {
                key: k.to_string(),
                msg: format!("cannot put the global array on {device:?}: {e}"),
            })?;
            anchors.insert(k.to_string(), t);
        }
        Ok(Self {
            mu,
            device: device.clone(),
            anchors,
            skipped,
        })
    }

    /// The weight `mu`.
    pub fn mu(&self) -> f64 {
        self.mu
    }

    /// `mu/2 Σ_i ||w_i − w_global,i||²` over `vars` (a scalar tensor in the
    /// variables' dtype, differentiable with respect to them: the gradient
    /// of `w_i` is `mu (w_i − w_global,i)`). Variables that are local to the
    /// site (see [`ProximalTerm::for_aggregator`]) are skipped. With no
    /// variable the term is an `f32` zero on the term's device.
    ///
    /// # Errors
    /// A variable without global array, or of another shape, naming it.
    pub fn compute<V: TensorLike>(&self, vars: &[(String, V)]) -> candle_core::Result<Tensor> {
        let mut total: Option<Tensor> = None;
        for (name, v) in vars {
            if self.skipped.contains(name) {
                continue;
            }
            let w = v.tensor();
            let Some(anchor) = self.anchors.get(name) else {
                candle_core::bail!(
                    "proximal term: variable `{name}` has no array in the global weights"
                )
            };
            if anchor.dims() != w.dims() {
                candle_core::bail!(
                    "proximal term: variable `{name}` has shape {:?}, the global array {:?}",
                    w.dims(),
                    anchor.dims()
                )
            }
            let anchor = anchor.to_device(w.device())?.to_dtype(w.dtype())?;
            let sq = (w - &anchor)?.sqr()?.sum_all()?;
            total = Some(match total {
                None => sq,
                Some(t) => (t + sq)?,
            });
        }
        match total {
            Some(t) => t.affine(0.5 * self.mu, 0.0),
            None => Tensor::zeros((), DType::F32, &self.device),
        }
    }
}

/// The proximal term `mu/2 Σ ||w − w_global||²` of FedProx over `vars`
/// (every variable must have a global array of its shape), differentiable
/// with respect to `vars`. Converts `global` on every call: for a loop,
/// build a [`ProximalTerm`] once instead.
///
/// # Errors
/// A negative `mu`, a variable without global array or of another shape
/// (named).
pub fn proximal_term<V: TensorLike>(
    vars: &[(String, V)],
    global: &Weights,
    mu: f64,
) -> candle_core::Result<Tensor> {
    let device = vars
        .first()
        .map_or(Device::Cpu, |(_, v)| v.tensor().device().clone());
    let needed: Weights = vars
        .iter()
        .filter_map(|(k, _)| global.get(k).map(|a| (k.clone(), a.clone())))
        .collect();
    let term = ProximalTerm::new(&needed, mu, &device)
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    term.compute(vars)
}
