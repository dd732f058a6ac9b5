//! Max and average pooling in 2D (`[N, C, H, W]`) and 3D (`[N, C, D, H, W]`),
//! without padding, with forward and backward.
//!
//! Kernel and stride are given in spatial axis order (`[kh, kw]` or
//! `[kd, kh, kw]`). The output size along an axis of length `L` is
//! `(L - k) / s + 1` (PyTorch's `ceil_mode=False`). The CPU f32 path works on
//! one `(n, c)` plane per rayon task; the max-pool backward recomputes the
//! position of each window's maximum (the first one in scan order, as PyTorch)
//! instead of storing indices.

use crate::activation::{cpu_slice, from_vec, is_fast, with_slice};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug)]
struct Geom {
    /// input spatial size (d, h, w)
    i: [usize; 3],
    /// output spatial size
    o: [usize; 3],
    k: [usize; 3],
    s: [usize; 3],
}

impl Geom {
    fn new(dims: &[usize], k: &[usize], s: &[usize], op: &str) -> Result<(usize, Self)> {
        let sp = dims.len() - 2;
        if k.len() != sp || s.len() != sp {
            candle_core::bail!("{op}: kernel/stride rank does not match input {dims:?}");
        }
        let mut g = Geom {
            i: [1; 3],
            o: [1; 3],
            k: [1; 3],
            s: [1; 3],
        };
        for a in 0..sp {
            let j = 3 - sp + a;
            let (l, kk, ss) = (dims[2 + a], k[a], s[a]);
            if kk == 0 || ss == 0 {
                candle_core::bail!("{op}: kernel and stride must be positive, got {k:?} {s:?}");
            }
            if l < kk {
                candle_core::bail!("{op}: input {dims:?} smaller than kernel {k:?}");
            }
            g.i[j] = l;
            g.k[j] = kk;
            g.s[j] = ss;
            g.o[j] = (l - kk) / ss + 1;
        }
        Ok((dims[0] * dims[1], g))
    }
    fn in_plane(&self) -> usize {
        self.i.iter().product()
    }
    fn out_plane(&self) -> usize {
        self.o.iter().product()
    }
    fn out_dims(&self, dims: &[usize]) -> Vec<usize> {
        let sp = dims.len() - 2;
        let mut d = dims[..2].to_vec();
        d.extend_from_slice(&self.o[3 - sp..]);
        d
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Max,
    Avg,
}

struct PoolOp {
    kind: Kind,
    k: Vec<usize>,
    s: Vec<usize>,
}

/// One step of PyTorch's max-pool choice over a window visited in row-major
/// order: `v` (at index `j`) replaces the best so far when it is larger or
/// NaN, or when it is the first value. Returns true once a NaN is chosen
/// (nothing after it can win).
#[inline(always)]
fn argmax_step(best: &mut f32, arg: &mut usize, v: f32, j: usize) -> bool {
    if v > *best || v.is_nan() || *arg == usize::MAX {
        *best = v;
        *arg = j;
    }
    v.is_nan()
}

/// Index (within the plane) of the first maximum of the window at output `(od, oh, ow)`.
#[inline(always)]
fn window_argmax(x: &[f32], g: &Geom, od: usize, oh: usize, ow: usize) -> (usize, f32) {
    let [_, ih, iw] = g.i;
    let mut best = f32::NEG_INFINITY;
    let mut arg = usize::MAX;
    for kd in 0..g.k[0] {
        for kh in 0..g.k[1] {
            let row = ((od * g.s[0] + kd) * ih + oh * g.s[1] + kh) * iw + ow * g.s[2];
            for (kw, &v) in x[row..row + g.k[2]].iter().enumerate() {
                // NaN propagates, as in PyTorch
                if argmax_step(&mut best, &mut arg, v, row + kw) {
                    return (arg, v);
                }
            }
        }
    }
    (arg, best)
}

fn pool_plane_fwd(kind: Kind, g: &Geom, x: &[f32], y: &mut [f32]) {
    let [od_n, oh_n, ow_n] = g.o;
    let [_, ih, iw] = g.i;
    let inv = 1.0 / (g.k.iter().product::<usize>() as f32);
    // fast path: 2x2 (x1) windows with stride 2 in a 2D plane
    if kind == Kind::Max && g.k == [1, 2, 2] && g.s == [1, 2, 2] {
        for oh in 0..oh_n {
            let r0 = &x[2 * oh * iw..2 * oh * iw + iw];
            let r1 = &x[(2 * oh + 1) * iw..(2 * oh + 1) * iw + iw];
            let yr = &mut y[oh * ow_n..(oh + 1) * ow_n];
            for (ow, yv) in yr.iter_mut().enumerate() {
                let a = r0[2 * ow];
                let b = r0[2 * ow + 1];
                let c = r1[2 * ow];
                let d = r1[2 * ow + 1];
                let m = if b > a { b } else { a };
                let m = if c > m { c } else { m };
                let m = if d > m { d } else { m };
                // `|`, not `||`: no branches, so that the row loop vectorises
                *yv = if a.is_nan() | b.is_nan() | c.is_nan() | d.is_nan() {
                    f32::NAN
                } else {
                    m
                };
            }
        }
        return;
    }
    for od in 0..od_n {
        for oh in 0..oh_n {
            let yr = &mut y[(od * oh_n + oh) * ow_n..(od * oh_n + oh + 1) * ow_n];
            match kind {
                Kind::Max => {
                    for (ow, yv) in yr.iter_mut().enumerate() {
                        *yv = window_argmax(x, g, od, oh, ow).1;
                    }
                }
                Kind::Avg => {
                    for (ow, yv) in yr.iter_mut().enumerate() {
                        let mut acc = 0f32;
                        for kd in 0..g.k[0] {
                            for kh in 0..g.k[1] {
                                let row =
                                    ((od * g.s[0] + kd) * ih + oh * g.s[1] + kh) * iw + ow * g.s[2];
                                acc += x[row..row + g.k[2]].iter().sum::<f32>();
                            }
                        }
                        *yv = acc * inv;
                    }
                }
            }
        }
    }
}

fn pool_plane_bwd(kind: Kind, g: &Geom, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let [od_n, oh_n, ow_n] = g.o;
    let [_, ih, iw] = g.i;
    let inv = 1.0 / (g.k.iter().product::<usize>() as f32);
    // fast path: 2x2 (x1) windows with stride 2 in a 2D plane, the same
    // choice as `window_argmax` (`argmax_step`) without its general index
    // arithmetic
    if kind == Kind::Max && g.k == [1, 2, 2] && g.s == [1, 2, 2] {
        for oh in 0..oh_n {
            let (r0, r1) = (2 * oh * iw, (2 * oh + 1) * iw);
            for ow in 0..ow_n {
                let (mut best, mut arg) = (f32::NEG_INFINITY, usize::MAX);
                for j in [r0 + 2 * ow, r0 + 2 * ow + 1, r1 + 2 * ow, r1 + 2 * ow + 1] {
                    if argmax_step(&mut best, &mut arg, x[j], j) {
                        break;
                    }
                }
                dx[arg] += dy[oh * ow_n + ow];
            }
        }
        return;
    }
    for od in 0..od_n {
        for oh in 0..oh_n {
            let base = (od * oh_n + oh) * ow_n;
            for ow in 0..ow_n {
                let gv = dy[base + ow];
                match kind {
                    Kind::Max => {
                        let (a, _) = window_argmax(x, g, od, oh, ow);
                        dx[a] += gv;
                    }
                    Kind::Avg => {
                        let gv = gv * inv;
                        for kd in 0..g.k[0] {
                            for kh in 0..g.k[1] {
                                let row =
                                    ((od * g.s[0] + kd) * ih + oh * g.s[1] + kh) * iw + ow * g.s[2];
                                for v in &mut dx[row..row + g.k[2]] {
                                    *v += gv;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

impl CustomOp1 for PoolOp {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Max => "medseg-max-pool",
            Kind::Avg => "medseg-avg-pool",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, self.name())?;
        let (_, g) = Geom::new(l.dims(), &self.k, &self.s, self.name())?;
        let (ip, op) = (g.in_plane(), g.out_plane());
        let mut y = vec![0f32; x.len() / ip * op];
        y.par_chunks_mut(op)
            .zip(x.par_chunks(ip))
            .for_each(|(y, x)| pool_plane_fwd(self.kind, &g, x, y));
        Ok((CpuStorage::F32(y), Shape::from(g.out_dims(l.dims()))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (_, g) = Geom::new(arg.dims(), &self.k, &self.s, self.name())?;
        let (ip, op) = (g.in_plane(), g.out_plane());
        let kind = self.kind;
        let dx = with_slice(arg, self.name(), |x| {
            with_slice(grad, self.name(), |dy| {
                let mut dx = vec![0f32; x.len()];
                dx.par_chunks_mut(ip)
                    .zip(x.par_chunks(ip).zip(dy.par_chunks(op)))
                    .for_each(|(dx, (x, dy))| pool_plane_bwd(kind, &g, x, dy, dx));
                dx
            })
        })??;
        Ok(Some(from_vec(dx, arg.shape())?))
    }
}

fn pool(x: &Tensor, kind: Kind, k: &[usize], s: &[usize]) -> Result<Tensor> {
    let name = match kind {
        Kind::Max => "max_pool",
        Kind::Avg => "avg_pool",
    };
    if x.rank() != k.len() + 2 {
        candle_core::bail!(
            "{name}: expected a rank-{} input, got {:?}",
            k.len() + 2,
            x.dims()
        );
    }
    Geom::new(x.dims(), k, s, name)?;
    if is_fast(x) {
        return x.contiguous()?.apply_op1(PoolOp {
            kind,
            k: k.to_vec(),
            s: s.to_vec(),
        });
    }
    pool_candle(x, kind, k, s)
}

/// Pooling composed from candle ops on `x`'s device (any device, dtype and
/// rank). candle's own `max_pool2d`/`avg_pool2d` are not used: their
/// gradients are wrong for max pooling (scaled by the window size) and for
/// sizes that the stride does not divide, and they have no 3-D version.
/// Windows that do not overlap (`kernel == stride`) are split off as axes
/// and reduced; overlapping ones are gathered tap by tap. Ties in a max-pool
/// window share the gradient (candle's `max`), where the CPU kernel gives
/// it to the first maximum as PyTorch does.
fn pool_candle(x: &Tensor, kind: Kind, k: &[usize], s: &[usize]) -> Result<Tensor> {
    let nd = k.len();
    let out = (0..nd)
        .map(|a| Ok((x.dim(2 + a)? - k[a]) / s[a] + 1))
        .collect::<Result<Vec<usize>>>()?;
    let reduce = |t: Tensor, dim: usize| match kind {
        Kind::Max => t.max(dim),
        Kind::Avg => t.mean(dim),
    };
    if k == s {
        let mut t = x.clone();
        let mut shape = x.dims()[..2].to_vec();
        for a in 0..nd {
            t = t.narrow(2 + a, 0, out[a] * k[a])?;
            shape.extend([out[a], k[a]]);
        }
        let mut t = t.contiguous()?.reshape(shape)?;
        for a in (0..nd).rev() {
            t = reduce(t, 3 + 2 * a)?;
        }
        return Ok(t);
    }
    let taps: usize = k.iter().product();
    let mut gathered = Vec::with_capacity(taps);
    for tap in 0..taps {
        let mut rem = tap;
        let mut t = x.clone();
        for a in (0..nd).rev() {
            let off = rem % k[a];
            rem /= k[a];
            let idx: Vec<u32> = (0..out[a]).map(|o| (o * s[a] + off) as u32).collect();
            t = t.index_select(&Tensor::new(idx, x.device())?, 2 + a)?;
        }
        gathered.push(t);
    }
    reduce(Tensor::stack(&gathered, 2 + nd)?, 2 + nd)
}

/// 2D max pooling of `[N, C, H, W]`, kernel and stride `[h, w]`, no padding.
pub fn max_pool2d(x: &Tensor, kernel: [usize; 2], stride: [usize; 2]) -> Result<Tensor> {
    pool(x, Kind::Max, &kernel, &stride)
}

/// 3D max pooling of `[N, C, D, H, W]`, kernel and stride `[d, h, w]`, no padding.
pub fn max_pool3d(x: &Tensor, kernel: [usize; 3], stride: [usize; 3]) -> Result<Tensor> {
    pool(x, Kind::Max, &kernel, &stride)
}

/// 2D average pooling of `[N, C, H, W]`, kernel and stride `[h, w]`, no padding.
pub fn avg_pool2d(x: &Tensor, kernel: [usize; 2], stride: [usize; 2]) -> Result<Tensor> {
    pool(x, Kind::Avg, &kernel, &stride)
}

/// 3D average pooling of `[N, C, D, H, W]`, kernel and stride `[d, h, w]`, no padding.
pub fn avg_pool3d(x: &Tensor, kernel: [usize; 3], stride: [usize; 3]) -> Result<Tensor> {
    pool(x, Kind::Avg, &kernel, &stride)
}
