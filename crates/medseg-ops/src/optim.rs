//! Fused, in-place Adam / AdamW parameter update (PyTorch's `torch.optim.Adam`
//! with L2 weight decay added to the gradient, and `torch.optim.AdamW` with
//! decoupled decay).
//!
//! Composed from candle ops, one Adam step is some fifteen element-wise passes
//! over the parameter, each allocating a tensor of its size: for a network of
//! tens of millions of parameters that is gigabytes of memory traffic per
//! step. [`adam_step`] reads the parameter, its gradient and the two moments
//! once, and writes the parameter and the moments once, in place, on all
//! cores. It applies to f32 parameters on the CPU; the caller keeps the
//! candle composition for every other case ([`adam_applies`] tells which).

use crate::device::fast_path;
use candle_core::{CpuStorage, InplaceOp2, Layout, Result, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

/// Hyper-parameters of one Adam step (the learning rate and step count are
/// those of the step being taken).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamHyper {
    /// Learning rate of this step.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the bias-corrected root of the second moment.
    pub eps: f64,
    /// Weight decay: added to the gradient as L2 (Adam) or applied to the
    /// parameter before the update (AdamW).
    pub weight_decay: f64,
    /// AdamW's decoupled decay instead of Adam's L2.
    pub decoupled: bool,
    /// The step number, from 1 (for the bias corrections).
    pub step: i32,
}

/// True when [`adam_step`] applies to `param` and `grad`: both f32 on the
/// CPU, outside [`crate::with_candle_ops`], with the same number of elements.
pub fn adam_applies(param: &Tensor, grad: &Tensor) -> bool {
    fast_path(param) && fast_path(grad) && param.elem_count() == grad.elem_count()
}

/// One Adam (or AdamW) update of `param`, in place, from `grad`, with the
/// moments `m` and `v` (each `param.elem_count()` long, zero before the
/// first step) updated in place as well. Per element, in f32:
///
/// ```text
/// AdamW: p <- p (1 - lr wd)          Adam: g <- g + wd p
/// m <- b1 m + (1 - b1) g
/// v <- b2 v + (1 - b2) g^2
/// p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
/// ```
///
/// Errors when the tensors are not f32 on the CPU or the lengths differ;
/// `param` may be strided only if it is contiguous (a parameter always is).
pub fn adam_step(
    param: &Tensor,
    grad: &Tensor,
    m: &mut [f32],
    v: &mut [f32],
    h: &AdamHyper,
) -> Result<()> {
    let n = param.elem_count();
    if grad.elem_count() != n || m.len() != n || v.len() != n {
        candle_core::bail!(
            "adam_step: parameter has {n} elements, gradient {}, moments {} and {}",
            grad.elem_count(),
            m.len(),
            v.len()
        );
    }
    if !adam_applies(param, grad) {
        candle_core::bail!("adam_step: the fused update needs f32 CPU tensors");
    }
    let grad = grad.contiguous()?;
    let op = AdamOp {
        h: *h,
        moments: Mutex::new((m, v)),
    };
    param.inplace_op2(&grad, &op)
}

/// The in-place op: the moments travel inside it, the parameter is the
/// destination, the gradient the source.
struct AdamOp<'a> {
    h: AdamHyper,
    moments: Mutex<(&'a mut [f32], &'a mut [f32])>,
}

impl InplaceOp2 for AdamOp<'_> {
    fn name(&self) -> &'static str {
        "medseg-adam-step"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let p = match s1 {
            CpuStorage::F32(v) => v,
            _ => candle_core::bail!("adam_step: the parameter must be f32"),
        };
        let p = match l1.contiguous_offsets() {
            Some((a, b)) => &mut p[a..b],
            None => candle_core::bail!("adam_step: the parameter must be contiguous"),
        };
        let g = crate::activation::cpu_slice(s2, l2, "adam_step")?;
        let mut guard = self
            .moments
            .lock()
            .map_err(|_| candle_core::Error::Msg("adam_step: moments lock poisoned".into()))?;
        let (m, v) = &mut *guard;
        let h = self.h;
        let (b1, b2) = (h.beta1 as f32, h.beta2 as f32);
        let (c1, c2) = ((1.0 - h.beta1) as f32, (1.0 - h.beta2) as f32);
        let bc1 = 1.0 - h.beta1.powi(h.step);
        let bc2 = 1.0 - h.beta2.powi(h.step);
        let inv_sqrt_bc2 = (1.0 / bc2.sqrt()) as f32;
        let eps = h.eps as f32;
        let step = (h.lr / bc1) as f32;
        let wd = h.weight_decay as f32;
        let shrink = (1.0 - h.lr * h.weight_decay) as f32;
        let decay = h.weight_decay != 0.0 && h.decoupled;
        let l2 = h.weight_decay != 0.0 && !h.decoupled;
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| {
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                    let mut x = *p;
                    let mut g = g;
                    if decay {
                        x *= shrink;
                    } else if l2 {
                        g += x * wd;
                    }
                    let mi = *m * b1 + g * c1;
                    let vi = *v * b2 + g * g * c2;
                    *m = mi;
                    *v = vi;
                    *p = x - mi / (vi.sqrt() * inv_sqrt_bc2 + eps) * step;
                }
            });
        Ok(())
    }
}
