//! Convolutions composed from candle's own ops, for tensors the CPU kernels do
//! not take (CUDA tensors, other dtypes, or inside
//! [`crate::with_candle_ops`]). Everything here is differentiable by
//! composition and runs on the tensors' device.
//!
//! - 2-D convolution: candle's `conv2d` (per-axis padding by explicit zero
//!   padding, per-axis dilation by dilating the kernel, per-axis stride by
//!   sub-sampling a stride-1 result);
//! - 3-D convolution: a sum over depth taps of 2-D convolutions on
//!   `[N * Do, Cin, H, W]` slices;
//! - transposed convolution: candle's `conv_transpose2d` for one group and the
//!   same value on every axis, otherwise a convolution of the stride-dilated,
//!   padded input with the flipped, transposed kernel;
//! - the input and weight gradients of a 2-D convolution: a transposed
//!   convolution, and a convolution of the input with the output gradient.
//!
//! Parameters have been validated by the caller (`conv_geom`,
//! `transpose_geom`).

use candle_core::{Result, Tensor};

/// Inserts `d - 1` zeros after every element of axis `dim` and drops the
/// trailing ones: length `L` becomes `(L - 1) * d + 1`.
fn dilate_axis(t: &Tensor, dim: usize, d: usize) -> Result<Tensor> {
    if d <= 1 {
        return Ok(t.clone());
    }
    let len = t.dim(dim)?;
    let mut merged = t.dims().to_vec();
    merged[dim] = len * d;
    t.unsqueeze(dim + 1)?
        .pad_with_zeros(dim + 1, 0, d - 1)?
        .reshape(merged)?
        .narrow(dim, 0, (len - 1) * d + 1)
}

/// Zero-pads axis `dim` by `lo`/`hi` elements, or crops it where negative.
fn pad_or_crop(t: &Tensor, dim: usize, lo: isize, hi: isize) -> Result<Tensor> {
    let t = t.pad_with_zeros(dim, lo.max(0) as usize, hi.max(0) as usize)?;
    let (clo, chi) = ((-lo).max(0) as usize, (-hi).max(0) as usize);
    if clo + chi == 0 {
        return Ok(t);
    }
    let len = t.dim(dim)?;
    t.narrow(dim, clo, len - clo - chi)
}

/// Every `s`-th element of axis `dim`, the first `out` of them.
fn subsample(t: &Tensor, dim: usize, s: usize, out: usize) -> Result<Tensor> {
    if s == 1 && t.dim(dim)? == out {
        return Ok(t.clone());
    }
    let idx: Vec<u32> = (0..out).map(|o| (o * s) as u32).collect();
    t.index_select(&Tensor::new(idx, t.device())?, dim)
}

/// Adds `bias [C]` over axis 1 of `y`.
pub(crate) fn add_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        None => Ok(y),
        Some(b) => {
            let mut shape = vec![1usize; y.rank()];
            shape[1] = b.elem_count();
            y.broadcast_add(&b.reshape(shape)?.to_dtype(y.dtype())?)
        }
    }
}

/// 2-D convolution `[N, Cin, H, W]` x `[Cout, Cin/g, kh, kw]` with per-axis
/// stride, padding and dilation (no bias).
pub(crate) fn conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: [usize; 2],
    pad: [usize; 2],
    dil: [usize; 2],
    groups: usize,
) -> Result<Tensor> {
    let strided = stride[0] > 1 || stride[1] > 1;
    let (x, pad) = if pad[0] == pad[1] && !strided {
        (x.clone(), pad[0])
    } else {
        let mut x = x
            .pad_with_zeros(2, pad[0], pad[0])?
            .pad_with_zeros(3, pad[1], pad[1])?;
        // Crop each axis to the extent the strided windows read: candle's
        // conv2d backward derives the output padding of both axes from the
        // height alone, and gets the width wrong when the two differ.
        for a in 0..2 {
            let span = dil[a] * (w.dim(2 + a)? - 1) + 1;
            let len = x.dim(2 + a)?;
            let used = (len - span) / stride[a] * stride[a] + span;
            if used < len {
                x = x.narrow(2 + a, 0, used)?;
            }
        }
        (x, 0)
    };
    let (w, dil) = if dil[0] == dil[1] {
        (w.clone(), dil[0])
    } else {
        (dilate_axis(&dilate_axis(w, 2, dil[0])?, 3, dil[1])?, 1)
    };
    if stride[0] == stride[1] {
        return x.conv2d(&w, pad, stride[0], dil, groups);
    }
    let y = x.conv2d(&w, pad, 1, dil, groups)?;
    let (_, _, h1, w1) = y.dims4()?;
    let y = subsample(&y, 2, stride[0], (h1 - 1) / stride[0] + 1)?;
    subsample(&y, 3, stride[1], (w1 - 1) / stride[1] + 1)
}

/// 3-D convolution `[N, Cin, D, H, W]` x `[Cout, Cin/g, kd, kh, kw]` (no bias),
/// as a sum over the `kd` depth taps of 2-D convolutions.
pub(crate) fn conv3d(
    x: &Tensor,
    w: &Tensor,
    stride: [usize; 3],
    pad: [usize; 3],
    dil: [usize; 3],
    groups: usize,
) -> Result<Tensor> {
    let (n, cin, d, h, wi) = x.dims5()?;
    let kd = w.dim(2)?;
    let xp = x.pad_with_zeros(2, pad[0], pad[0])?;
    let dout = (d + 2 * pad[0] - dil[0] * (kd - 1) - 1) / stride[0] + 1;
    let mut acc: Option<Tensor> = None;
    for a in 0..kd {
        let idx: Vec<u32> = (0..dout)
            .map(|o| (o * stride[0] + a * dil[0]) as u32)
            .collect();
        let xa = xp
            .index_select(&Tensor::new(idx, x.device())?, 2)?
            .permute((0, 2, 1, 3, 4))?
            .contiguous()?
            .reshape((n * dout, cin, h, wi))?;
        let wa = w.narrow(2, a, 1)?.squeeze(2)?.contiguous()?;
        let ya = conv2d(
            &xa,
            &wa,
            [stride[1], stride[2]],
            [pad[1], pad[2]],
            [dil[1], dil[2]],
            groups,
        )?;
        acc = Some(match acc {
            None => ya,
            Some(s) => (s + ya)?,
        });
    }
    let y = acc.expect("kernel depth >= 1 (validated)");
    let (_, cout, ho, wo) = y.dims4()?;
    y.reshape((n, dout, cout, ho, wo))?
        .permute((0, 2, 1, 3, 4))?
        .contiguous()
}

/// Transposed convolution of `x [N, Cin, ...spatial]` with
/// `w [Cin, Cout/g, ...kernel]` (2 or 3 spatial axes, no bias).
pub(crate) fn conv_transpose(
    x: &Tensor,
    w: &Tensor,
    stride: &[usize],
    pad: &[usize],
    out_pad: &[usize],
    dil: &[usize],
    groups: usize,
) -> Result<Tensor> {
    let nd = stride.len();
    let same = |v: &[usize]| v.iter().all(|&a| a == v[0]);
    if nd == 2 && groups == 1 && same(stride) && same(pad) && same(out_pad) && same(dil) {
        return x.conv_transpose2d(w, pad[0], out_pad[0], stride[0], dil[0]);
    }
    // A convolution (stride 1, dilation `dil`) of the input dilated by the
    // stride and padded by `dil * (k - 1) - pad` (plus `out_pad` at the end),
    // with the kernel flipped and its channel axes swapped per group.
    let mut t = x.clone();
    for a in 0..nd {
        let k = w.dim(2 + a)? as isize;
        let lo = dil[a] as isize * (k - 1) - pad[a] as isize;
        t = dilate_axis(&t, 2 + a, stride[a])?;
        t = pad_or_crop(&t, 2 + a, lo, lo + out_pad[a] as isize)?;
    }
    let dims = w.dims().to_vec();
    let (cin, cout_g) = (dims[0], dims[1]);
    let cin_g = cin / groups;
    let mut grouped = vec![groups, cin_g, cout_g];
    grouped.extend_from_slice(&dims[2..]);
    let mut swapped = vec![groups * cout_g, cin_g];
    swapped.extend_from_slice(&dims[2..]);
    let mut wf = w.reshape(grouped)?.transpose(1, 2)?.reshape(swapped)?;
    for a in 0..nd {
        let k = dims[2 + a];
        let rev: Vec<u32> = (0..k as u32).rev().collect();
        wf = wf.index_select(&Tensor::new(rev, w.device())?, 2 + a)?;
    }
    let wf = wf.contiguous()?;
    match nd {
        2 => conv2d(&t, &wf, [1; 2], [0; 2], [dil[0], dil[1]], groups),
        _ => conv3d(&t, &wf, [1; 3], [0; 3], [dil[0], dil[1], dil[2]], groups),
    }
}

/// Weight gradient of a 2-D convolution: `dw [Cout, Cin/g, kh, kw]` from the
/// input `x [N, Cin, H, W]` and the output gradient `gy [N, Cout, Ho, Wo]`.
pub(crate) fn conv2d_weight_grad(
    x: &Tensor,
    gy: &Tensor,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    dil: [usize; 2],
    groups: usize,
) -> Result<Tensor> {
    let (xs, gs) = (x.chunk(groups, 1)?, gy.chunk(groups, 1)?);
    let mut parts = Vec::with_capacity(groups);
    for (xg, gg) in xs.iter().zip(&gs) {
        // correlate the input with the output gradient: stride and dilation swap roles
        let xt = xg.transpose(0, 1)?.contiguous()?; // [Cin/g, N, H, W]
        let gt = gg.transpose(0, 1)?.contiguous()?; // [Cout/g, N, Ho, Wo]
        let dw = conv2d(&xt, &gt, dil, pad, stride, 1)?; // [Cin/g, Cout/g, >= kh, >= kw]
        parts.push(
            dw.narrow(2, 0, kernel[0])?
                .narrow(3, 0, kernel[1])?
                .transpose(0, 1)?,
        );
    }
    Tensor::cat(&parts, 0)?.contiguous()
}
