//! Layer normalisation over the last axis (PyTorch `nn.LayerNorm(E)` on
//! `[..., E]`, the transformers' token norm), forward and backward.
//!
//! On CPU f32 the forward is one pass per row (moments in f64 over f32 lane
//! sums, then the fused normalise-scale-shift); the backward is one pass per
//! row for the input gradient plus per-thread partial sums of the `gamma`
//! and `beta` gradients. Other devices/dtypes are composed from candle ops.

use crate::activation::{cpu_slice, from_vec, is_fast, par_fill, with_slice};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;
use std::sync::Arc;

/// Mean and `1 / sqrt(var + eps)` of each row, kept from the forward pass.
struct LayerNormOp {
    e: usize,
    mean: Arc<Vec<f32>>,
    invstd: Arc<Vec<f32>>,
}

/// Rows per rayon task of the backward's parameter-gradient sums.
const ROWS_PER_TASK: usize = 64;

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "medseg-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s1, l1, self.name())?;
        let gamma = cpu_slice(s2, l2, self.name())?;
        let beta = cpu_slice(s3, l3, self.name())?;
        let e = self.e;
        let y = par_fill(x.len(), e * ROWS_PER_TASK, |t, y| {
            for (i, y) in y.chunks_mut(e).enumerate() {
                let r = t * ROWS_PER_TASK + i;
                let (m, is) = (self.mean[r], self.invstd[r]);
                let x = &x[r * e..(r + 1) * e];
                for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
                    y.write(((x - m) * is).mul_add(g, b));
                }
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let e = self.e;
        let gv = gamma.to_vec1::<f32>()?;
        let (dx, dgamma, dbeta) = with_slice(x, self.name(), |x| {
            with_slice(grad, self.name(), |dy| {
                // input gradient, per row: dx = is * (g dy - mean(g dy) - xhat mean(g dy xhat))
                let dx = par_fill(x.len(), e * ROWS_PER_TASK, |t, dx| {
                    for (i, dx) in dx.chunks_mut(e).enumerate() {
                        let r = t * ROWS_PER_TASK + i;
                        let (m, is) = (self.mean[r], self.invstd[r]);
                        let (x, dy) = (&x[r * e..(r + 1) * e], &dy[r * e..(r + 1) * e]);
                        let (mut s1, mut s2) = (0f32, 0f32);
                        for ((&x, &d), &g) in x.iter().zip(dy).zip(&gv) {
                            let gd = g * d;
                            s1 += gd;
                            s2 += gd * (x - m);
                        }
                        let c1 = s1 / e as f32;
                        let c2 = s2 * is / e as f32;
                        for (((o, &x), &d), &g) in dx.iter_mut().zip(x).zip(dy).zip(&gv) {
                            let xh = (x - m) * is;
                            o.write(is * (g * d - c1 - xh * c2));
                        }
                    }
                });
                // parameter gradients: sums over rows, per task then combined
                let (dg, db) = x
                    .par_chunks(e * ROWS_PER_TASK)
                    .zip(dy.par_chunks(e * ROWS_PER_TASK))
                    .enumerate()
                    .map(|(t, (xs, ds))| {
                        let mut dg = vec![0f32; e];
                        let mut db = vec![0f32; e];
                        for (i, (x, d)) in xs.chunks(e).zip(ds.chunks(e)).enumerate() {
                            let r = t * ROWS_PER_TASK + i;
                            let (m, is) = (self.mean[r], self.invstd[r]);
                            for (((g, b), &x), &d) in dg.iter_mut().zip(&mut db).zip(x).zip(d) {
                                *g += d * (x - m) * is;
                                *b += d;
                            }
                        }
                        (dg, db)
                    })
                    .collect::<Vec<_>>()
                    .into_iter()
                    // combined in task order, so that the sums do not depend
                    // on how the tasks were scheduled
                    .fold(
                        (vec![0f32; e], vec![0f32; e]),
                        |(mut ga, mut ba), (gb, bb)| {
                            for (a, b) in ga.iter_mut().zip(&gb) {
                                *a += b;
                            }
                            for (a, b) in ba.iter_mut().zip(&bb) {
                                *a += b;
                            }
                            (ga, ba)
                        },
                    );
                (dx, dg, db)
            })
        })??;
        Ok((
            Some(from_vec(dx, x.shape())?),
            Some(from_vec(dgamma, gamma.shape())?),
            Some(from_vec(dbeta, beta.shape())?),
        ))
    }
}

/// Layer normalisation of `x = [..., E]` over its last axis (biased
/// variance, as PyTorch's `nn.LayerNorm(E, eps)`), scaled and shifted by
/// `gamma` and `beta` (`[E]`). The gradient flows to all three.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    if x.rank() == 0 {
        candle_core::bail!("layer_norm: expected [..., E], got a scalar");
    }
    let e = x.dim(D::Minus1)?;
    for (name, t) in [("gamma", gamma), ("beta", beta)] {
        if t.dims() != [e] {
            candle_core::bail!("layer_norm: {name} must be [{e}], got {:?}", t.dims());
        }
    }
    if e == 0 {
        candle_core::bail!("layer_norm: empty last axis {:?}", x.dims());
    }
    if [x, gamma, beta].iter().all(|t| is_fast(t)) {
        let x = x.contiguous()?;
        let (mean, invstd) = with_slice(&x, "layer_norm", |xs| {
            xs.par_chunks(e)
                .map(|row| {
                    let (m, q) = crate::norm::plane_moments(row);
                    (m as f32, (1.0 / (q / e as f64 + eps).sqrt()) as f32)
                })
                .unzip::<f32, f32, Vec<f32>, Vec<f32>>()
        })?;
        let op = LayerNormOp {
            e,
            mean: Arc::new(mean),
            invstd: Arc::new(invstd),
        };
        return x.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op);
    }
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    xc.broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(gamma)?
        .broadcast_add(beta)
}
