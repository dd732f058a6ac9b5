//! Nearest and (bi/tri)linear resizing of `[N, C, H, W]` and `[N, C, D, H, W]`
//! tensors to a given spatial size, with PyTorch's semantics
//! (`F.interpolate(mode="nearest" | "bilinear" | "trilinear", size=...)`,
//! `align_corners` both ways), forward and backward.
//!
//! Sizes are given in spatial axis order (`[h, w]` or `[d, h, w]`). Source
//! coordinates and weights are computed in f32 as PyTorch does. The CPU f32
//! path works on one `(n, c)` plane per rayon task; the backward scatters the
//! incoming gradient with the same weights.

use crate::activation::{cpu_slice, from_vec, is_fast, with_slice};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Per output index along one axis: the two source indices and their weights.
#[derive(Clone, Copy, Debug)]
struct Tap {
    i0: usize,
    i1: usize,
    w0: f32,
    w1: f32,
}

fn nearest_taps(inp: usize, out: usize) -> Vec<Tap> {
    let scale = inp as f32 / out as f32;
    (0..out)
        .map(|o| {
            let i = if inp == out {
                o
            } else {
                ((o as f32 * scale).floor() as usize).min(inp - 1)
            };
            Tap {
                i0: i,
                i1: i,
                w0: 1.0,
                w1: 0.0,
            }
        })
        .collect()
}

fn linear_taps(inp: usize, out: usize, align_corners: bool) -> Vec<Tap> {
    let scale = if align_corners {
        if out > 1 {
            (inp as f32 - 1.0) / (out as f32 - 1.0)
        } else {
            0.0
        }
    } else {
        inp as f32 / out as f32
    };
    (0..out)
        .map(|o| {
            let src = if align_corners {
                scale * o as f32
            } else {
                (scale * (o as f32 + 0.5) - 0.5).max(0.0)
            };
            let i0 = (src as usize).min(inp - 1);
            let i1 = if i0 < inp - 1 { i0 + 1 } else { i0 };
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            let (w0, w1) = if i1 == i0 { (1.0, 0.0) } else { (1.0 - l1, l1) };
            Tap { i0, i1, w0, w1 }
        })
        .collect()
}

struct Plan {
    i: [usize; 3],
    o: [usize; 3],
    taps: [Vec<Tap>; 3],
    nearest: bool,
}

impl Plan {
    fn new(dims: &[usize], size: &[usize], mode: Mode) -> Result<Self> {
        let sp = dims.len() - 2;
        let mut i = [1; 3];
        let mut o = [1; 3];
        for a in 0..sp {
            if dims[2 + a] == 0 || size[a] == 0 {
                candle_core::bail!("upsample: empty size, input {dims:?}, output {size:?}");
            }
            i[3 - sp + a] = dims[2 + a];
            o[3 - sp + a] = size[a];
        }
        let mk = |a: usize| match mode {
            Mode::Nearest => nearest_taps(i[a], o[a]),
            Mode::Linear { align_corners } => linear_taps(i[a], o[a], align_corners),
        };
        Ok(Plan {
            i,
            o,
            taps: [mk(0), mk(1), mk(2)],
            nearest: mode == Mode::Nearest,
        })
    }
    fn in_plane(&self) -> usize {
        self.i.iter().product()
    }
    fn out_plane(&self) -> usize {
        self.o.iter().product()
    }

    fn fwd_plane(&self, x: &[f32], y: &mut [f32]) {
        let [_, ih, iw] = self.i;
        let [_, oh, ow] = self.o;
        let tw = &self.taps[2];
        if self.nearest {
            for (od, td) in self.taps[0].iter().enumerate() {
                for (ohh, th) in self.taps[1].iter().enumerate() {
                    let yr = &mut y[(od * oh + ohh) * ow..(od * oh + ohh + 1) * ow];
                    let r = &x[(td.i0 * ih + th.i0) * iw..(td.i0 * ih + th.i0 + 1) * iw];
                    for (yv, t) in yr.iter_mut().zip(tw) {
                        *yv = r[t.i0];
                    }
                }
            }
            return;
        }
        // separable: every input row is interpolated along W once, then each
        // output row blends the (up to four) rows it needs, a contiguous
        // multiply-add; the same operations, in the same order, as
        // interpolating along W inside each blend
        let mut hx = vec![0f32; x.len() / iw * ow];
        for (xr, hr) in x.chunks_exact(iw).zip(hx.chunks_exact_mut(ow)) {
            for (v, t) in hr.iter_mut().zip(tw) {
                *v = t.w0 * xr[t.i0] + t.w1 * xr[t.i1];
            }
        }
        for (od, td) in self.taps[0].iter().enumerate() {
            for (ohh, th) in self.taps[1].iter().enumerate() {
                let yr = &mut y[(od * oh + ohh) * ow..(od * oh + ohh + 1) * ow];
                yr.fill(0.0);
                for (d, h, c) in blend_rows(td, th) {
                    if c == 0.0 {
                        continue;
                    }
                    let hr = &hx[(d * ih + h) * ow..][..ow];
                    for (yv, &hv) in yr.iter_mut().zip(hr) {
                        *yv += c * hv;
                    }
                }
            }
        }
    }

    fn bwd_plane(&self, dy: &[f32], dx: &mut [f32]) {
        let [_, ih, iw] = self.i;
        let [_, oh, ow] = self.o;
        let tw = &self.taps[2];
        if self.nearest {
            for (od, td) in self.taps[0].iter().enumerate() {
                for (ohh, th) in self.taps[1].iter().enumerate() {
                    let gr = &dy[(od * oh + ohh) * ow..(od * oh + ohh + 1) * ow];
                    let base = (td.i0 * ih + th.i0) * iw;
                    let r = &mut dx[base..base + iw];
                    for (&g, t) in gr.iter().zip(tw) {
                        r[t.i0] += g;
                    }
                }
            }
            return;
        }
        // the adjoint of the separable forward: output rows are gathered onto
        // W-interpolated input rows (contiguous), then each of those is
        // scattered along W once
        let mut hg = vec![0f32; dx.len() / iw * ow];
        for (od, td) in self.taps[0].iter().enumerate() {
            for (ohh, th) in self.taps[1].iter().enumerate() {
                let gr = &dy[(od * oh + ohh) * ow..(od * oh + ohh + 1) * ow];
                for (d, h, c) in blend_rows(td, th) {
                    if c == 0.0 {
                        continue;
                    }
                    let hr = &mut hg[(d * ih + h) * ow..][..ow];
                    for (a, &g) in hr.iter_mut().zip(gr) {
                        *a += g * c;
                    }
                }
            }
        }
        for (hr, r) in hg.chunks_exact(ow).zip(dx.chunks_exact_mut(iw)) {
            for (&g, t) in hr.iter().zip(tw) {
                r[t.i0] += g * t.w0;
                r[t.i1] += g * t.w1;
            }
        }
    }
}

/// The four (depth row, height row, weight) pairs an output row blends.
fn blend_rows(td: &Tap, th: &Tap) -> [(usize, usize, f32); 4] {
    [
        (td.i0, th.i0, td.w0 * th.w0),
        (td.i0, th.i1, td.w0 * th.w1),
        (td.i1, th.i0, td.w1 * th.w0),
        (td.i1, th.i1, td.w1 * th.w1),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Nearest,
    Linear { align_corners: bool },
}

struct UpsampleOp {
    size: Vec<usize>,
    mode: Mode,
}

impl CustomOp1 for UpsampleOp {
    fn name(&self) -> &'static str {
        match self.mode {
            Mode::Nearest => "medseg-upsample-nearest",
            Mode::Linear { .. } => "medseg-upsample-linear",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, self.name())?;
        let plan = Plan::new(l.dims(), &self.size, self.mode)?;
        let (ip, op) = (plan.in_plane(), plan.out_plane());
        let mut y = vec![0f32; x.len() / ip * op];
        y.par_chunks_mut(op)
            .zip(x.par_chunks(ip))
            .for_each(|(y, x)| plan.fwd_plane(x, y));
        let mut dims = l.dims()[..2].to_vec();
        dims.extend_from_slice(&self.size);
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let plan = Plan::new(arg.dims(), &self.size, self.mode)?;
        let (ip, op) = (plan.in_plane(), plan.out_plane());
        let dx = with_slice(grad, self.name(), |dy| {
            let mut dx = vec![0f32; dy.len() / op * ip];
            dx.par_chunks_mut(ip)
                .zip(dy.par_chunks(op))
                .for_each(|(dx, dy)| plan.bwd_plane(dy, dx));
            dx
        })?;
        Ok(Some(from_vec(dx, arg.shape())?))
    }
}

fn upsample(x: &Tensor, size: &[usize], mode: Mode) -> Result<Tensor> {
    if x.rank() != size.len() + 2 {
        candle_core::bail!(
            "upsample: expected a rank-{} input, got {:?}",
            size.len() + 2,
            x.dims()
        );
    }
    Plan::new(x.dims(), size, mode)?;
    if is_fast(x) {
        return x.contiguous()?.apply_op1(UpsampleOp {
            size: size.to_vec(),
            mode,
        });
    }
    // other devices/dtypes: compose from index_select (nearest) or gathers with weights.
    let mut t = x.clone();
    for (a, &out) in size.iter().enumerate() {
        let dim = 2 + a;
        let inp = t.dim(dim)?;
        let taps = match mode {
            Mode::Nearest => nearest_taps(inp, out),
            Mode::Linear { align_corners } => linear_taps(inp, out, align_corners),
        };
        let dev = t.device().clone();
        let i0: Vec<u32> = taps.iter().map(|t| t.i0 as u32).collect();
        let i0 = Tensor::new(i0, &dev)?;
        let a0 = t.index_select(&i0, dim)?;
        t = if mode == Mode::Nearest {
            a0
        } else {
            let i1: Vec<u32> = taps.iter().map(|t| t.i1 as u32).collect();
            let i1 = Tensor::new(i1, &dev)?;
            let a1 = t.index_select(&i1, dim)?;
            let mut shape = vec![1usize; t.rank()];
            shape[dim] = out;
            let w0: Vec<f32> = taps.iter().map(|t| t.w0).collect();
            let w1: Vec<f32> = taps.iter().map(|t| t.w1).collect();
            let w0 = Tensor::new(w0, &dev)?
                .reshape(shape.clone())?
                .to_dtype(t.dtype())?;
            let w1 = Tensor::new(w1, &dev)?.reshape(shape)?.to_dtype(t.dtype())?;
            (a0.broadcast_mul(&w0)? + a1.broadcast_mul(&w1)?)?
        };
    }
    Ok(t)
}

/// Nearest-neighbour resize of `[N, C, H, W]` to `size = [h, w]`
/// (PyTorch `mode="nearest"`: source index `floor(dst * in / out)`).
pub fn upsample_nearest2d(x: &Tensor, size: [usize; 2]) -> Result<Tensor> {
    upsample(x, &size, Mode::Nearest)
}

/// Nearest-neighbour resize of `[N, C, D, H, W]` to `size = [d, h, w]`.
pub fn upsample_nearest3d(x: &Tensor, size: [usize; 3]) -> Result<Tensor> {
    upsample(x, &size, Mode::Nearest)
}

/// Bilinear resize of `[N, C, H, W]` to `size = [h, w]` with PyTorch's
/// `align_corners` semantics.
pub fn upsample_bilinear2d(x: &Tensor, size: [usize; 2], align_corners: bool) -> Result<Tensor> {
    upsample(x, &size, Mode::Linear { align_corners })
}

/// Trilinear resize of `[N, C, D, H, W]` to `size = [d, h, w]` with PyTorch's
/// `align_corners` semantics.
pub fn upsample_trilinear3d(x: &Tensor, size: [usize; 3], align_corners: bool) -> Result<Tensor> {
    upsample(x, &size, Mode::Linear { align_corners })
}
