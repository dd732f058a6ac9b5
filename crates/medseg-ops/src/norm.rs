//! Batch normalisation (training and inference), instance normalisation and
//! group normalisation, fused with an [`Activation`], forward and backward.
//!
//! Inputs are `[N, C, ...spatial]`; `gamma`, `beta`, the running statistics
//! and the returned batch statistics are `[C]`. Normalisation uses the biased
//! variance, as PyTorch does; [`batch_norm_train`] also returns the unbiased
//! batch variance, which is what PyTorch folds into `running_var`.
//!
//! On CPU f32 the forward is one statistics pass (per `(n, c)` plane,
//! combined per channel with Chan's formula for batch norm; per `(n, group)`
//! block for group norm, of which instance norm is the case of `C` groups)
//! and one fused normalise-scale-shift-activate pass; the backward is one
//! reduction pass and one pass that writes the input gradient. Other
//! devices/dtypes are composed from candle ops.

use crate::activation::{
    activate, cpu_slice, from_vec, is_fast, leaky1, leaky_factor, par_fill, with_slice, Activation,
};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// statistics per channel, from this batch; gradient flows through them
    BatchTrain,
    /// statistics per channel, given (running statistics); no gradient through them
    BatchEval,
    /// statistics per (n, group) over `C / groups` consecutive channels;
    /// gradient flows through them
    Group(usize),
}

/// Sum of a slice with 16 independent lanes (vectorises), in f32.
#[inline]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let ch = x.chunks_exact(16);
    let rem = ch.remainder();
    for c in ch {
        for i in 0..16 {
            acc[i] += f(c[i]);
        }
    }
    acc.iter().sum::<f32>() + rem.iter().map(|&v| f(v)).sum::<f32>()
}

/// (mean, sum of squared deviations) of one plane, accumulated in f64 over
/// blocks of f32 lane sums.
pub(crate) fn plane_moments(x: &[f32]) -> (f64, f64) {
    if x.is_empty() {
        return (0.0, 0.0);
    }
    let s: f64 = x.chunks(4096).map(|c| lane_sum(c, |v| v) as f64).sum();
    let mean = s / x.len() as f64;
    let mf = mean as f32;
    let m2: f64 = x
        .chunks(4096)
        .map(|c| {
            lane_sum(c, |v| {
                let d = v - mf;
                d * d
            }) as f64
        })
        .sum();
    // correct for the rounding of the mean to f32
    let dm = mf as f64 - mean;
    (mean, m2 - x.len() as f64 * dm * dm)
}

/// Combines per-plane (count, mean, m2) into one (Chan et al.).
fn combine(parts: impl Iterator<Item = (f64, f64, f64)>) -> (f64, f64, f64) {
    parts.fold((0.0, 0.0, 0.0), |(n, m, q), (nb, mb, qb)| {
        if nb == 0.0 {
            return (n, m, q);
        }
        let nt = n + nb;
        let d = mb - m;
        (nt, m + d * nb / nt, q + qb + d * d * n * nb / nt)
    })
}

struct NormOp {
    mode: Mode,
    slope: f32,
    /// per channel (batch modes) or per (n, group): mean and 1/sqrt(var+eps)
    mean: Arc<Vec<f32>>,
    invstd: Arc<Vec<f32>>,
}

impl NormOp {
    fn stat(&self, plane: usize, c: usize) -> usize {
        match self.mode {
            Mode::Group(g) => (plane / c) * g + (plane % c) / (c / g),
            _ => plane % c,
        }
    }
}

fn ncs(dims: &[usize]) -> (usize, usize, usize) {
    (dims[0], dims[1], dims[2..].iter().product())
}

impl CustomOp3 for NormOp {
    fn name(&self) -> &'static str {
        match self.mode {
            Mode::BatchTrain => "medseg-batch-norm-train",
            Mode::BatchEval => "medseg-batch-norm-eval",
            Mode::Group(_) => "medseg-group-norm",
        }
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
        let (_, c, s) = ncs(l1.dims());
        let slope = self.slope;
        let y = if s > 0 {
            par_fill(x.len(), s, |p, y| {
                let x = &x[p * s..(p + 1) * s];
                let ch = p % c;
                let k = self.stat(p, c);
                let a = gamma[ch] * self.invstd[k];
                let b = beta[ch] - self.mean[k] * a;
                // a local copy: a register, not a load through the capture per element
                let neg_slope = slope;
                for (y, &x) in y.iter_mut().zip(x) {
                    let z = a.mul_add(x, b);
                    y.write(leaky1(z, neg_slope));
                }
            })
        } else {
            vec![]
        };
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
        let (n, c, s) = ncs(x.dims());
        let gv = gamma.to_vec1::<f32>()?;
        let bv = beta.to_vec1::<f32>()?;
        let slope = self.slope;
        let (dx, dgamma, dbeta) = with_slice(x, self.name(), |x| {
            with_slice(grad, self.name(), |dy| {
                if s == 0 {
                    return (vec![], vec![0f32; c], vec![0f32; c]);
                }
                // pass 1: per plane sum(dz) and sum(dz * xhat)
                let sums: Vec<(f64, f64)> = x
                    .par_chunks(s)
                    .zip(dy.par_chunks(s))
                    .enumerate()
                    .map(|(p, (x, dy))| {
                        let ch = p % c;
                        let k = self.stat(p, c);
                        let (m, is) = (self.mean[k], self.invstd[k]);
                        let a = gv[ch] * is;
                        let b = bv[ch] - m * a;
                        // a local copy: a register, not a load through the capture per element
                        let neg_slope = slope;
                        let mut sdz = 0f64;
                        let mut sdzx = 0f64;
                        // 16 f32 lanes per step (one AVX-512 register, two AVX2
                        // ones), with a branch-free slope select so that the
                        // loop vectorises;
                        // f32 partial sums over 4096 values, then f64.
                        for (xc, gc) in x.chunks(4096).zip(dy.chunks(4096)) {
                            let mut acc = [0f32; 16];
                            let mut accx = [0f32; 16];
                            let (xs, gs) = (xc.chunks_exact(16), gc.chunks_exact(16));
                            let (xr, gr) = (xs.remainder(), gs.remainder());
                            for (xi, gi) in xs.zip(gs) {
                                let xi: &[f32; 16] = xi.try_into().expect("16 lanes");
                                let gi: &[f32; 16] = gi.try_into().expect("16 lanes");
                                for i in 0..16 {
                                    let z = a.mul_add(xi[i], b);
                                    let f = leaky_factor(z, neg_slope);
                                    let dz = gi[i] * f;
                                    acc[i] += dz;
                                    accx[i] += dz * (xi[i] - m);
                                }
                            }
                            for (i, (&xv, &gv)) in xr.iter().zip(gr).enumerate() {
                                let z = a.mul_add(xv, b);
                                let dz = gv * leaky_factor(z, neg_slope);
                                acc[i] += dz;
                                accx[i] += dz * (xv - m);
                            }
                            sdz += acc.iter().sum::<f32>() as f64;
                            sdzx += accx.iter().sum::<f32>() as f64;
                        }
                        (sdz, sdzx * is as f64)
                    })
                    .collect();
                let mut dgamma = vec![0f32; c];
                let mut dbeta = vec![0f32; c];
                for ch in 0..c {
                    let (mut a, mut b) = (0f64, 0f64);
                    for b_ in 0..n {
                        a += sums[b_ * c + ch].1;
                        b += sums[b_ * c + ch].0;
                    }
                    dgamma[ch] = a as f32;
                    dbeta[ch] = b as f32;
                }
                // per-statistic means of gamma * dz and gamma * dz * xhat
                // (instance and group modes: the statistics' own gradient)
                let per_stat: Vec<(f32, f32)> = match self.mode {
                    Mode::Group(_) => {
                        let k_count = self.mean.len();
                        let mut acc = vec![(0f64, 0f64); k_count];
                        for (p, &(sdz, sdzx)) in sums.iter().enumerate() {
                            let g = gv[p % c] as f64;
                            let a = &mut acc[self.stat(p, c)];
                            a.0 += g * sdz;
                            a.1 += g * sdzx;
                        }
                        let cnt = (n * c * s / k_count) as f64;
                        acc.iter()
                            .map(|&(a, b)| ((a / cnt) as f32, (b / cnt) as f32))
                            .collect()
                    }
                    _ => vec![],
                };
                // pass 2: input gradient
                let mode = self.mode;
                let dx = par_fill(x.len(), s, |p, dx| {
                    let (x, dy) = (&x[p * s..(p + 1) * s], &dy[p * s..(p + 1) * s]);
                    let ch = p % c;
                    let k = self.stat(p, c);
                    let (m, is) = (self.mean[k], self.invstd[k]);
                    let a = gv[ch] * is;
                    let b = bv[ch] - m * a;
                    // dx = is * (gamma dz - mean(gamma dz) - xhat mean(gamma dz xhat)),
                    // the means over the elements that share the statistic
                    let (m1, m2) = match mode {
                        Mode::BatchEval => (0.0, 0.0),
                        Mode::BatchTrain => {
                            let cnt = (n * s) as f64;
                            (
                                (gv[ch] as f64 * dbeta[ch] as f64 / cnt) as f32,
                                (gv[ch] as f64 * dgamma[ch] as f64 / cnt) as f32,
                            )
                        }
                        Mode::Group(_) => per_stat[k],
                    };
                    let (c1, c2) = (is * m1, is * m2);
                    // a local copy: a register, not a load through the capture per element
                    let neg_slope = slope;
                    for ((d, &xv), &g) in dx.iter_mut().zip(x).zip(dy) {
                        let z = a.mul_add(xv, b);
                        let dz = g * leaky_factor(z, neg_slope);
                        let xh = (xv - m) * is;
                        d.write(a * dz - c1 - xh * c2);
                    }
                });
                (dx, dgamma, dbeta)
            })
        })??;
        let dx = from_vec(dx, x.shape())?;
        let dgamma = from_vec(dgamma, gamma.shape())?;
        let dbeta = from_vec(dbeta, beta.shape())?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

fn check(x: &Tensor, params: &[(&str, &Tensor)], op: &str) -> Result<usize> {
    if x.rank() < 2 {
        candle_core::bail!("{op}: expected [N, C, ...], got {:?}", x.dims());
    }
    let c = x.dim(1)?;
    for (name, t) in params {
        if t.dims() != [c] {
            candle_core::bail!("{op}: {name} must be [{c}], got {:?}", t.dims());
        }
    }
    Ok(c)
}

fn fast3(ts: &[&Tensor]) -> bool {
    ts.iter().all(|t| is_fast(t))
}

/// Per-channel shape `[1, C, 1, ...]` for broadcasting against `x`.
fn chan_shape(x: &Tensor) -> Vec<usize> {
    let mut s = vec![1usize; x.rank()];
    s[1] = x.dims()[1];
    s
}

/// Batch normalisation in training mode, fused with `act`:
/// `y = act(gamma * (x - mean) / sqrt(var + eps) + beta)` with `mean` and the
/// biased `var` taken over every axis but 1 of `x = [N, C, ...]`.
///
/// Returns `(y, batch_mean, batch_var_unbiased)`; the two `[C]` statistics are
/// detached (no gradient) and are meant for updating running statistics
/// (`running = (1 - momentum) * running + momentum * batch`, as in PyTorch).
/// The gradient of `y` flows to `x`, `gamma` and `beta`, through the batch
/// statistics.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    act: Activation,
) -> Result<(Tensor, Tensor, Tensor)> {
    let c = check(x, &[("gamma", gamma), ("beta", beta)], "batch_norm_train")?;
    let (n, _, s) = ncs(x.dims());
    let count = n * s;
    if count == 0 {
        candle_core::bail!("batch_norm_train: empty input {:?}", x.dims());
    }
    let unbias = if count > 1 {
        count as f64 / (count - 1) as f64
    } else {
        1.0
    };
    if fast3(&[x, gamma, beta]) {
        let x = x.contiguous()?;
        let (mean, var) = with_slice(&x, "batch_norm_train", |xs| {
            let moments: Vec<(f64, f64)> = xs.par_chunks(s.max(1)).map(plane_moments).collect();
            let mut mean = vec![0f64; c];
            let mut var = vec![0f64; c];
            for ch in 0..c {
                let (cnt, m, q) = combine(
                    (0..n).map(|b| (s as f64, moments[b * c + ch].0, moments[b * c + ch].1)),
                );
                mean[ch] = m;
                var[ch] = q / cnt;
            }
            (mean, var)
        })?;
        let op = NormOp {
            mode: Mode::BatchTrain,
            slope: act.neg_slope(),
            mean: Arc::new(mean.iter().map(|&m| m as f32).collect()),
            invstd: Arc::new(
                var.iter()
                    .map(|&v| (1.0 / (v + eps).sqrt()) as f32)
                    .collect(),
            ),
        };
        let y = x.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
        let bm = Tensor::new(
            mean.iter().map(|&m| m as f32).collect::<Vec<_>>(),
            x.device(),
        )?;
        let bv = Tensor::new(
            var.iter().map(|&v| (v * unbias) as f32).collect::<Vec<_>>(),
            x.device(),
        )?;
        return Ok((y, bm, bv));
    }
    // composition with candle ops
    let cs = chan_shape(x);
    let xt = x.transpose(0, 1)?.flatten_from(1)?; // [C, N*S]
    let mean = xt.mean_keepdim(1)?; // [C,1]
    let xc = xt.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(1)?;
    let mean_b = mean.reshape(cs.clone())?;
    let var_b = var.reshape(cs.clone())?;
    let y = x
        .broadcast_sub(&mean_b)?
        .broadcast_div(&(var_b + eps)?.sqrt()?)?
        .broadcast_mul(&gamma.reshape(cs.clone())?)?
        .broadcast_add(&beta.reshape(cs)?)?;
    let y = activate(&y, act)?;
    let bm = mean.flatten_all()?.detach();
    let bv = (var.flatten_all()? * unbias)?.detach();
    Ok((y, bm, bv))
}

/// Batch normalisation in inference mode, fused with `act`:
/// `y = act(gamma * (x - running_mean) / sqrt(running_var + eps) + beta)`.
/// The gradient flows to `x`, `gamma` and `beta` (not to the running statistics).
pub fn batch_norm_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
    act: Activation,
) -> Result<Tensor> {
    check(
        x,
        &[
            ("gamma", gamma),
            ("beta", beta),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ],
        "batch_norm_eval",
    )?;
    if fast3(&[x, gamma, beta]) {
        let mean = running_mean
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        let var = running_var
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        let op = NormOp {
            mode: Mode::BatchEval,
            slope: act.neg_slope(),
            mean: Arc::new(mean),
            invstd: Arc::new(
                var.iter()
                    .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
                    .collect(),
            ),
        };
        return x
            .contiguous()?
            .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op);
    }
    let cs = chan_shape(x);
    let rm = running_mean.detach().reshape(cs.clone())?;
    let rv = running_var.detach().reshape(cs.clone())?;
    let y = x
        .broadcast_sub(&rm)?
        .broadcast_div(&(rv + eps)?.sqrt()?)?
        .broadcast_mul(&gamma.reshape(cs.clone())?)?
        .broadcast_add(&beta.reshape(cs)?)?;
    activate(&y, act)
}

/// Instance normalisation (statistics per sample and channel over the spatial
/// axes, biased variance, no running statistics, as PyTorch's `InstanceNorm`
/// with `track_running_stats=False`), with optional affine `gamma`/`beta`
/// (`[C]`; `None` means 1 and 0), fused with `act`.
pub fn instance_norm(
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    eps: f64,
    act: Activation,
) -> Result<Tensor> {
    let c = check(x, &[], "instance_norm")?;
    grouped_norm(x, c, gamma, beta, eps, act, "instance_norm")
}

/// Group normalisation (PyTorch `nn.GroupNorm`): the `C` channels of `x =
/// [N, C, ...]` split into `groups` runs of `C / groups` consecutive
/// channels, each normalised per sample over its channels and spatial axes
/// (biased variance), then scaled and shifted per channel by the optional
/// affine `gamma`/`beta` (`[C]`; `None` means 1 and 0), fused with `act`.
/// `groups == C` is instance normalisation, `groups == 1` layer
/// normalisation over `[C, ...]`. The gradient flows to `x`, `gamma` and
/// `beta`, through the statistics.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    eps: f64,
    act: Activation,
) -> Result<Tensor> {
    grouped_norm(x, groups, gamma, beta, eps, act, "group_norm")
}

/// Group normalisation for [`group_norm`] and [`instance_norm`] (`groups ==
/// C`); `op` names the caller in errors.
fn grouped_norm(
    x: &Tensor,
    groups: usize,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    eps: f64,
    act: Activation,
    op: &str,
) -> Result<Tensor> {
    let c = check(x, &[], op)?;
    if groups == 0 || c % groups != 0 {
        candle_core::bail!("{op}: {c} channels are not divisible into {groups} groups");
    }
    let ones;
    let zeros;
    let gamma = match gamma {
        Some(g) => g,
        None => {
            ones = Tensor::ones(c, x.dtype(), x.device())?;
            &ones
        }
    };
    let beta = match beta {
        Some(b) => b,
        None => {
            zeros = Tensor::zeros(c, x.dtype(), x.device())?;
            &zeros
        }
    };
    check(x, &[("gamma", gamma), ("beta", beta)], op)?;
    let (n, _, s) = ncs(x.dims());
    let block = c / groups * s;
    if block == 0 {
        candle_core::bail!("{op}: empty spatial size {:?}", x.dims());
    }
    if fast3(&[x, gamma, beta]) {
        let x = x.contiguous()?;
        let (mean, invstd) = with_slice(&x, op, |xs| {
            xs.par_chunks(block)
                .map(|p| {
                    let (m, q) = plane_moments(p);
                    (m as f32, (1.0 / (q / block as f64 + eps).sqrt()) as f32)
                })
                .unzip::<f32, f32, Vec<f32>, Vec<f32>>()
        })?;
        let kernel = NormOp {
            mode: Mode::Group(groups),
            slope: act.neg_slope(),
            mean: Arc::new(mean),
            invstd: Arc::new(invstd),
        };
        return x.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, kernel);
    }
    let xf = x.reshape((n, groups, block))?;
    let mean = xf.mean_keepdim(2)?;
    let xc = xf.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(2)?;
    let y = xc
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .reshape((n, c, s))?
        .broadcast_mul(&gamma.reshape((1, c, 1))?)?
        .broadcast_add(&beta.reshape((1, c, 1))?)?
        .reshape(x.shape())?;
    activate(&y, act)
}
