//! Max pooling that also returns where each maximum was, and max unpooling
//! by those positions (SegNet's decoder), as PyTorch's
//! `F.max_pool2d(..., return_indices=True)` and `F.max_unpool2d`.
//!
//! Both are compositions of differentiable candle ops, so they run on any
//! device and dtype and autograd goes through them:
//!
//! * the indices are computed from the detached input by a scan over the
//!   `k * k` window taps in row-major order, where a tap replaces the
//!   running maximum only when it is strictly greater (or NaN): the first
//!   maximum in scan order wins ties, PyTorch's rule (its CPU and CUDA
//!   kernels test `val > max || isnan(val)` in the same order);
//! * the pooled values are then `gather`ed from the input at those indices,
//!   so the gradient reaches exactly the selected element of each window
//!   (candle's `max` reduction would send it to every tied element);
//! * unpooling `index_add`s the values into a zero map at the indices (on
//!   one flattened axis); its gradient is the `index_select` of the
//!   incoming gradient at those indices.

use candle_core::{bail, DType, Result, Tensor};

/// Max pooling of `[N, C, H, W]` with a square `kernel`, `stride` and no
/// padding (the output has `(L - kernel) / stride + 1` samples per axis:
/// trailing rows and columns that do not fill a window are dropped, as
/// PyTorch does).
///
/// Returns the pooled values and, for each, the index of its maximum in
/// the flattened `H * W` plane of the input (PyTorch's
/// `return_indices=True` layout; here `u32` rather than `int64`). Ties go to
/// the first maximum in row-major window order, as in PyTorch.
/// Differentiable with respect to `x` (the gradient goes to the selected
/// element only).
pub fn max_pool2d_with_indices(
    x: &Tensor,
    kernel: usize,
    stride: usize,
) -> Result<(Tensor, Tensor)> {
    let (n, c, h, w) = x.dims4()?;
    if kernel == 0 || stride == 0 {
        bail!("max_pool2d_with_indices: kernel and stride must be positive")
    }
    if h < kernel || w < kernel {
        bail!(
            "max_pool2d_with_indices: input {:?} smaller than the kernel {kernel}",
            x.dims()
        )
    }
    if h * w > u32::MAX as usize {
        bail!("max_pool2d_with_indices: plane of {h}x{w} too large for u32 indices")
    }
    let (ho, wo) = ((h - kernel) / stride + 1, (w - kernel) / stride + 1);
    let dev = x.device();
    let xd = x.detach();
    let sel = |off: usize, len: usize| -> Result<Tensor> {
        let v: Vec<u32> = (0..len).map(|j| (off + j * stride) as u32).collect();
        Tensor::new(v.as_slice(), dev)
    };
    let mut best: Option<(Tensor, Tensor)> = None; // (running maximum, its index)
    for a in 0..kernel {
        let rows = xd.index_select(&sel(a, ho)?, 2)?;
        for b in 0..kernel {
            let tap = rows.index_select(&sel(b, wo)?, 3)?;
            let base: Vec<u32> = (0..ho * wo)
                .map(|p| ((a + (p / wo) * stride) * w + b + (p % wo) * stride) as u32)
                .collect();
            let base = Tensor::from_vec(base, (1, 1, ho, wo), dev)?
                .broadcast_as((n, c, ho, wo))?
                .contiguous()?;
            best = Some(match best {
                None => (tap, base),
                Some((m, i)) => {
                    // strictly greater, or NaN: later equal values never win
                    let take = tap.gt(&m)?.maximum(&tap.ne(&tap)?)?;
                    (take.where_cond(&tap, &m)?, take.where_cond(&base, &i)?)
                }
            });
        }
    }
    let (_, idx) = best.ok_or_else(|| candle_core::Error::Msg("empty pooling window".into()))?;
    let flat = x.reshape((n, c, h * w))?;
    let pooled = flat
        .gather(&idx.reshape((n, c, ho * wo))?, 2)?
        .reshape((n, c, ho, wo))?;
    Ok((pooled, idx))
}

/// Max unpooling (PyTorch `F.max_unpool2d(x, indices, kernel,
/// output_size=size)`): a zero `[N, C, size[0], size[1]]` map with each
/// value of `x` placed at its index of the flattened plane, as returned by
/// [`max_pool2d_with_indices`] (`u32` or `i64`). Indices that occur twice
/// (overlapping windows) have their values summed, where PyTorch keeps one
/// of them. Differentiable with respect to `x`.
pub fn max_unpool2d(x: &Tensor, indices: &Tensor, size: [usize; 2]) -> Result<Tensor> {
    let (n, c, hi, wi) = x.dims4()?;
    if indices.dims() != x.dims() {
        bail!(
            "max_unpool2d: indices {:?} do not match the input {:?}",
            indices.dims(),
            x.dims()
        )
    }
    let plane = size[0] * size[1];
    let idx = indices.to_dtype(DType::U32)?.reshape((n, c, hi * wi))?;
    if idx.elem_count() > 0 {
        let top = idx.flatten_all()?.max(0)?.to_scalar::<u32>()? as usize;
        if top >= plane {
            bail!(
                "max_unpool2d: index {top} outside the {}x{} output plane",
                size[0],
                size[1]
            )
        }
    }
    if n * c * plane > u32::MAX as usize {
        bail!("max_unpool2d: output of {n}x{c}x{plane} too large for u32 indices")
    }
    // one flat axis: plane offsets added to the indices, then `index_add`
    // (whose gradient is an `index_select`; candle's `scatter_add` backward
    // fails when the index is smaller than the target)
    let offsets: Vec<u32> = (0..n * c).map(|p| (p * plane) as u32).collect();
    let offsets = Tensor::from_vec(offsets, (n, c, 1), x.device())?;
    let flat_idx = idx.broadcast_add(&offsets)?.flatten_all()?;
    let zeros = Tensor::zeros(n * c * plane, x.dtype(), x.device())?;
    zeros
        .index_add(&flat_idx, &x.flatten_all()?, 0)?
        .reshape((n, c, size[0], size[1]))
}
