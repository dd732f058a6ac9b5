//! Convolutions `conv2d` and `conv3d` with stride, padding, dilation and groups.
//!
//! Layouts are PyTorch's: input `[N, Cin, (D,) H, W]`, weight
//! `[Cout, Cin / groups, (kd,) kh, kw]`, bias `[Cout]`, output
//! `[N, Cout, (Do,) Ho, Wo]` with `Ho = (H + 2*pad - dil*(kh-1) - 1) / stride + 1`
//! (per axis, in array axis order). Tensors need not be contiguous (they are
//! made contiguous first).
//!
//! On f32 CPU tensors, forward, input gradient and weight gradient are candle
//! custom ops backed by im2col tiles and the `gemm` crate (see the crate README
//! for threading). On any other device (CUDA) or dtype the same convolution is
//! composed from candle's own ops on the tensors' device (see
//! [`crate::device`]).

use crate::conv_fallback as fb;
use crate::conv_kernels::{check_f32_cpu, ConvBwdDataOp, ConvBwdWeightOp, ConvFwdOp, Geom};
use crate::device::fast_path;
use candle_core::{bail, Result, Tensor};

/// Parameters of a 2-D convolution (per axis `[h, w]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Stride per axis (>= 1).
    pub stride: [usize; 2],
    /// Zero padding added on both sides of each axis.
    pub padding: [usize; 2],
    /// Kernel dilation per axis (>= 1).
    pub dilation: [usize; 2],
    /// Number of channel groups; `Cin` and `Cout` must be multiples of it.
    pub groups: usize,
}

impl Default for Conv2dParams {
    /// Stride 1, no padding, dilation 1, one group.
    fn default() -> Self {
        Self {
            stride: [1; 2],
            padding: [0; 2],
            dilation: [1; 2],
            groups: 1,
        }
    }
}

/// Parameters of a 3-D convolution (per axis `[d, h, w]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv3dParams {
    /// Stride per axis (>= 1).
    pub stride: [usize; 3],
    /// Zero padding added on both sides of each axis.
    pub padding: [usize; 3],
    /// Kernel dilation per axis (>= 1).
    pub dilation: [usize; 3],
    /// Number of channel groups; `Cin` and `Cout` must be multiples of it.
    pub groups: usize,
}

impl Default for Conv3dParams {
    /// Stride 1, no padding, dilation 1, one group.
    fn default() -> Self {
        Self {
            stride: [1; 3],
            padding: [0; 3],
            dilation: [1; 3],
            groups: 1,
        }
    }
}

/// Builds and validates the geometry of a 3-D (or lifted 2-D) convolution.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_geom(
    op: &str,
    xd: [usize; 5],
    wd: [usize; 5],
    stride: [usize; 3],
    padding: [usize; 3],
    dilation: [usize; 3],
    groups: usize,
) -> Result<Geom> {
    let [n, cin, _, _, _] = xd;
    let [cout, cin_g, _, _, _] = wd;
    if groups == 0 || cin % groups != 0 || cout % groups != 0 {
        bail!("medseg-ops {op}: groups {groups} must divide in channels {cin} and out channels {cout}");
    }
    if cin_g * groups != cin {
        bail!("medseg-ops {op}: weight has {cin_g} input channels per group, input has {cin} channels and {groups} groups");
    }
    let mut out = [0usize; 3];
    for i in 0..3 {
        let (len, k) = (xd[2 + i], wd[2 + i]);
        if stride[i] == 0 || dilation[i] == 0 || k == 0 {
            bail!("medseg-ops {op}: stride, dilation and kernel size must be >= 1 (got {stride:?}, {dilation:?}, kernel {k})");
        }
        let span = dilation[i] * (k - 1) + 1;
        let padded = len + 2 * padding[i];
        if padded < span {
            bail!("medseg-ops {op}: kernel extent {span} exceeds padded input size {padded} on spatial axis {i}");
        }
        out[i] = (padded - span) / stride[i] + 1;
    }
    Ok(Geom {
        n,
        cin,
        cout,
        groups,
        inp: [xd[2], xd[3], xd[4]],
        out,
        k: [wd[2], wd[3], wd[4]],
        s: stride,
        p: padding,
        d: dilation,
        planar: false,
    })
}

/// Applies a convolution on 5-D contiguous tensors (bias optional).
pub(crate) fn apply_conv(
    g: Geom,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    op: &str,
) -> Result<Tensor> {
    match bias {
        None => x.apply_op2(w, ConvFwdOp(g)),
        Some(b) => {
            check_f32_cpu(b, op, "bias")?;
            if b.dims() != [g.cout] {
                bail!(
                    "medseg-ops {op}: bias must have shape [{}], got {:?}",
                    g.cout,
                    b.dims()
                );
            }
            x.apply_op3(w, &b.contiguous()?, ConvFwdOp(g))
        }
    }
}

/// 2-D convolution of `x [N, Cin, H, W]` with `w [Cout, Cin/groups, kh, kw]`
/// and optional `bias [Cout]`; returns `[N, Cout, Ho, Wo]`. Differentiable in
/// `x`, `w` and `bias`.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, p: &Conv2dParams) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let (n, cin, h, wi) = x.dims4()?;
    let (cout, cin_g, kh, kw) = w.dims4()?;
    let g = conv_geom(
        OP,
        [n, cin, 1, h, wi],
        [cout, cin_g, 1, kh, kw],
        [1, p.stride[0], p.stride[1]],
        [0, p.padding[0], p.padding[1]],
        [1, p.dilation[0], p.dilation[1]],
        p.groups,
    )?;
    if !all_fast(&[x, w], bias) {
        check_bias(bias, cout, OP)?;
        let y = fb::conv2d(x, w, p.stride, p.padding, p.dilation, p.groups)?;
        return fb::add_bias(y, bias);
    }
    // Planar geometry: the kernels read the rank-4 tensors as they are, so
    // no reshape nodes (each one a gradient accumulation) enter the graph.
    let g = Geom { planar: true, ..g };
    apply_conv(g, &x.contiguous()?, &w.contiguous()?, bias, OP)
}

/// True when every tensor (and the bias) takes the CPU kernels.
pub(crate) fn all_fast(ts: &[&Tensor], bias: Option<&Tensor>) -> bool {
    ts.iter().all(|t| fast_path(t)) && bias.is_none_or(fast_path)
}

/// Checks that `bias` (when given) has shape `[c]`.
pub(crate) fn check_bias(bias: Option<&Tensor>, c: usize, op: &str) -> Result<()> {
    match bias {
        Some(b) if b.dims() != [c] => bail!(
            "medseg-ops {op}: bias must have shape [{c}], got {:?}",
            b.dims()
        ),
        _ => Ok(()),
    }
}

/// 3-D convolution of `x [N, Cin, D, H, W]` with `w [Cout, Cin/groups, kd, kh, kw]`
/// and optional `bias [Cout]`; returns `[N, Cout, Do, Ho, Wo]`. Differentiable
/// in `x`, `w` and `bias`.
pub fn conv3d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, p: &Conv3dParams) -> Result<Tensor> {
    const OP: &str = "conv3d";
    let xd: [usize; 5] = dims5(x, OP, "input")?;
    let wd: [usize; 5] = dims5(w, OP, "weight")?;
    let g = conv_geom(OP, xd, wd, p.stride, p.padding, p.dilation, p.groups)?;
    if !all_fast(&[x, w], bias) {
        check_bias(bias, wd[0], OP)?;
        let y = fb::conv3d(x, w, p.stride, p.padding, p.dilation, p.groups)?;
        return fb::add_bias(y, bias);
    }
    apply_conv(g, &x.contiguous()?, &w.contiguous()?, bias, OP)
}

/// The dimensions of a rank-5 tensor.
pub(crate) fn dims5(t: &Tensor, op: &str, what: &str) -> Result<[usize; 5]> {
    match t.dims() {
        &[a, b, c, d, e] => Ok([a, b, c, d, e]),
        d => bail!("medseg-ops {op}: {what} must have rank 5, got shape {d:?}"),
    }
}

/// Input gradient of [`conv2d`] (like PyTorch's `torch.nn.grad.conv2d_input`):
/// given the output gradient `gy [N, Cout, Ho, Wo]` and weight
/// `w [Cout, Cin/groups, kh, kw]`, returns `dx [N, Cin, H, W]` for an input of
/// spatial size `input_hw = [H, W]`. Differentiable.
pub fn conv2d_input_grad(
    gy: &Tensor,
    w: &Tensor,
    input_hw: [usize; 2],
    p: &Conv2dParams,
) -> Result<Tensor> {
    const OP: &str = "conv2d_input_grad";
    let (n, cout, ho, wo) = gy.dims4()?;
    let (cw, cin_g, kh, kw) = w.dims4()?;
    if cw != cout {
        bail!("medseg-ops {OP}: weight has {cw} output channels, gradient has {cout}");
    }
    let g = conv_geom(
        OP,
        [n, cin_g * p.groups, 1, input_hw[0], input_hw[1]],
        [cout, cin_g, 1, kh, kw],
        [1, p.stride[0], p.stride[1]],
        [0, p.padding[0], p.padding[1]],
        [1, p.dilation[0], p.dilation[1]],
        p.groups,
    )?;
    if g.out[1] != ho || g.out[2] != wo {
        bail!(
            "medseg-ops {OP}: gradient size {ho}x{wo} does not match the conv output {}x{}",
            g.out[1],
            g.out[2]
        );
    }
    if !all_fast(&[gy, w], None) {
        // the transposed convolution whose output has the input's size
        let out_pad: Vec<usize> = (0..2)
            .map(|a| {
                let k = [kh, kw][a];
                let full = ([ho, wo][a] - 1) * p.stride[a] + p.dilation[a] * (k - 1) + 1;
                input_hw[a] + 2 * p.padding[a] - full
            })
            .collect();
        return fb::conv_transpose(
            gy,
            w,
            &p.stride,
            &p.padding,
            &out_pad,
            &p.dilation,
            p.groups,
        );
    }
    let g = Geom { planar: true, ..g };
    gy.contiguous()?
        .apply_op2(&w.contiguous()?, ConvBwdDataOp(g))
}

/// Weight gradient of [`conv2d`] (like PyTorch's `torch.nn.grad.conv2d_weight`):
/// given the input `x [N, Cin, H, W]` and output gradient `gy [N, Cout, Ho, Wo]`,
/// returns `dw [Cout, Cin/groups, kh, kw]` for `kernel_hw = [kh, kw]`. Differentiable.
pub fn conv2d_weight_grad(
    x: &Tensor,
    gy: &Tensor,
    kernel_hw: [usize; 2],
    p: &Conv2dParams,
) -> Result<Tensor> {
    const OP: &str = "conv2d_weight_grad";
    let (n, cin, h, wi) = x.dims4()?;
    let (ng, cout, ho, wo) = gy.dims4()?;
    if ng != n || p.groups == 0 || cin % p.groups != 0 {
        bail!("medseg-ops {OP}: batch sizes {n} / {ng} differ or groups {} do not divide {cin} channels", p.groups);
    }
    let g = conv_geom(
        OP,
        [n, cin, 1, h, wi],
        [cout, cin / p.groups, 1, kernel_hw[0], kernel_hw[1]],
        [1, p.stride[0], p.stride[1]],
        [0, p.padding[0], p.padding[1]],
        [1, p.dilation[0], p.dilation[1]],
        p.groups,
    )?;
    if g.out[1] != ho || g.out[2] != wo {
        bail!(
            "medseg-ops {OP}: gradient size {ho}x{wo} does not match the conv output {}x{}",
            g.out[1],
            g.out[2]
        );
    }
    if !all_fast(&[x, gy], None) {
        return fb::conv2d_weight_grad(x, gy, kernel_hw, p.stride, p.padding, p.dilation, p.groups);
    }
    let g = Geom { planar: true, ..g };
    x.contiguous()?
        .apply_op2(&gy.contiguous()?, ConvBwdWeightOp(g))
}
