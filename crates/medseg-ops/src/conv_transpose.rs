//! Transposed convolutions `conv_transpose2d` and `conv_transpose3d`.
//!
//! Layouts are PyTorch's: input `[N, Cin, (D,) H, W]`, weight
//! `[Cin, Cout / groups, (kd,) kh, kw]`, bias `[Cout]`, output
//! `[N, Cout, (Do,) Ho, Wo]` with
//! `Ho = (H - 1)*stride - 2*pad + dil*(kh - 1) + output_padding + 1` per axis
//! (array axis order). `output_padding` must be smaller than the stride or the
//! dilation of its axis. f32 CPU tensors take the kernels below; other
//! devices (CUDA) and dtypes a composition of candle ops on the tensors'
//! device (see [`crate::device`]).
//!
//! A transposed convolution is the input gradient of a convolution with the same
//! weight; forward and backward reuse the convolution kernels. With kernel equal
//! to stride and no padding (the UNet 2x2 stride-2 up-sampling) the forward pass
//! is a single gemm followed by a scatter.

use crate::conv::{all_fast, check_bias, dims5};
use crate::conv_fallback as fb;
use crate::conv_kernels::{check_f32_cpu, ConvBwdDataOp, Geom};
use candle_core::{bail, Result, Tensor};

/// Parameters of a 2-D transposed convolution (per axis `[h, w]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose2dParams {
    /// Stride per axis (>= 1).
    pub stride: [usize; 2],
    /// Padding removed from both sides of each output axis.
    pub padding: [usize; 2],
    /// Extra size added to one side of each output axis.
    pub output_padding: [usize; 2],
    /// Kernel dilation per axis (>= 1).
    pub dilation: [usize; 2],
    /// Number of channel groups; `Cin` and `Cout` must be multiples of it.
    pub groups: usize,
}

impl Default for ConvTranspose2dParams {
    /// Stride 1, no padding or output padding, dilation 1, one group.
    fn default() -> Self {
        Self {
            stride: [1; 2],
            padding: [0; 2],
            output_padding: [0; 2],
            dilation: [1; 2],
            groups: 1,
        }
    }
}

/// Parameters of a 3-D transposed convolution (per axis `[d, h, w]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose3dParams {
    /// Stride per axis (>= 1).
    pub stride: [usize; 3],
    /// Padding removed from both sides of each output axis.
    pub padding: [usize; 3],
    /// Extra size added to one side of each output axis.
    pub output_padding: [usize; 3],
    /// Kernel dilation per axis (>= 1).
    pub dilation: [usize; 3],
    /// Number of channel groups; `Cin` and `Cout` must be multiples of it.
    pub groups: usize,
}

impl Default for ConvTranspose3dParams {
    /// Stride 1, no padding or output padding, dilation 1, one group.
    fn default() -> Self {
        Self {
            stride: [1; 3],
            padding: [0; 3],
            output_padding: [0; 3],
            dilation: [1; 3],
            groups: 1,
        }
    }
}

/// Geometry of the convolution whose input gradient is this transposed conv.
#[allow(clippy::too_many_arguments)]
fn transpose_geom(
    op: &str,
    xd: [usize; 5],
    wd: [usize; 5],
    stride: [usize; 3],
    padding: [usize; 3],
    output_padding: [usize; 3],
    dilation: [usize; 3],
    groups: usize,
) -> Result<Geom> {
    let [n, cin_t, _, _, _] = xd;
    let [cin_w, cout_g, _, _, _] = wd;
    if groups == 0 || cin_t % groups != 0 {
        bail!("medseg-ops {op}: groups {groups} must divide the {cin_t} input channels");
    }
    if cin_w != cin_t {
        bail!("medseg-ops {op}: weight has {cin_w} input channels, input has {cin_t}");
    }
    let mut out = [0usize; 3];
    for i in 0..3 {
        let (len, k) = (xd[2 + i], wd[2 + i]);
        if stride[i] == 0 || dilation[i] == 0 || k == 0 || len == 0 {
            bail!("medseg-ops {op}: stride, dilation, kernel and input sizes must be >= 1 (stride {stride:?}, dilation {dilation:?}, kernel {k}, input {len})");
        }
        if output_padding[i] >= stride[i] && output_padding[i] >= dilation[i] {
            bail!("medseg-ops {op}: output_padding {output_padding:?} must be smaller than stride or dilation on each axis");
        }
        let full = (len - 1) * stride[i] + dilation[i] * (k - 1) + output_padding[i] + 1;
        if full <= 2 * padding[i] {
            bail!(
                "medseg-ops {op}: padding {padding:?} leaves an empty output on spatial axis {i}"
            );
        }
        out[i] = full - 2 * padding[i];
    }
    Ok(Geom {
        n,
        cin: cout_g * groups,
        cout: cin_t,
        groups,
        inp: out,
        out: [xd[2], xd[3], xd[4]],
        k: [wd[2], wd[3], wd[4]],
        s: stride,
        p: padding,
        d: dilation,
        planar: false,
    })
}

fn apply_transpose(
    g: Geom,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    op: &str,
) -> Result<Tensor> {
    match bias {
        None => x.apply_op2(w, ConvBwdDataOp(g)),
        Some(b) => {
            check_f32_cpu(b, op, "bias")?;
            if b.dims() != [g.cin] {
                bail!(
                    "medseg-ops {op}: bias must have shape [{}], got {:?}",
                    g.cin,
                    b.dims()
                );
            }
            x.apply_op3(w, &b.contiguous()?, ConvBwdDataOp(g))
        }
    }
}

/// 2-D transposed convolution of `x [N, Cin, H, W]` with
/// `w [Cin, Cout/groups, kh, kw]` and optional `bias [Cout]`; returns
/// `[N, Cout, Ho, Wo]`. Differentiable in `x`, `w` and `bias`.
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    p: &ConvTranspose2dParams,
) -> Result<Tensor> {
    const OP: &str = "conv_transpose2d";
    let (n, cin, h, wi) = x.dims4()?;
    let (cw, cout_g, kh, kw) = w.dims4()?;
    let g = transpose_geom(
        OP,
        [n, cin, 1, h, wi],
        [cw, cout_g, 1, kh, kw],
        [1, p.stride[0], p.stride[1]],
        [0, p.padding[0], p.padding[1]],
        [0, p.output_padding[0], p.output_padding[1]],
        [1, p.dilation[0], p.dilation[1]],
        p.groups,
    )?;
    if !all_fast(&[x, w], bias) {
        check_bias(bias, cout_g * p.groups, OP)?;
        let y = fb::conv_transpose(
            x,
            w,
            &p.stride,
            &p.padding,
            &p.output_padding,
            &p.dilation,
            p.groups,
        )?;
        return fb::add_bias(y, bias);
    }
    // planar geometry: rank-4 tensors as they are, no reshape nodes
    let g = Geom { planar: true, ..g };
    apply_transpose(g, &x.contiguous()?, &w.contiguous()?, bias, OP)
}

/// 3-D transposed convolution of `x [N, Cin, D, H, W]` with
/// `w [Cin, Cout/groups, kd, kh, kw]` and optional `bias [Cout]`; returns
/// `[N, Cout, Do, Ho, Wo]`. Differentiable in `x`, `w` and `bias`.
pub fn conv_transpose3d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    p: &ConvTranspose3dParams,
) -> Result<Tensor> {
    const OP: &str = "conv_transpose3d";
    let xd = dims5(x, OP, "input")?;
    let wd = dims5(w, OP, "weight")?;
    let g = transpose_geom(
        OP,
        xd,
        wd,
        p.stride,
        p.padding,
        p.output_padding,
        p.dilation,
        p.groups,
    )?;
    if !all_fast(&[x, w], bias) {
        check_bias(bias, wd[1] * p.groups, OP)?;
        let y = fb::conv_transpose(
            x,
            w,
            &p.stride,
            &p.padding,
            &p.output_padding,
            &p.dilation,
            p.groups,
        )?;
        return fb::add_bias(y, bias);
    }
    apply_transpose(g, &x.contiguous()?, &w.contiguous()?, bias, OP)
}
