//! Element-wise activations (ReLU, leaky ReLU) in a single pass, with backward.
//!
//! On CPU f32 tensors the forward is one read and one write of the data (candle's
//! `leaky_relu` makes five passes); the backward is one pass over the input and
//! the incoming gradient. Other devices and dtypes fall back to candle ops.
//!
//! This module also holds the small helpers the other ops of this crate share
//! (slice access to CPU f32 tensors, a fast vectorisable `exp`).

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The activation applied after a normalisation (or on its own by [`activate`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `y = x`.
    Identity,
    /// `y = max(x, 0)`.
    Relu,
    /// `y = x` for `x > 0`, `slope * x` otherwise (PyTorch's `LeakyReLU(slope)`).
    LeakyRelu(f64),
}

impl Activation {
    /// Slope applied to non-positive inputs (1 for identity, 0 for ReLU).
    pub(crate) fn neg_slope(self) -> f32 {
        match self {
            Activation::Identity => 1.0,
            Activation::Relu => 0.0,
            Activation::LeakyRelu(s) => s as f32,
        }
    }
}

// ---------------------------------------------------------------------------
// shared helpers

/// Elements per parallel task for flat element-wise loops.
pub(crate) const CHUNK: usize = 1 << 14;

/// True when `t` can take the fast path: an f32 tensor on the CPU (see
/// [`crate::fast_path`]).
pub(crate) fn is_fast(t: &Tensor) -> bool {
    crate::device::fast_path(t)
}

/// The contiguous f32 slice of a CPU storage, or an error.
pub(crate) fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let v = match s {
        CpuStorage::F32(v) => v,
        _ => candle_core::bail!("{op}: the fast path needs f32 input"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: the fast path needs a contiguous input"),
    }
}

/// Runs `f` on the contiguous f32 data of a CPU tensor (made contiguous first).
pub(crate) fn with_slice<R>(t: &Tensor, op: &str, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (st, l) = t.storage_and_layout();
    match &*st {
        Storage::Cpu(s) => Ok(f(cpu_slice(s, l, op)?)),
        _ => candle_core::bail!("{op}: the fast path needs a CPU tensor"),
    }
}

/// A CPU f32 tensor of the given shape from a vector.
pub(crate) fn from_vec(v: Vec<f32>, shape: &Shape) -> Result<Tensor> {
    Tensor::from_vec(v, shape.clone(), &candle_core::Device::Cpu)
}

/// A vector of `n` f32 written in parallel by `f(chunk_index, chunk)` over
/// chunks of `chunk` elements, without zero-filling it first. `f` must write
/// every element of its chunk (it receives `MaybeUninit` slots).
pub(crate) fn par_fill(
    n: usize,
    chunk: usize,
    f: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(n);
    if n > 0 {
        v.spare_capacity_mut()[..n]
            .par_chunks_mut(chunk.max(1))
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    }
    // SAFETY: the capacity is at least n and every caller's `f` writes every
    // element of every chunk, so the first n elements are initialised.
    unsafe { v.set_len(n) };
    v
}

/// A raw pointer that may be shared between rayon tasks writing disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub *mut f32);
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// The pointer (a method, so that closures capture the whole `SyncPtr`).
    #[inline(always)]
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// `exp(x)` for f32 without a libm call, so that loops over it vectorise.
/// Cody–Waite range reduction and a degree-6 polynomial; relative error
/// below 2e-7 over the whole f32 range, `0` below -87.3, `inf` above 88.7.
#[inline(always)]
pub(crate) fn fast_exp(x: f32) -> f32 {
    let x = x.clamp(-87.336_55, 88.722_83);
    let n = (x * std::f32::consts::LOG2_E).round();
    let r = n.mul_add(-0.693_145_75, x);
    let r = n.mul_add(-1.428_606_8e-6, r);
    // exp(r) on |r| <= ln2/2
    let p = 1.987_569_1e-4f32;
    let p = p.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 0.166_666_66);
    let p = p.mul_add(r, 0.5);
    let p = p.mul_add(r * r, r) + 1.0;
    // scale by 2^n in two steps so that n = 128 or -127 stay finite/normal
    let n = n as i32;
    let n1 = n / 2;
    let n2 = n - n1;
    let s1 = f32::from_bits(((n1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((n2 + 127) as u32) << 23);
    p * s1 * s2
}

// ---------------------------------------------------------------------------
// activation op

struct ActOp {
    slope: f32,
}

/// The leaky ReLU's derivative at `v`: 1 for `v > 0`, `slope` otherwise. A
/// select between two values, so that loops over it compile to vector blends
/// (a branch on the sign of random data mispredicts half the time and blocks
/// vectorising).
#[inline(always)]
pub(crate) fn leaky_factor(v: f32, slope: f32) -> f32 {
    if v > 0.0 {
        1.0
    } else {
        slope
    }
}

/// `v` for `v > 0`, `slope * v` otherwise, as `v` times [`leaky_factor`].
#[inline(always)]
pub(crate) fn leaky1(v: f32, slope: f32) -> f32 {
    v * leaky_factor(v, slope)
}

impl CustomOp1 for ActOp {
    fn name(&self) -> &'static str {
        "medseg-leaky-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, self.name())?;
        let slope = self.slope;
        let y = par_fill(x.len(), CHUNK, move |i, y| {
            let x = &x[i * CHUNK..i * CHUNK + y.len()];
            for (y, &x) in y.iter_mut().zip(x) {
                y.write(leaky1(x, slope));
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let slope = self.slope;
        let g = with_slice(arg, self.name(), |x| {
            with_slice(grad, "medseg-leaky-relu-bwd", |dy| {
                par_fill(x.len(), CHUNK, move |i, dx| {
                    let r = i * CHUNK..i * CHUNK + dx.len();
                    for ((dx, &x), &dy) in dx.iter_mut().zip(&x[r.clone()]).zip(&dy[r]) {
                        dx.write(dy * leaky_factor(x, slope));
                    }
                })
            })
        })??;
        Ok(Some(from_vec(g, arg.shape())?))
    }
}

/// Applies `act` element-wise: one pass forward, one pass backward on CPU f32.
/// Works on tensors of any shape; other devices/dtypes use candle ops.
pub fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    match act {
        Activation::Identity => Ok(x.clone()),
        Activation::Relu => leaky_relu(x, 0.0),
        Activation::LeakyRelu(s) => leaky_relu(x, s),
    }
}

/// Leaky ReLU, `y = x` for `x > 0` and `slope * x` otherwise, with backward
/// (the gradient at 0 is `slope`, as in PyTorch). `slope = 0` is ReLU.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    if is_fast(x) {
        x.contiguous()?.apply_op1(ActOp {
            slope: slope as f32,
        })
    } else if slope == 0.0 {
        x.relu()
    } else {
        // max(x, slope*x) is exact for 0 <= slope <= 1; otherwise select.
        let sx = x.affine(slope, 0.0)?;
        if (0.0..=1.0).contains(&slope) {
            x.maximum(&sx)
        } else {
            x.gt(0.0)?.where_cond(x, &sx)
        }
    }
}
