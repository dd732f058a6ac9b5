//! Optimisers with PyTorch's update rules: SGD (momentum, Nesterov, L2),
//! Adam (L2 added to the gradient) and AdamW (decoupled decay), plus global
//! gradient-norm clipping.
//!
//! Adam and AdamW on f32 CPU parameters take `medseg_ops::adam_step`, one
//! fused in-place pass per parameter with the moments kept as plain vectors;
//! every other case (SGD, other dtypes, CUDA) composes the update from candle
//! ops. Both follow the same formula; checkpoints hold the moments as
//! tensors either way.

use candle_core::{backprop::GradStore, DType, Result, Tensor, Var};
use medseg_config::{OptimizerKind, TrainingConfig};
use std::collections::HashMap;

/// Hyper-parameters of an [`Optimizer`] (the learning rate is given per step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimizerSettings {
    /// Which update rule.
    pub kind: OptimizerKind,
    /// SGD momentum (0 disables it).
    pub momentum: f64,
    /// SGD Nesterov momentum.
    pub nesterov: bool,
    /// Weight decay: L2 for SGD and Adam, decoupled for AdamW.
    pub weight_decay: f64,
    /// Adam betas.
    pub betas: [f64; 2],
    /// Adam epsilon.
    pub eps: f64,
}

impl OptimizerSettings {
    /// The settings named in a `[training]` section.
    pub fn from_config(t: &TrainingConfig) -> Self {
        OptimizerSettings {
            kind: t.optimizer,
            momentum: t.momentum,
            nesterov: t.nesterov,
            weight_decay: t.weight_decay,
            betas: t.betas,
            eps: t.eps,
        }
    }
}

/// An optimiser over named parameters. State (momentum buffers, Adam moments
/// and step count) can be exported and restored for resuming.
pub struct Optimizer {
    params: Vec<(String, Var)>,
    settings: OptimizerSettings,
    step: usize,
    /// first moment / momentum buffer per parameter
    m: Vec<Option<Tensor>>,
    /// second moment per parameter (Adam)
    v: Vec<Option<Tensor>>,
    /// Adam moments `(m, v)` of the fused CPU path, in place of `m` and `v`
    host: Vec<Option<(Vec<f32>, Vec<f32>)>>,
}

impl Optimizer {
    /// An optimiser over `params` (name, variable); names are used for state
    /// export. Parameters without a gradient in a step are left unchanged.
    pub fn new(params: Vec<(String, Var)>, settings: OptimizerSettings) -> Self {
        let n = params.len();
        Optimizer {
            params,
            settings,
            step: 0,
            m: vec![None; n],
            v: vec![None; n],
            host: vec![None; n],
        }
    }

    /// The parameters being optimised.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Number of steps taken.
    pub fn steps_taken(&self) -> usize {
        self.step
    }

    /// Applies one update with learning rate `lr` from the gradients in `grads`.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let s = self.settings;
        let t = self.step as i32;
        for (i, (_, var)) in self.params.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Gradients can carry the graph of the backward pass; optimiser
            // state built from them must not keep it (or every step's graph)
            // alive.
            let g = &g.detach();
            let fused = matches!(s.kind, OptimizerKind::Adam | OptimizerKind::Adamw)
                && medseg_ops::adam_applies(var.as_tensor(), g);
            if fused {
                let n = var.elem_count();
                let (mut hm, mut hv) = match self.host[i].take() {
                    Some(mv) => mv,
                    None => (
                        host_moment(self.m[i].take(), n)?,
                        host_moment(self.v[i].take(), n)?,
                    ),
                };
                let h = medseg_ops::AdamHyper {
                    lr,
                    beta1: s.betas[0],
                    beta2: s.betas[1],
                    eps: s.eps,
                    weight_decay: s.weight_decay,
                    decoupled: s.kind == OptimizerKind::Adamw,
                    step: t,
                };
                medseg_ops::adam_step(var.as_tensor(), g, &mut hm, &mut hv, &h)?;
                self.host[i] = Some((hm, hv));
                continue;
            }
            if let Some((hm, hv)) = self.host[i].take() {
                self.m[i] = Some(Tensor::from_vec(hm, var.shape(), var.device())?);
                self.v[i] = Some(Tensor::from_vec(hv, var.shape(), var.device())?);
            }
            let p = &var.as_tensor().detach();
            match s.kind {
                OptimizerKind::Sgd => {
                    let mut d = g.clone();
                    if s.weight_decay != 0.0 {
                        d = (d + (p * s.weight_decay)?)?;
                    }
                    if s.momentum != 0.0 {
                        let buf = match &self.m[i] {
                            None => d.clone(),
                            Some(b) => ((b * s.momentum)? + &d)?,
                        };
                        d = if s.nesterov {
                            (d + (&buf * s.momentum)?)?
                        } else {
                            buf.clone()
                        };
                        self.m[i] = Some(buf);
                    }
                    var.set(&(p - (d * lr)?)?)?;
                }
                OptimizerKind::Adam | OptimizerKind::Adamw => {
                    let [b1, b2] = s.betas;
                    let mut g = g.clone();
                    let mut p = p.clone();
                    if s.kind == OptimizerKind::Adamw {
                        if s.weight_decay != 0.0 {
                            p = (p * (1.0 - lr * s.weight_decay))?;
                        }
                    } else if s.weight_decay != 0.0 {
                        g = (g + (&p * s.weight_decay)?)?;
                    }
                    let m = match &self.m[i] {
                        None => (&g * (1.0 - b1))?,
                        Some(m) => ((m * b1)? + (&g * (1.0 - b1))?)?,
                    };
                    let v = match &self.v[i] {
                        None => (g.sqr()? * (1.0 - b2))?,
                        Some(v) => ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?,
                    };
                    let bc1 = 1.0 - b1.powi(t);
                    let bc2 = 1.0 - b2.powi(t);
                    let denom = ((v.sqrt()? / bc2.sqrt())? + s.eps)?;
                    let upd = ((&m / denom)? * (lr / bc1))?;
                    var.set(&(p - upd)?)?;
                    self.m[i] = Some(m);
                    self.v[i] = Some(v);
                }
            }
        }
        Ok(())
    }

    /// Exports the optimiser state as named tensors (for a checkpoint).
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (i, (name, var)) in self.params.iter().enumerate() {
            if let Some((m, v)) = &self.host[i] {
                let t = |x: &[f32]| Tensor::from_slice(x, var.shape(), var.device());
                out.insert(format!("optim.m.{name}"), t(m)?);
                out.insert(format!("optim.v.{name}"), t(v)?);
                continue;
            }
            if let Some(m) = &self.m[i] {
                out.insert(format!("optim.m.{name}"), m.clone());
            }
            if let Some(v) = &self.v[i] {
                out.insert(format!("optim.v.{name}"), v.clone());
            }
        }
        out.insert(
            "optim.step".into(),
            Tensor::new(&[self.step as f64], &candle_core::Device::Cpu)?,
        );
        Ok(out)
    }

    /// Restores state exported by [`Optimizer::state`]; entries for unknown
    /// parameters are ignored, missing ones start from zero.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        if let Some(s) = state.get("optim.step") {
            self.step = s.to_dtype(DType::F64)?.to_vec1::<f64>()?[0] as usize;
        }
        for (i, (name, var)) in self.params.iter().enumerate() {
            let dev = var.device();
            let dt = var.dtype();
            self.host[i] = None;
            self.m[i] = match state.get(&format!("optim.m.{name}")) {
                Some(t) => Some(t.to_device(dev)?.to_dtype(dt)?),
                None => None,
            };
            self.v[i] = match state.get(&format!("optim.v.{name}")) {
                Some(t) => Some(t.to_device(dev)?.to_dtype(dt)?),
                None => None,
            };
        }
        Ok(())
    }
}

/// A moment as a vector for the fused path: zeros when there is none yet.
fn host_moment(t: Option<Tensor>, n: usize) -> Result<Vec<f32>> {
    match t {
        None => Ok(vec![0.0; n]),
        Some(t) => t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>(),
    }
}

/// The global L2 norm of the gradients of `params`.
pub fn grad_norm(params: &[(String, Var)], grads: &GradStore) -> Result<f64> {
    let mut total = 0.0f64;
    for (_, v) in params {
        if let Some(g) = grads.get(v.as_tensor()) {
            total += g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    Ok(total.sqrt())
}

/// Scales all gradients so that their global norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_`. Returns the norm before clipping.
pub fn clip_grad_norm(
    params: &[(String, Var)],
    grads: &mut GradStore,
    max_norm: f64,
) -> Result<f64> {
    let norm = grad_norm(params, grads)?;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for (_, v) in params {
            if let Some(g) = grads.get(v.as_tensor()) {
                let scaled = (g * coef)?;
                grads.insert(v.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}
