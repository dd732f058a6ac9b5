//! Affine sampling grids and bilinear/trilinear grid sampling with PyTorch's
//! semantics (`F.affine_grid` and `F.grid_sample(mode="bilinear",
//! padding_mode="zeros")`, `align_corners` both ways), differentiable with
//! respect to the input and the grid: what a spatial transformer network needs.
//!
//! Layouts follow PyTorch: the input is channel-first, `[N, C, H, W]` (2D) or
//! `[N, C, D, H, W]` (3D); a grid is `[N, Ho, Wo, 2]` or `[N, Do, Ho, Wo, 3]`
//! whose last axis holds normalised coordinates in *reverse* axis order,
//! `(x, y)` or `(x, y, z)`, with `x` along W, `y` along H and `z` along D, and
//! `-1` / `+1` the first / last pixel (centres with `align_corners = true`,
//! outer edges otherwise). Samples that fall outside the input read zeros.
//!
//! [`affine_grid`] is linear in `theta` and is composed from candle ops.
//! [`grid_sample`] runs a CPU f32 kernel: the corner indices and weights of
//! an output point are computed where they are used (once per point for
//! all channels in the forward and the grid gradient, once per plane in the
//! scattered input gradient), so no per-point table is stored. On other devices and dtypes it composes the same computation
//! from candle ops (`floor`, `gather`), also differentiable in both
//! arguments.

use crate::activation::{from_vec, is_fast, with_slice, SyncPtr};
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Output points per parallel task (at least).
const POINTS_PER_TASK: usize = 1024;

/// Normalised coordinate `c` in `[-1, 1]` to a source index along an axis
/// of `size` pixels: `u = c * m + (size - 1) / 2`, with `m` from [`scale`].
#[inline(always)]
fn unnormalize(c: f32, size: usize, align_corners: bool) -> f32 {
    let s = size as f32;
    if align_corners {
        (c + 1.0) / 2.0 * (s - 1.0)
    } else {
        ((c + 1.0) * s - 1.0) / 2.0
    }
}

/// `du / dc` of [`unnormalize`].
#[inline(always)]
fn scale(size: usize, align_corners: bool) -> f32 {
    if align_corners {
        (size as f32 - 1.0) / 2.0
    } else {
        size as f32 / 2.0
    }
}

/// The corners one output point reads: flat indices into an input plane,
/// their interpolation weights, the fractional position along each spatial
/// axis (outermost first) and which corners lie inside the input.
#[derive(Clone, Copy, Default)]
struct Tap {
    idx: [u32; 8],
    w: [f32; 8],
    frac: [f32; 3],
    valid: u8,
}

/// Shapes of one call: spatial sizes of input and output (outermost first,
/// `s` of them, 2 or 3), batch and channels.
struct Geom {
    s: usize,
    n: usize,
    c: usize,
    ins: [usize; 3],
    outs: [usize; 3],
    align_corners: bool,
}

impl Geom {
    fn new(x: &[usize], g: &[usize], align_corners: bool) -> Result<Self> {
        if x.len() != 4 && x.len() != 5 {
            candle_core::bail!(
                "grid_sample: input must be [N, C, H, W] or [N, C, D, H, W], got {x:?}"
            );
        }
        let s = x.len() - 2;
        if g.len() != x.len() || g[0] != x[0] || g[g.len() - 1] != s {
            candle_core::bail!(
                "grid_sample: grid must be [N, {}..., {s}] for input {x:?}, got {g:?}",
                if s == 2 { "Ho, Wo" } else { "Do, Ho, Wo" }
            );
        }
        let mut ins = [1; 3];
        let mut outs = [1; 3];
        ins[..s].copy_from_slice(&x[2..]);
        outs[..s].copy_from_slice(&g[1..1 + s]);
        if ins.contains(&0) {
            candle_core::bail!("grid_sample: empty input {x:?}");
        }
        if ins.iter().product::<usize>() > u32::MAX as usize {
            candle_core::bail!("grid_sample: input plane too large, {x:?}");
        }
        Ok(Geom {
            s,
            n: x[0],
            c: x[1],
            ins,
            outs,
            align_corners,
        })
    }
    fn in_plane(&self) -> usize {
        self.ins.iter().product()
    }
    fn out_plane(&self) -> usize {
        self.outs.iter().product()
    }
    fn out_dims(&self) -> Vec<usize> {
        let mut d = vec![self.n, self.c];
        d.extend_from_slice(&self.outs[..self.s]);
        d
    }

    /// The corners of the point `g` (`S` normalised coordinates, x first).
    #[inline(always)]
    fn tap<const S: usize>(&self, g: &[f32]) -> Tap {
        let s = S;
        let mut base = [0i64; 3];
        let mut frac = [0f32; 3];
        let mut t = Tap::default();
        for a in 0..s {
            let u = unnormalize(g[s - 1 - a], self.ins[a], self.align_corners);
            if !u.is_finite() {
                return t; // no corner is valid: reads zero, no gradient
            }
            let f = u.floor();
            base[a] = f as i64;
            frac[a] = u - f;
        }
        t.frac = frac;
        for k in 0..1usize << s {
            let mut off = 0i64;
            let mut w = 1f32;
            let mut ok = true;
            for a in 0..s {
                let bit = (k >> (s - 1 - a)) & 1;
                let i = base[a] + bit as i64;
                ok &= i >= 0 && i < self.ins[a] as i64;
                off = off * self.ins[a] as i64 + i;
                w *= if bit == 1 { frac[a] } else { 1.0 - frac[a] };
            }
            if ok {
                t.idx[k] = off as u32;
                t.w[k] = w;
                t.valid |= 1 << k;
            }
        }
        t
    }

    /// `y[n, c, p] = sum_k w_k x[n, c, idx_k]`; one parallel task per run of
    /// output points, the corners computed once per point for all channels.
    fn forward(&self, x: &[f32], grid: &[f32]) -> Vec<f32> {
        match self.s {
            2 => self.forward_s::<2>(x, grid),
            _ => self.forward_s::<3>(x, grid),
        }
    }

    fn forward_s<const S: usize>(&self, x: &[f32], grid: &[f32]) -> Vec<f32> {
        let (ip, op, c, s) = (self.in_plane(), self.out_plane(), self.c, S);
        let corners = 1usize << s;
        let mut y = vec![0f32; self.n * c * op];
        let yp = SyncPtr(y.as_mut_ptr());
        (0..self.n * op)
            .into_par_iter()
            .with_min_len(POINTS_PER_TASK)
            .for_each(|np| {
                let t = self.tap::<S>(&grid[np * s..(np + 1) * s]);
                if t.valid == 0 {
                    return;
                }
                let (b, p) = (np / op, np % op);
                for ch in 0..c {
                    let x = &x[(b * c + ch) * ip..(b * c + ch + 1) * ip];
                    let mut v = 0f32;
                    for k in 0..corners {
                        if t.valid >> k & 1 == 1 {
                            v += t.w[k] * x[t.idx[k] as usize];
                        }
                    }
                    // SAFETY: each (n, c, p) is written by the task of (n, p) only,
                    // and the index is inside y (n * c * op elements).
                    unsafe { *yp.get().add((b * c + ch) * op + p) = v };
                }
            });
        y
    }

    /// Gradients of `sum(y * dy)` with respect to the input (one task per
    /// `(n, c)` plane, scattering) and the grid (one task per run of points).
    fn backward(&self, x: &[f32], grid: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
        match self.s {
            2 => self.backward_s::<2>(x, grid, dy),
            _ => self.backward_s::<3>(x, grid, dy),
        }
    }

    fn backward_s<const S: usize>(
        &self,
        x: &[f32],
        grid: &[f32],
        dy: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let (ip, op, c, s) = (self.in_plane(), self.out_plane(), self.c, S);
        let corners = 1usize << s;
        let mut dx = vec![0f32; self.n * c * ip];
        dx.par_chunks_mut(ip)
            .zip(dy.par_chunks(op))
            .enumerate()
            .for_each(|(nc, (dx, dy))| {
                let g0 = nc / c * op * s;
                for (p, &g) in dy.iter().enumerate() {
                    if g == 0.0 {
                        continue;
                    }
                    let t = self.tap::<S>(&grid[g0 + p * s..g0 + (p + 1) * s]);
                    for k in 0..corners {
                        if t.valid >> k & 1 == 1 {
                            dx[t.idx[k] as usize] += t.w[k] * g;
                        }
                    }
                }
            });
        let mut mult = [0f32; 3];
        for (a, m) in mult.iter_mut().enumerate().take(s) {
            *m = scale(self.ins[a], self.align_corners);
        }
        let mut dgrid = vec![0f32; self.n * op * s];
        dgrid
            .par_chunks_mut(s)
            .zip(grid.par_chunks(s))
            .enumerate()
            .with_min_len(POINTS_PER_TASK)
            .for_each(|(np, (dg, gp))| {
                let t = self.tap::<S>(gp);
                if t.valid == 0 {
                    return;
                }
                let (n, p) = (np / op, np % op);
                // d weight_k / d frac_a for every corner and axis
                let mut dw = [[0f32; 3]; 8];
                for (k, dwk) in dw.iter_mut().enumerate().take(corners) {
                    for (a, d) in dwk.iter_mut().enumerate().take(s) {
                        let mut v = 1f32;
                        for b in 0..s {
                            let bit = (k >> (s - 1 - b)) & 1;
                            if b == a {
                                v *= if bit == 1 { 1.0 } else { -1.0 };
                            } else {
                                v *= if bit == 1 { t.frac[b] } else { 1.0 - t.frac[b] };
                            }
                        }
                        *d = v;
                    }
                }
                let mut acc = [0f32; 3];
                for ch in 0..c {
                    let plane = (n * c + ch) * ip;
                    let g = dy[(n * c + ch) * op + p];
                    if g == 0.0 {
                        continue;
                    }
                    for (k, dwk) in dw.iter().enumerate().take(corners) {
                        if t.valid >> k & 1 == 1 {
                            let v = x[plane + t.idx[k] as usize] * g;
                            for a in 0..s {
                                acc[a] += v * dwk[a];
                            }
                        }
                    }
                }
                for a in 0..s {
                    dg[s - 1 - a] = acc[a] * mult[a];
                }
            });
        (dx, dgrid)
    }
}

struct GridSampleOp {
    align_corners: bool,
}

impl CustomOp2 for GridSampleOp {
    fn name(&self) -> &'static str {
        "medseg-grid-sample"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = crate::activation::cpu_slice(s1, l1, self.name())?;
        let g = crate::activation::cpu_slice(s2, l2, self.name())?;
        let geom = Geom::new(l1.dims(), l2.dims(), self.align_corners)?;
        let y = geom.forward(x, g);
        Ok((CpuStorage::F32(y), Shape::from(geom.out_dims())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        grid: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let geom = Geom::new(x.dims(), grid.dims(), self.align_corners)?;
        let (dx, dg) = with_slice(x, self.name(), |x| {
            with_slice(grid, self.name(), |g| {
                with_slice(grad, self.name(), |dy| geom.backward(x, g, dy))
            })
        })???;
        Ok((
            Some(from_vec(dx, x.shape())?),
            Some(from_vec(dg, grid.shape())?),
        ))
    }
}

/// Samples `input` at the points of `grid` by bilinear (2D) or trilinear
/// (3D) interpolation with zero padding, as PyTorch's
/// `F.grid_sample(input, grid, mode="bilinear", padding_mode="zeros",
/// align_corners=align_corners)`.
///
/// `input` is `[N, C, H, W]` and `grid` `[N, Ho, Wo, 2]`, giving
/// `[N, C, Ho, Wo]`; or `input` `[N, C, D, H, W]` and `grid`
/// `[N, Do, Ho, Wo, 3]`, giving `[N, C, Do, Ho, Wo]`. The grid's last axis
/// holds `(x, y)` / `(x, y, z)`, normalised to `[-1, 1]` along W, H, D (in
/// that order, the reverse of the array's axes). With `align_corners = true`
/// `-1` and `+1` are the centres of the first and last pixels, otherwise
/// their outer edges. Corners outside the input read zero; a non-finite
/// coordinate gives zero on the CPU f32 path.
///
/// Differentiable with respect to both `input` and `grid` (the grid gradient
/// is that of the interpolation weights, zero where a point lies exactly on
/// a pixel boundary only from one side, as in PyTorch).
pub fn grid_sample(input: &Tensor, grid: &Tensor, align_corners: bool) -> Result<Tensor> {
    Geom::new(input.dims(), grid.dims(), align_corners)?;
    if grid.dtype() != input.dtype() {
        candle_core::bail!(
            "grid_sample: input is {:?} but grid is {:?}",
            input.dtype(),
            grid.dtype()
        );
    }
    if is_fast(input) && is_fast(grid) {
        return input
            .contiguous()?
            .apply_op2(&grid.contiguous()?, GridSampleOp { align_corners });
    }
    grid_sample_candle(input, grid, align_corners)
}

/// [`grid_sample`] composed from candle ops (any device and float dtype).
fn grid_sample_candle(input: &Tensor, grid: &Tensor, align_corners: bool) -> Result<Tensor> {
    let geom = Geom::new(input.dims(), grid.dims(), align_corners)?;
    let (s, n, c) = (geom.s, geom.n, geom.c);
    let (ip, op) = (geom.in_plane(), geom.out_plane());
    let dtype = input.dtype();
    let x = input.reshape((n, c, ip))?;
    let g = grid.reshape((n, op, s))?;
    // per spatial axis (outermost first): source position u, its floor, fraction
    let mut fl = Vec::with_capacity(s);
    let mut fr = Vec::with_capacity(s);
    for a in 0..s {
        let size = geom.ins[a];
        let m = scale(size, align_corners) as f64;
        let u = (g.narrow(2, s - 1 - a, 1)?.squeeze(2)? * m)? + (size as f64 - 1.0) / 2.0;
        let u = u?;
        let f = u.detach().floor()?;
        fr.push((&u - &f)?);
        fl.push(f);
    }
    let mut y: Option<Tensor> = None;
    for k in 0..1usize << s {
        let mut w: Option<Tensor> = None;
        let mut off: Option<Tensor> = None;
        for a in 0..s {
            let size = geom.ins[a];
            let bit = (k >> (s - 1 - a)) & 1;
            let i = (&fl[a] + bit as f64)?;
            let inside = i
                .ge(0f64)?
                .mul(&i.le(size as f64 - 1.0)?)?
                .to_dtype(dtype)?;
            let wa = if bit == 1 {
                fr[a].clone()
            } else {
                fr[a].affine(-1.0, 1.0)?
            };
            let wa = (wa * inside)?;
            w = Some(match w {
                None => wa,
                Some(w) => (w * wa)?,
            });
            let ic = i.clamp(0f64, size as f64 - 1.0)?;
            off = Some(match off {
                None => ic,
                Some(o) => ((o * size as f64)? + ic)?,
            });
        }
        let (w, off) = (w.unwrap(), off.unwrap());
        let idx = off
            .to_dtype(DType::U32)?
            .unsqueeze(1)?
            .broadcast_as((n, c, op))?
            .contiguous()?;
        let v = x.gather(&idx, 2)?.broadcast_mul(&w.unsqueeze(1)?)?;
        y = Some(match y {
            None => v,
            Some(y) => (y + v)?,
        });
    }
    y.unwrap().reshape(geom.out_dims())
}

/// `steps` evenly spaced values from -1 to 1 as PyTorch's `affine_grid`
/// builds them (`0` when `steps == 1`), scaled by `(steps - 1) / steps`
/// without `align_corners`.
fn base_coords(steps: usize, align_corners: bool) -> Vec<f32> {
    if steps <= 1 {
        return vec![0.0; steps];
    }
    // torch.linspace: the first half from the start, the second from the end
    let step = 2.0f32 / (steps as f32 - 1.0);
    let half = steps / 2;
    let mut v: Vec<f32> = (0..steps)
        .map(|i| {
            if i < half {
                -1.0 + step * i as f32
            } else {
                1.0 - step * (steps - 1 - i) as f32
            }
        })
        .collect();
    if !align_corners {
        let f = (steps as f32 - 1.0) / steps as f32;
        v.iter_mut().for_each(|x| *x *= f);
    }
    v
}

/// The sampling grid of a batch of affine transforms, as PyTorch's
/// `F.affine_grid(theta, size, align_corners=align_corners)`.
///
/// 2D: `theta` is `[N, 2, 3]` and `size` is `[N, C, H, W]` (the shape of the
/// output to sample; `C` is ignored); the result is `[N, H, W, 2]`, the
/// point `theta @ (x, y, 1)` for every output pixel whose normalised
/// coordinates (`x` along W, `y` along H, `-1..1`) are those [`grid_sample`]
/// uses with the same `align_corners`. 3D: `theta` is `[N, 3, 4]`, `size`
/// `[N, C, D, H, W]`, the result `[N, D, H, W, 3]` of `theta @ (x, y, z, 1)`.
/// The identity `theta` (`[[1, 0, 0], [0, 1, 0]]`) with [`grid_sample`] and
/// the same `align_corners` reproduces the input.
///
/// Linear in `theta`, composed from candle ops on `theta`'s device and
/// dtype, hence differentiable with respect to `theta`.
pub fn affine_grid(theta: &Tensor, size: &[usize], align_corners: bool) -> Result<Tensor> {
    let s = match size.len() {
        4 => 2,
        5 => 3,
        _ => candle_core::bail!(
            "affine_grid: size must be [N, C, H, W] or [N, C, D, H, W], got {size:?}"
        ),
    };
    if theta.dims() != [size[0], s, s + 1] {
        candle_core::bail!(
            "affine_grid: theta must be [{}, {s}, {}] for size {size:?}, got {:?}",
            size[0],
            s + 1,
            theta.dims()
        );
    }
    let sp = &size[2..];
    let p: usize = sp.iter().product();
    // base points (x, y[, z], 1) for every output position, row-major
    let axes: Vec<Vec<f32>> = sp.iter().map(|&n| base_coords(n, align_corners)).collect();
    let mut base = Vec::with_capacity(p * (s + 1));
    let mut pos = vec![0usize; s];
    for _ in 0..p {
        for a in (0..s).rev() {
            base.push(axes[a][pos[a]]);
        }
        base.push(1.0);
        for a in (0..s).rev() {
            pos[a] += 1;
            if pos[a] < sp[a] {
                break;
            }
            pos[a] = 0;
        }
    }
    let base = Tensor::from_vec(base, (1, p, s + 1), theta.device())?.to_dtype(theta.dtype())?;
    let g = base.broadcast_matmul(&theta.transpose(1, 2)?)?;
    let mut dims = vec![size[0]];
    dims.extend_from_slice(sp);
    dims.push(s);
    g.reshape(dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_like_torch() {
        assert_eq!(base_coords(1, true), vec![0.0]);
        assert_eq!(base_coords(3, true), vec![-1.0, 0.0, 1.0]);
        let v = base_coords(4, false);
        assert!((v[0] + 0.75).abs() < 1e-7 && (v[3] - 0.75).abs() < 1e-7);
    }

    #[test]
    fn unnormalize_maps_corners() {
        assert_eq!(unnormalize(-1.0, 5, true), 0.0);
        assert_eq!(unnormalize(1.0, 5, true), 4.0);
        assert_eq!(unnormalize(-1.0, 5, false), -0.5);
        assert_eq!(unnormalize(1.0, 5, false), 4.5);
    }
}
