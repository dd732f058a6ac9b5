//! Softmax and log-softmax over the channel axis (dim 1) of `[N, C, ...]`
//! tensors, with backward.
//!
//! The CPU f32 path walks blocks of spatial positions, so that every pass over
//! the channels reads contiguous rows and vectorises (including `exp`).

use crate::activation::{cpu_slice, fast_exp, from_vec, is_fast, with_slice, SyncPtr};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const BLOCK: usize = 512;

/// Splits `[N, C, S]` into (n, spatial block) tasks and runs `f(n, s0, s1)`.
fn for_blocks(n: usize, s: usize, f: impl Fn(usize, usize, usize) + Sync) {
    let nb = s.div_ceil(BLOCK);
    (0..n * nb).into_par_iter().for_each(|t| {
        let (b, k) = (t / nb, t % nb);
        let s0 = k * BLOCK;
        f(b, s0, (s0 + BLOCK).min(s));
    });
}

fn dims_ncs(dims: &[usize]) -> Result<(usize, usize, usize)> {
    if dims.len() < 2 {
        candle_core::bail!("softmax over channels: expected [N, C, ...], got {dims:?}");
    }
    Ok((dims[0], dims[1], dims[2..].iter().product()))
}

fn forward(x: &[f32], y: &mut [f32], (n, c, s): (usize, usize, usize), log: bool) {
    let yp = SyncPtr(y.as_mut_ptr());
    for_blocks(n, s, |b, s0, s1| {
        let len = s1 - s0;
        let mut m = [f32::NEG_INFINITY; BLOCK];
        let mut sum = [0f32; BLOCK];
        let (m, sum) = (&mut m[..len], &mut sum[..len]);
        let row = |ch: usize| (b * c + ch) * s + s0;
        for ch in 0..c {
            let xr = &x[row(ch)..row(ch) + len];
            for (m, &v) in m.iter_mut().zip(xr) {
                *m = if v > *m { v } else { *m };
            }
        }
        for ch in 0..c {
            let xr = &x[row(ch)..row(ch) + len];
            // SAFETY: each task writes only its own (b, s0..s1) positions of every channel.
            let yr = unsafe { std::slice::from_raw_parts_mut(yp.get().add(row(ch)), len) };
            for ((y, sm), (&v, &mv)) in yr
                .iter_mut()
                .zip(sum.iter_mut())
                .zip(xr.iter().zip(m.iter()))
            {
                let e = fast_exp(v - mv);
                *sm += e;
                *y = e;
            }
        }
        if log {
            for (m, sm) in m.iter_mut().zip(sum.iter()) {
                *m += sm.ln();
            }
        } else {
            for sm in sum.iter_mut() {
                *sm = 1.0 / *sm;
            }
        }
        for ch in 0..c {
            let yr = unsafe { std::slice::from_raw_parts_mut(yp.get().add(row(ch)), len) };
            if log {
                let xr = &x[row(ch)..row(ch) + len];
                for ((y, &v), &l) in yr.iter_mut().zip(xr).zip(m.iter()) {
                    *y = v - l;
                }
            } else {
                for (y, &r) in yr.iter_mut().zip(sum.iter()) {
                    *y *= r;
                }
            }
        }
    });
}

/// softmax: dx = y * (dy - sum_c dy*y); log-softmax: dx = dy - exp(y) * sum_c dy.
fn backward(y: &[f32], dy: &[f32], dx: &mut [f32], (n, c, s): (usize, usize, usize), log: bool) {
    let dp = SyncPtr(dx.as_mut_ptr());
    for_blocks(n, s, |b, s0, s1| {
        let len = s1 - s0;
        let mut acc = [0f32; BLOCK];
        let acc = &mut acc[..len];
        let row = |ch: usize| (b * c + ch) * s + s0;
        for ch in 0..c {
            let (yr, gr) = (&y[row(ch)..row(ch) + len], &dy[row(ch)..row(ch) + len]);
            if log {
                for (a, &g) in acc.iter_mut().zip(gr) {
                    *a += g;
                }
            } else {
                for ((a, &g), &yv) in acc.iter_mut().zip(gr).zip(yr) {
                    *a += g * yv;
                }
            }
        }
        for ch in 0..c {
            let (yr, gr) = (&y[row(ch)..row(ch) + len], &dy[row(ch)..row(ch) + len]);
            // SAFETY: disjoint positions per task, as in `forward`.
            let dr = unsafe { std::slice::from_raw_parts_mut(dp.get().add(row(ch)), len) };
            if log {
                for (((d, &g), &yv), &a) in dr.iter_mut().zip(gr).zip(yr).zip(acc.iter()) {
                    *d = g - fast_exp(yv) * a;
                }
            } else {
                for (((d, &g), &yv), &a) in dr.iter_mut().zip(gr).zip(yr).zip(acc.iter()) {
                    *d = yv * (g - a);
                }
            }
        }
    });
}

struct SoftmaxOp {
    log: bool,
}

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        if self.log {
            "medseg-log-softmax-channels"
        } else {
            "medseg-softmax-channels"
        }
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(st, l, self.name())?;
        let d = dims_ncs(l.dims())?;
        let mut y = vec![0f32; x.len()];
        forward(x, &mut y, d, self.log);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let d = dims_ncs(arg.dims())?;
        let dx = with_slice(res, self.name(), |y| {
            with_slice(grad, self.name(), |dy| {
                let mut dx = vec![0f32; y.len()];
                backward(y, dy, &mut dx, d, self.log);
                dx
            })
        })??;
        Ok(Some(from_vec(dx, arg.shape())?))
    }
}

/// Softmax over dim 1 (channels) of `[N, C, ...]`, with backward.
pub fn softmax_channels(x: &Tensor) -> Result<Tensor> {
    dims_ncs(x.dims())?;
    if is_fast(x) {
        x.contiguous()?.apply_op1(SoftmaxOp { log: false })
    } else {
        let m = x.max_keepdim(1)?;
        let e = x.broadcast_sub(&m)?.exp()?;
        e.broadcast_div(&e.sum_keepdim(1)?)
    }
}

/// Log-softmax over dim 1 (channels) of `[N, C, ...]`, with backward.
pub fn log_softmax_channels(x: &Tensor) -> Result<Tensor> {
    dims_ncs(x.dims())?;
    if is_fast(x) {
        x.contiguous()?.apply_op1(SoftmaxOp { log: true })
    } else {
        let m = x.max_keepdim(1)?;
        let z = x.broadcast_sub(&m)?;
        z.broadcast_sub(&z.exp()?.sum_keepdim(1)?.log()?)
    }
}
