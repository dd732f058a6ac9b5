//! Adaptive average pooling in 2D (`[N, C, H, W]`) and 3D
//! (`[N, C, D, H, W]`) to a requested output size, with forward and backward.
//!
//! The bins follow PyTorch's `adaptive_avg_pool{2,3}d` rule: along an axis of
//! input length `L` and output length `O`, output `o` averages the inputs
//! `floor(o * L / O) .. ceil((o + 1) * L / O)` (bins may overlap when `O` does
//! not divide `L`, and may repeat inputs when `O > L`). Sizes are given in
//! spatial axis order (`[h, w]` or `[d, h, w]`). The CPU f32 path works on one
//! `(n, c)` plane per rayon task; other devices and dtypes compose the same
//! bins from candle's `narrow`, `mean_keepdim` and `cat` (the pooling is
//! separable, one axis at a time).

use crate::activation::{cpu_slice, from_vec, is_fast, with_slice};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// The input range `[start, end)` that output `o` of `out` averages along an
/// axis of input length `len` (PyTorch's rule).
pub fn adaptive_bin(o: usize, len: usize, out: usize) -> (usize, usize) {
    let start = o * len / out;
    let end = ((o + 1) * len).div_ceil(out);
    (start, end)
}

/// Input and output spatial sizes padded to three axes (leading ones).
#[derive(Clone, Copy, Debug)]
struct Geom {
    i: [usize; 3],
    o: [usize; 3],
}

impl Geom {
    fn new(dims: &[usize], out: &[usize], op: &str) -> Result<Self> {
        if dims.len() != out.len() + 2 {
            candle_core::bail!(
                "{op}: expected a rank-{} input, got {dims:?}",
                out.len() + 2
            );
        }
        let sp = out.len();
        let mut g = Geom {
            i: [1; 3],
            o: [1; 3],
        };
        for a in 0..sp {
            if out[a] == 0 || dims[2 + a] == 0 {
                candle_core::bail!(
                    "{op}: output size {out:?} and input spatial size {:?} must be positive",
                    &dims[2..]
                );
            }
            g.i[3 - sp + a] = dims[2 + a];
            g.o[3 - sp + a] = out[a];
        }
        Ok(g)
    }
    fn in_plane(&self) -> usize {
        self.i.iter().product()
    }
    fn out_plane(&self) -> usize {
        self.o.iter().product()
    }
    /// Calls `f(output index, input index, 1 / bin volume)` for every input of every bin.
    #[inline(always)]
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, f32)) {
        let [id, ih, iw] = self.i;
        let [od, oh, ow] = self.o;
        for d in 0..od {
            let (d0, d1) = adaptive_bin(d, id, od);
            for h in 0..oh {
                let (h0, h1) = adaptive_bin(h, ih, oh);
                for w in 0..ow {
                    let (w0, w1) = adaptive_bin(w, iw, ow);
                    let inv = 1.0 / ((d1 - d0) * (h1 - h0) * (w1 - w0)) as f32;
                    let oi = (d * oh + h) * ow + w;
                    for z in d0..d1 {
                        for y in h0..h1 {
                            let row = (z * ih + y) * iw;
                            for x in w0..w1 {
                                f(oi, row + x, inv);
                            }
                        }
                    }
                }
            }
        }
    }
}

struct AdaptiveAvgPool {
    out: Vec<usize>,
}

impl CustomOp1 for AdaptiveAvgPool {
    fn name(&self) -> &'static str {
        "medseg-adaptive-avg-pool"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, self.name())?;
        let g = Geom::new(l.dims(), &self.out, self.name())?;
        let (ip, op) = (g.in_plane(), g.out_plane());
        let mut y = vec![0f32; x.len() / ip * op];
        y.par_chunks_mut(op)
            .zip(x.par_chunks(ip))
            .for_each(|(y, x)| g.for_each_tap(|o, i, inv| y[o] += x[i] * inv));
        let mut dims = l.dims()[..2].to_vec();
        dims.extend_from_slice(&self.out);
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = Geom::new(arg.dims(), &self.out, self.name())?;
        let (ip, op) = (g.in_plane(), g.out_plane());
        let n = arg.elem_count();
        let dx = with_slice(grad, self.name(), |dy| {
            let mut dx = vec![0f32; n];
            dx.par_chunks_mut(ip)
                .zip(dy.par_chunks(op))
                .for_each(|(dx, dy)| g.for_each_tap(|o, i, inv| dx[i] += dy[o] * inv));
            dx
        })?;
        Ok(Some(from_vec(dx, arg.shape())?))
    }
}

/// The same pooling from candle ops on `x`'s device: one axis at a time,
/// each bin a `narrow` + `mean_keepdim`, the bins concatenated.
fn adaptive_candle(x: &Tensor, out: &[usize]) -> Result<Tensor> {
    let mut t = x.clone();
    for (a, &o) in out.iter().enumerate() {
        let dim = 2 + a;
        let len = t.dim(dim)?;
        if len == o {
            continue;
        }
        let bins = (0..o)
            .map(|b| {
                let (s, e) = adaptive_bin(b, len, o);
                t.narrow(dim, s, e - s)?.mean_keepdim(dim)
            })
            .collect::<Result<Vec<_>>>()?;
        t = Tensor::cat(&bins, dim)?;
    }
    Ok(t)
}

fn adaptive(x: &Tensor, out: &[usize]) -> Result<Tensor> {
    Geom::new(x.dims(), out, "adaptive_avg_pool")?;
    if is_fast(x) {
        return x
            .contiguous()?
            .apply_op1(AdaptiveAvgPool { out: out.to_vec() });
    }
    adaptive_candle(x, out)
}

/// 2D adaptive average pooling of `[N, C, H, W]` to `[N, C, out[0], out[1]]`
/// (PyTorch's `adaptive_avg_pool2d` bins).
pub fn adaptive_avg_pool2d(x: &Tensor, out: [usize; 2]) -> Result<Tensor> {
    adaptive(x, &out)
}

/// 3D adaptive average pooling of `[N, C, D, H, W]` to `[N, C, out[0], out[1], out[2]]`
/// (PyTorch's `adaptive_avg_pool3d` bins).
pub fn adaptive_avg_pool3d(x: &Tensor, out: [usize; 3]) -> Result<Tensor> {
    adaptive(x, &out)
}
