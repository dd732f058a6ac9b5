//! Building blocks shared by every network: convolution, transposed
//! convolution, normalisation, activation, pooling, up-sampling and dropout.
//!
//! Every primitive tensor operation the networks use goes through this module,
//! so that swapping an implementation (candle's own op, a composition, or a
//! `medseg-ops` kernel) happens in one place. Parameter names follow PyTorch
//! (`weight`, `bias`, `running_mean`, `running_var`) under the `VarBuilder`
//! path of the layer, so PyTorch state dicts load by name.
//!
//! Tensors are channel-first: `[N, C, H, W]` in 2D, `[N, C, D, H, W]` in 3D.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use candle_core::{Device, Result, Tensor, Var, D};
use candle_nn::{Init, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{NormType, UpMode};
use crate::ParamInfo;

// ---------------------------------------------------------------------------
// Summary recording
// ---------------------------------------------------------------------------

/// One layer call recorded while a summary is being taken.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerRecord {
    /// VarBuilder path of the layer (PyTorch module path).
    pub name: String,
    /// Layer kind, e.g. `Conv2d`, `BatchNorm`, `MaxPool3d`.
    pub kind: String,
    /// Output shape of this call.
    pub output_shape: Vec<usize>,
    /// Trainable parameters of the layer (running statistics excluded).
    pub params: usize,
    /// Multiply-adds of this call (convolutions only; other layers count 0).
    pub macs: u64,
}

thread_local! {
    static RECORDER: RefCell<Option<Vec<LayerRecord>>> = const { RefCell::new(None) };
}

/// Starts recording layer calls on this thread.
pub(crate) fn start_recording() {
    RECORDER.with(|r| *r.borrow_mut() = Some(Vec::new()));
}

/// Stops recording and returns what was recorded.
pub(crate) fn stop_recording() -> Vec<LayerRecord> {
    RECORDER.with(|r| r.borrow_mut().take().unwrap_or_default())
}

/// Adds a row to the summary being recorded (if any): the layer's path,
/// kind, output, parameter count and multiply-adds.
pub(crate) fn record(name: &str, kind: &str, out: &Tensor, params: usize, macs: u64) {
    RECORDER.with(|r| {
        if let Some(v) = r.borrow_mut().as_mut() {
            v.push(LayerRecord {
                name: name.to_string(),
                kind: kind.to_string(),
                output_shape: out.dims().to_vec(),
                params,
                macs,
            });
        }
    });
}

// ---------------------------------------------------------------------------
// Build context: VarBuilder + deterministic initialisation
// ---------------------------------------------------------------------------

/// What a layer needs at construction: the VarBuilder at its path and the
/// network's random generators (one for initial weights, one for dropout).
#[derive(Clone)]
pub(crate) struct Ctx<'a> {
    pub vb: VarBuilder<'a>,
    pub init_rng: Arc<Mutex<ChaCha8Rng>>,
    pub drop_rng: Arc<Mutex<ChaCha8Rng>>,
    params: Arc<Mutex<Vec<ParamInfo>>>,
    /// Blocks built through this context get scSE recalibration (UNet_ScSE).
    pub scse: bool,
}

impl<'a> Ctx<'a> {
    /// A context at the root of `vb` with generators seeded from `seed`.
    pub fn new(vb: VarBuilder<'a>, seed: u64) -> Self {
        Self {
            vb,
            init_rng: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed))),
            drop_rng: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(
                seed ^ 0x9E37_79B9_7F4A_7C15,
            ))),
            params: Arc::new(Mutex::new(Vec::new())),
            scse: false,
        }
    }

    /// The same context one path component deeper.
    pub fn pp<S: ToString>(&self, s: S) -> Self {
        Self {
            vb: self.vb.pp(s),
            init_rng: self.init_rng.clone(),
            drop_rng: self.drop_rng.clone(),
            params: self.params.clone(),
            scse: self.scse,
        }
    }

    /// The same context with scSE blocks switched on or off.
    pub fn with_scse(&self, on: bool) -> Self {
        let mut c = self.clone();
        c.scse = on;
        c
    }

    /// The tensors created or fetched so far through this context tree.
    pub fn params_snapshot(&self) -> Vec<ParamInfo> {
        self.params.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn prefix(&self) -> String {
        self.vb.prefix()
    }

    /// Gets (or creates) a parameter. A parameter that the VarBuilder does
    /// not hold yet is created and filled from the seeded generator, so the
    /// same seed gives the same initial network.
    pub(crate) fn param(&self, shape: &[usize], name: &str, init: ParamInit) -> Result<Tensor> {
        let fresh = !self.vb.contains_tensor(name);
        if let Ok(mut v) = self.params.lock() {
            let prefix = self.vb.prefix();
            v.push(ParamInfo {
                name: if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}.{name}")
                },
                shape: shape.to_vec(),
                trainable: name != "running_mean" && name != "running_var",
            });
        }
        let t = self
            .vb
            .get_with_hints(shape.to_vec(), name, Init::Const(0.0))?;
        if fresh && t.is_variable() {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = match init {
                ParamInit::Const(c) => vec![c; n],
                ParamInit::Uniform(b) => {
                    let mut rng = self.init_rng.lock().map_err(|_| {
                        candle_core::Error::Msg("initialisation generator poisoned".into())
                    })?;
                    (0..n)
                        .map(|_| rng.random_range(-b..=b))
                        .collect::<Vec<f32>>()
                }
            };
            let v = Tensor::from_vec(values, shape.to_vec(), &Device::Cpu)?
                .to_dtype(t.dtype())?
                .to_device(t.device())?;
            Var::from_tensor(&t)?.set(&v)?;
        }
        Ok(t)
    }
}

#[derive(Clone, Copy)]
pub(crate) enum ParamInit {
    /// Every value `c`.
    Const(f32),
    /// Uniform in `[-b, b]`.
    Uniform(f32),
}

// ---------------------------------------------------------------------------
// Primitive ops (one place to swap implementations)
// ---------------------------------------------------------------------------

/// Reshapes a per-channel vector `[C]` to broadcast over `[N, C, ...spatial]`.
fn per_channel(v: &Tensor, nd: usize) -> Result<Tensor> {
    let c = v.dim(0)?;
    let mut shape = vec![1, c];
    shape.extend(std::iter::repeat_n(1, nd));
    v.reshape(shape)
}

/// Convolution of `[N, Cin, ...]` with `[Cout, Cin, k...]`, square kernel,
/// the same stride and zero padding on every axis.
/// Whether the `medseg-ops` kernels apply (they take f32 CPU tensors; see
/// `medseg_ops::fast_path`).
fn use_ops(x: &Tensor) -> bool {
    medseg_ops::fast_path(x)
}

/// Convolution with optional bias: `medseg-ops` on f32 CPU tensors and for
/// strided or dilated convolutions on any device (its candle fallback crops
/// the input so that candle's conv2d backward gets both axes right), the
/// candle composition below otherwise.
#[allow(clippy::too_many_arguments)]
fn conv_bias(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    nd: usize,
    stride: usize,
    pad: usize,
    dil: usize,
    groups: usize,
) -> Result<Tensor> {
    if use_ops(x) || stride > 1 || dil > 1 || groups > 1 {
        return match nd {
            2 => medseg_ops::conv2d(
                x,
                w,
                b,
                &medseg_ops::Conv2dParams {
                    stride: [stride; 2],
                    padding: [pad; 2],
                    dilation: [dil; 2],
                    groups,
                },
            ),
            3 => medseg_ops::conv3d(
                x,
                w,
                b,
                &medseg_ops::Conv3dParams {
                    stride: [stride; 3],
                    padding: [pad; 3],
                    dilation: [dil; 3],
                    groups,
                },
            ),
            _ => candle_core::bail!("convolution needs 2 or 3 spatial dimensions, got {nd}"),
        };
    }
    let y = conv_nd(x, w, nd, stride, pad)?;
    match b {
        Some(b) => y.broadcast_add(&per_channel(b, nd)?),
        None => Ok(y),
    }
}

/// Transposed convolution (kernel == stride) with bias: `medseg-ops` on f32
/// CPU tensors, the candle composition below otherwise.
fn conv_transpose_bias(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    nd: usize,
    stride: usize,
) -> Result<Tensor> {
    if use_ops(x) {
        return match nd {
            2 => medseg_ops::conv_transpose2d(
                x,
                w,
                Some(b),
                &medseg_ops::ConvTranspose2dParams {
                    stride: [stride; 2],
                    ..Default::default()
                },
            ),
            3 => medseg_ops::conv_transpose3d(
                x,
                w,
                Some(b),
                &medseg_ops::ConvTranspose3dParams {
                    stride: [stride; 3],
                    ..Default::default()
                },
            ),
            _ => candle_core::bail!("transposed convolution needs 2 or 3 spatial dimensions"),
        };
    }
    conv_transpose_nd(x, w, nd, stride)?.broadcast_add(&per_channel(b, nd)?)
}

/// Convolution by candle ops (3D as a sum of 2D convolutions over depth taps).
fn conv_nd(x: &Tensor, w: &Tensor, nd: usize, stride: usize, pad: usize) -> Result<Tensor> {
    match nd {
        2 => x.conv2d(w, pad, stride, 1, 1),
        3 => {
            // Depth is handled as a sum over depth taps of 2D convolutions on
            // [N * Dout, Cin, H, W] slices; differentiable by composition.
            let (n, cin, d, h, wd) = x.dims5()?;
            let (cout, _, kd, _, _) = w.dims5()?;
            let xp = if pad > 0 {
                x.pad_with_zeros(2, pad, pad)?
            } else {
                x.clone()
            };
            let dp = d + 2 * pad;
            if dp < kd {
                candle_core::bail!("conv3d: depth {d} too small for kernel {kd}")
            }
            let dout = (dp - kd) / stride + 1;
            let xt = xp.permute((0, 2, 1, 3, 4))?.contiguous()?; // [N, Dp, Cin, H, W]
            let mut acc: Option<Tensor> = None;
            for a in 0..kd {
                let slab = if stride == 1 {
                    xt.narrow(1, a, dout)?
                } else {
                    let idx: Vec<u32> = (0..dout).map(|j| (a + j * stride) as u32).collect();
                    let idx = Tensor::new(idx.as_slice(), x.device())?;
                    xt.index_select(&idx, 1)?
                };
                let slab = slab.reshape((n * dout, cin, h, wd))?;
                let wa = w.narrow(2, a, 1)?.squeeze(2)?.contiguous()?;
                let y = slab.conv2d(&wa, pad, stride, 1, 1)?;
                acc = Some(match acc {
                    None => y,
                    Some(s) => (s + y)?,
                });
            }
            let y = acc.ok_or_else(|| candle_core::Error::Msg("conv3d: empty kernel".into()))?;
            let (_, _, ho, wo) = y.dims4()?;
            y.reshape((n, dout, cout, ho, wo))?
                .permute((0, 2, 1, 3, 4))?
                .contiguous()
        }
        _ => candle_core::bail!("convolution needs 2 or 3 spatial dimensions, got {nd}"),
    }
}

/// Transposed convolution with kernel == stride and no padding (the only
/// form the networks use): `[N, Cin, ...]` with `[Cin, Cout, k...]`.
fn conv_transpose_nd(x: &Tensor, w: &Tensor, nd: usize, stride: usize) -> Result<Tensor> {
    match nd {
        2 => x.conv_transpose2d(w, 0, 0, stride, 1),
        3 => {
            let (n, cin, d, h, wd) = x.dims5()?;
            let (_, cout, kd, _, _) = w.dims5()?;
            if kd != stride {
                candle_core::bail!("conv_transpose3d: only kernel == stride is supported")
            }
            let xf = x
                .permute((0, 2, 1, 3, 4))?
                .contiguous()?
                .reshape((n * d, cin, h, wd))?;
            let mut taps = Vec::with_capacity(kd);
            for a in 0..kd {
                let wa = w.narrow(2, a, 1)?.squeeze(2)?.contiguous()?;
                let y = xf.conv_transpose2d(&wa, 0, 0, stride, 1)?; // [N*D, Cout, H2, W2]
                let (_, _, h2, w2) = y.dims4()?;
                taps.push(y.reshape((n, d, 1, cout, h2, w2))?);
            }
            let y = Tensor::cat(&taps, 2)?; // [N, D, kd, Cout, H2, W2]
            let (h2, w2) = (y.dim(4)?, y.dim(5)?);
            y.reshape((n, d * kd, cout, h2, w2))?
                .permute((0, 2, 1, 3, 4))?
                .contiguous()
        }
        _ => candle_core::bail!("transposed convolution needs 2 or 3 spatial dimensions"),
    }
}

/// Max pooling with kernel 2 and stride 2 (floor of odd sizes).
pub(crate) fn max_pool2(x: &Tensor, nd: usize) -> Result<Tensor> {
    if use_ops(x) {
        return match nd {
            2 => medseg_ops::max_pool2d(x, [2; 2], [2; 2]),
            3 => medseg_ops::max_pool3d(x, [2; 3], [2; 3]),
            _ => candle_core::bail!("pooling needs 2 or 3 spatial dimensions"),
        };
    }
    max_pool2_composed(x, nd)
}

/// Max pooling by candle ops: odd trailing samples are dropped (pooling
/// floors), each axis is split into pairs and the max taken over the pair
/// axes. (candle's own `max_pool2d` gradient is scaled wrongly, so it is
/// not used.)
fn max_pool2_composed(x: &Tensor, nd: usize) -> Result<Tensor> {
    if nd != 2 && nd != 3 {
        candle_core::bail!("pooling needs 2 or 3 spatial dimensions")
    }
    let mut y = x.clone();
    let mut shape = x.dims()[..2].to_vec();
    for axis in 2..2 + nd {
        let s = x.dim(axis)?;
        if s < 2 {
            candle_core::bail!("max pooling: size {s} smaller than the kernel 2")
        }
        y = y.narrow(axis, 0, s - s % 2)?;
        shape.push(s / 2);
        shape.push(2);
    }
    let mut y = y.contiguous()?.reshape(shape)?;
    for k in (0..nd).rev() {
        y = y.max(3 + 2 * k)?;
    }
    Ok(y)
}

/// Linear interpolation along one axis to `out` samples (PyTorch
/// `interpolate` semantics for `align_corners` true or false).
fn interp_axis(x: &Tensor, axis: usize, out: usize, align_corners: bool) -> Result<Tensor> {
    let n_in = x.dim(axis)?;
    if n_in == out {
        return Ok(x.clone());
    }
    let mut i0 = Vec::with_capacity(out);
    let mut i1 = Vec::with_capacity(out);
    let mut l1 = Vec::with_capacity(out);
    for i in 0..out {
        let src = if align_corners {
            if out > 1 {
                i as f64 * (n_in as f64 - 1.0) / (out as f64 - 1.0)
            } else {
                0.0
            }
        } else {
            ((i as f64 + 0.5) * n_in as f64 / out as f64 - 0.5).max(0.0)
        };
        let a = (src.floor() as usize).min(n_in - 1);
        let b = (a + 1).min(n_in - 1);
        i0.push(a as u32);
        i1.push(b as u32);
        l1.push((src - a as f64) as f32);
    }
    let dev = x.device();
    let l0: Vec<f32> = l1.iter().map(|v| 1.0 - v).collect();
    let mut wshape = vec![1usize; x.rank()];
    wshape[axis] = out;
    let w0 = Tensor::from_vec(l0, wshape.clone(), dev)?.to_dtype(x.dtype())?;
    let w1 = Tensor::from_vec(l1, wshape, dev)?.to_dtype(x.dtype())?;
    let x0 = x.index_select(&Tensor::new(i0.as_slice(), dev)?, axis)?;
    let x1 = x.index_select(&Tensor::new(i1.as_slice(), dev)?, axis)?;
    x0.broadcast_mul(&w0)? + x1.broadcast_mul(&w1)?
}

/// Bi/tri-linear resize of the spatial axes to `size`.
pub(crate) fn resize_linear(x: &Tensor, size: &[usize], align_corners: bool) -> Result<Tensor> {
    if use_ops(x) && x.rank() == size.len() + 2 {
        match *size {
            [h, w] => return medseg_ops::upsample_bilinear2d(x, [h, w], align_corners),
            [d, h, w] => return medseg_ops::upsample_trilinear3d(x, [d, h, w], align_corners),
            _ => {}
        }
    }
    resize_linear_composed(x, size, align_corners)
}

/// Separable linear resize by `index_select` and weights (any rank, device).
fn resize_linear_composed(x: &Tensor, size: &[usize], align_corners: bool) -> Result<Tensor> {
    let mut y = x.clone();
    for (k, &s) in size.iter().enumerate() {
        y = interp_axis(&y, 2 + k, s, align_corners)?;
    }
    Ok(y)
}

/// Nearest-neighbour resize of the spatial axes to `size` (PyTorch `nearest`).
pub(crate) fn resize_nearest(x: &Tensor, size: &[usize]) -> Result<Tensor> {
    if use_ops(x) && x.rank() == size.len() + 2 {
        match *size {
            [h, w] => return medseg_ops::upsample_nearest2d(x, [h, w]),
            [d, h, w] => return medseg_ops::upsample_nearest3d(x, [d, h, w]),
            _ => {}
        }
    }
    resize_nearest_composed(x, size)
}

/// Nearest resize by `index_select` (any rank, device).
fn resize_nearest_composed(x: &Tensor, size: &[usize]) -> Result<Tensor> {
    let mut y = x.clone();
    for (k, &out) in size.iter().enumerate() {
        let axis = 2 + k;
        let n_in = y.dim(axis)?;
        if n_in == out {
            continue;
        }
        let idx: Vec<u32> = (0..out)
            .map(|i| ((i as f64 * n_in as f64 / out as f64).floor() as usize).min(n_in - 1) as u32)
            .collect();
        y = y.index_select(&Tensor::new(idx.as_slice(), y.device())?, axis)?;
    }
    Ok(y)
}

/// Zero-pads (or crops) the spatial axes of `x` at the end to `size`.
pub(crate) fn fit_to(x: &Tensor, size: &[usize]) -> Result<Tensor> {
    let mut y = x.clone();
    for (k, &s) in size.iter().enumerate() {
        let axis = 2 + k;
        let cur = y.dim(axis)?;
        if cur < s {
            y = y.pad_with_zeros(axis, 0, s - cur)?;
        } else if cur > s {
            y = y.narrow(axis, 0, s)?;
        }
    }
    Ok(y)
}

/// Spatial size of a `[N, C, ...]` tensor.
pub(crate) fn spatial(x: &Tensor) -> Vec<usize> {
    x.dims()[2..].to_vec()
}

// ---------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------

/// Convolution (2D or 3D) with a square kernel, PyTorch initialisation.
pub(crate) struct Conv {
    w: Tensor,
    b: Option<Tensor>,
    nd: usize,
    stride: usize,
    pad: usize,
    dil: usize,
    groups: usize,
    name: String,
    macs_per_out: u64,
}

impl Conv {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &Ctx,
        nd: usize,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        bias: bool,
    ) -> Result<Self> {
        let mut shape = vec![cout, cin];
        shape.extend(std::iter::repeat_n(k, nd));
        let fan_in = cin * k.pow(nd as u32);
        let bound = 1.0 / (fan_in as f32).sqrt();
        let w = ctx.param(&shape, "weight", ParamInit::Uniform(bound))?;
        let b = if bias {
            Some(ctx.param(&[cout], "bias", ParamInit::Uniform(bound))?)
        } else {
            None
        };
        Ok(Self {
            w,
            b,
            nd,
            stride,
            pad,
            dil: 1,
            groups: 1,
            name: ctx.prefix(),
            macs_per_out: fan_in as u64,
        })
    }

    /// 2D convolution in full generality (PyTorch `nn.Conv2d(cin, cout, k,
    /// stride, pad, dilation, groups, bias)`): weight `[cout, cin / groups,
    /// k, k]`, PyTorch's initialisation bound `1 / sqrt(cin / groups * k^2)`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(
        ctx: &Ctx,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        dil: usize,
        groups: usize,
        bias: bool,
    ) -> Result<Self> {
        if groups == 0 || cin % groups != 0 || cout % groups != 0 {
            candle_core::bail!("convolution: {cin} -> {cout} channels in {groups} groups")
        }
        let mut c = Self::new(ctx, 2, cin / groups, cout, k, stride, pad, bias)?;
        c.dil = dil;
        c.groups = groups;
        Ok(c)
    }

    /// Convolution with bias, kernel `k`, dilation `dil` and "same" padding.
    pub fn dilated(
        ctx: &Ctx,
        nd: usize,
        cin: usize,
        cout: usize,
        k: usize,
        dil: usize,
    ) -> Result<Self> {
        let mut c = Self::new(ctx, nd, cin, cout, k, 1, (k - 1) / 2 * dil, true)?;
        c.dil = dil;
        Ok(c)
    }

    /// 1x1 convolution with bias.
    pub fn pointwise(ctx: &Ctx, nd: usize, cin: usize, cout: usize) -> Result<Self> {
        Self::new(ctx, nd, cin, cout, 1, 1, 0, true)
    }

    /// 3x3 convolution, padding 1, with bias.
    pub fn k3(ctx: &Ctx, nd: usize, cin: usize, cout: usize) -> Result<Self> {
        Self::new(ctx, nd, cin, cout, 3, 1, 1, true)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = conv_bias(
            x,
            &self.w,
            self.b.as_ref(),
            self.nd,
            self.stride,
            self.pad,
            self.dil,
            self.groups,
        )?;
        let params = self.w.elem_count() + self.b.as_ref().map_or(0, |b| b.elem_count());
        let kind = if self.nd == 2 { "Conv2d" } else { "Conv3d" };
        record(
            &self.name,
            kind,
            &y,
            params,
            y.elem_count() as u64 * self.macs_per_out,
        );
        Ok(y)
    }
}

/// Fully connected layer (PyTorch `nn.Linear`): `weight [out, in]`, `bias [out]`.
pub(crate) struct Linear {
    w: Tensor,
    b: Tensor,
}

impl Linear {
    pub fn new(ctx: &Ctx, cin: usize, cout: usize) -> Result<Self> {
        let bound = 1.0 / (cin as f32).sqrt();
        Ok(Self {
            w: ctx.param(&[cout, cin], "weight", ParamInit::Uniform(bound))?,
            b: ctx.param(&[cout], "bias", ParamInit::Uniform(bound))?,
        })
    }

    /// `[N, in] -> [N, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.w.t()?)?.broadcast_add(&self.b)
    }
}

/// Transposed convolution with kernel == stride (PyTorch layout
/// `[Cin, Cout, k...]`).
pub(crate) struct ConvTranspose {
    w: Tensor,
    b: Tensor,
    nd: usize,
    k: usize,
    name: String,
}

impl ConvTranspose {
    pub fn new(ctx: &Ctx, nd: usize, cin: usize, cout: usize, k: usize) -> Result<Self> {
        let mut shape = vec![cin, cout];
        shape.extend(std::iter::repeat_n(k, nd));
        // PyTorch computes the fan-in of a transposed convolution from
        // weight.shape[1] * prod(kernel).
        let fan_in = cout * k.pow(nd as u32);
        let bound = 1.0 / (fan_in as f32).sqrt();
        let w = ctx.param(&shape, "weight", ParamInit::Uniform(bound))?;
        let b = ctx.param(&[cout], "bias", ParamInit::Uniform(bound))?;
        Ok(Self {
            w,
            b,
            nd,
            k,
            name: ctx.prefix(),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = conv_transpose_bias(x, &self.w, &self.b, self.nd, self.k)?;
        let cout = self.b.elem_count() as u64;
        let macs = x.elem_count() as u64 * cout * (self.k.pow(self.nd as u32) as u64);
        let kind = if self.nd == 2 {
            "ConvTranspose2d"
        } else {
            "ConvTranspose3d"
        };
        record(
            &self.name,
            kind,
            &y,
            self.w.elem_count() + self.b.elem_count(),
            macs,
        );
        Ok(y)
    }
}

/// 2D transposed convolution with padding and output padding (PyTorch
/// `nn.ConvTranspose2d(cin, cout, k, stride, padding, output_padding,
/// bias)`); the shared `ConvTranspose` layer only has kernel == stride.
pub(crate) struct TransConv {
    w: Tensor,
    b: Option<Tensor>,
    stride: usize,
    pad: usize,
    out_pad: usize,
    name: String,
}

impl TransConv {
    /// With a bias.
    pub fn new(
        ctx: &Ctx,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        out_pad: usize,
    ) -> Result<Self> {
        // The shared layer creates (or reads) `weight [cin, cout, k, k]` and
        // `bias [cout]` with PyTorch's initialisation and records them; the
        // tensors are then taken from the VarBuilder.
        ConvTranspose::new(ctx, 2, cin, cout, k)?;
        Ok(Self {
            w: ctx.vb.get((cin, cout, k, k), "weight")?,
            b: Some(ctx.vb.get(cout, "bias")?),
            stride,
            pad,
            out_pad,
            name: ctx.prefix(),
        })
    }

    /// Without a bias (`bias=False`): only `weight [cin, cout, k, k]`, with
    /// PyTorch's initialisation bound `1 / sqrt(cout * k * k)`.
    pub fn without_bias(
        ctx: &Ctx,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        out_pad: usize,
    ) -> Result<Self> {
        let bound = 1.0 / ((cout * k * k) as f32).sqrt();
        Ok(Self {
            w: ctx.param(&[cin, cout, k, k], "weight", ParamInit::Uniform(bound))?,
            b: None,
            stride,
            pad,
            out_pad,
            name: ctx.prefix(),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.apply(x)?;
        // every input element meets every (output channel, kernel tap) pair
        let (_, cout, kh, kw) = self.w.dims4()?;
        let macs = (x.elem_count() * cout * kh * kw) as u64;
        record(
            &self.name,
            "ConvTranspose2d",
            &y,
            self.w.elem_count() + self.b.as_ref().map_or(0, |b| b.elem_count()),
            macs,
        );
        Ok(y)
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        if use_ops(x) {
            return medseg_ops::conv_transpose2d(
                x,
                &self.w,
                self.b.as_ref(),
                &medseg_ops::ConvTranspose2dParams {
                    stride: [self.stride; 2],
                    padding: [self.pad; 2],
                    output_padding: [self.out_pad; 2],
                    ..Default::default()
                },
            );
        }
        let y = x.conv_transpose2d(&self.w, self.pad, self.out_pad, self.stride, 1)?;
        match &self.b {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
            None => Ok(y),
        }
    }
}

/// Normalisation layer: BatchNorm (running statistics updated in training
/// mode with momentum 0.1 and the unbiased batch variance, as PyTorch does),
/// InstanceNorm (no affine parameters, as PyTorch's default) or GroupNorm.
pub(crate) enum Norm {
    Batch {
        gamma: Tensor,
        beta: Tensor,
        running_mean: Var,
        running_var: Var,
        name: String,
    },
    Instance {
        name: String,
    },
    Group {
        groups: usize,
        gamma: Tensor,
        beta: Tensor,
        name: String,
    },
}

const BN_EPS: f64 = 1e-5;
/// Momentum of the running-statistics update (PyTorch's default).
pub(crate) const BN_MOMENTUM: f64 = 0.1;

impl Norm {
    pub fn new(ctx: &Ctx, kind: NormType, c: usize, groups: usize) -> Result<Self> {
        let name = ctx.prefix();
        Ok(match kind {
            NormType::BatchNorm => {
                let gamma = ctx.param(&[c], "weight", ParamInit::Const(1.0))?;
                let beta = ctx.param(&[c], "bias", ParamInit::Const(0.0))?;
                let rm = ctx.param(&[c], "running_mean", ParamInit::Const(0.0))?;
                let rv = ctx.param(&[c], "running_var", ParamInit::Const(1.0))?;
                Norm::Batch {
                    gamma,
                    beta,
                    running_mean: Var::from_tensor(&rm)?,
                    running_var: Var::from_tensor(&rv)?,
                    name,
                }
            }
            NormType::InstanceNorm => Norm::Instance { name },
            NormType::GroupNorm => {
                if groups == 0 || c % groups != 0 {
                    candle_core::bail!(
                        "group_norm: {c} channels are not divisible into {groups} groups"
                    )
                }
                let gamma = ctx.param(&[c], "weight", ParamInit::Const(1.0))?;
                let beta = ctx.param(&[c], "bias", ParamInit::Const(0.0))?;
                Norm::Group {
                    groups,
                    gamma,
                    beta,
                    name,
                }
            }
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, train, None)
    }

    fn kind_name(&self) -> (&str, &'static str, usize) {
        match self {
            Norm::Batch { gamma, name, .. } => (name, "BatchNorm", 2 * gamma.elem_count()),
            Norm::Instance { name } => (name, "InstanceNorm", 0),
            Norm::Group { gamma, name, .. } => (name, "GroupNorm", 2 * gamma.elem_count()),
        }
    }

    /// Normalisation followed by `act`; on f32 CPU tensors BatchNorm,
    /// InstanceNorm and GroupNorm run as one fused `medseg-ops` kernel with
    /// the activation (LeakyReLU or none), otherwise as a composition of
    /// candle ops.
    pub fn forward_act(&self, x: &Tensor, train: bool, act: Option<&Act>) -> Result<Tensor> {
        let fused = match act {
            None => Some(medseg_ops::Activation::Identity),
            Some(Act::LeakyRelu(s)) => Some(medseg_ops::Activation::LeakyRelu(*s)),
            Some(_) => None,
        };
        if let (true, Some(f)) = (use_ops(x), fused) {
            let y = match self {
                Norm::Batch {
                    gamma,
                    beta,
                    running_mean,
                    running_var,
                    ..
                } => {
                    if train {
                        let (y, bm, bv) = medseg_ops::batch_norm_train(x, gamma, beta, BN_EPS, f)?;
                        update_running(running_mean, running_var, &bm, &bv)?;
                        Some(y)
                    } else {
                        Some(medseg_ops::batch_norm_eval(
                            x,
                            gamma,
                            beta,
                            &running_mean.as_tensor().detach(),
                            &running_var.as_tensor().detach(),
                            BN_EPS,
                            f,
                        )?)
                    }
                }
                Norm::Instance { .. } => Some(medseg_ops::instance_norm(x, None, None, BN_EPS, f)?),
                Norm::Group {
                    groups,
                    gamma,
                    beta,
                    ..
                } => Some(medseg_ops::group_norm(
                    x,
                    *groups,
                    Some(gamma),
                    Some(beta),
                    BN_EPS,
                    f,
                )?),
            };
            if let Some(y) = y {
                let (name, kind, params) = self.kind_name();
                record(name, kind, &y, params, 0);
                return Ok(y);
            }
        }
        let y = self.forward_composed(x, train)?;
        match act {
            Some(a) => a.forward(&y),
            None => Ok(y),
        }
    }

    /// Normalisation by candle ops (any device and dtype).
    fn forward_composed(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let nd = x.rank() - 2;
        let (y, name, kind, params) = match self {
            Norm::Batch {
                gamma,
                beta,
                running_mean,
                running_var,
                name,
            } => {
                let y = if train {
                    let dims: Vec<usize> = std::iter::once(0).chain(2..x.rank()).collect();
                    let count = x.elem_count() / x.dim(1)?;
                    let mean = x.mean_keepdim(dims.as_slice())?;
                    let xc = x.broadcast_sub(&mean)?;
                    let var = xc.sqr()?.mean_keepdim(dims.as_slice())?;
                    let y = xc.broadcast_div(&(var.clone() + BN_EPS)?.sqrt()?)?;
                    // running statistics, detached from the graph
                    let bm = mean.detach().flatten_all()?;
                    let unbias = if count > 1 {
                        count as f64 / (count as f64 - 1.0)
                    } else {
                        1.0
                    };
                    let bv = (var.detach().flatten_all()? * unbias)?;
                    update_running(running_mean, running_var, &bm, &bv)?;
                    y
                } else {
                    let m = per_channel(&running_mean.as_tensor().detach(), nd)?;
                    let v = per_channel(&running_var.as_tensor().detach(), nd)?;
                    x.broadcast_sub(&m)?.broadcast_div(&(v + BN_EPS)?.sqrt()?)?
                };
                let y = y
                    .broadcast_mul(&per_channel(gamma, nd)?)?
                    .broadcast_add(&per_channel(beta, nd)?)?;
                (y, name, "BatchNorm", 2 * gamma.elem_count())
            }
            Norm::Instance { name } => {
                let dims: Vec<usize> = (2..x.rank()).collect();
                let mean = x.mean_keepdim(dims.as_slice())?;
                let xc = x.broadcast_sub(&mean)?;
                let var = xc.sqr()?.mean_keepdim(dims.as_slice())?;
                let y = xc.broadcast_div(&(var + BN_EPS)?.sqrt()?)?;
                (y, name, "InstanceNorm", 0)
            }
            Norm::Group {
                groups,
                gamma,
                beta,
                name,
            } => {
                // medseg-ops composes it from candle ops off the fast path
                let y = medseg_ops::group_norm(
                    x,
                    *groups,
                    Some(gamma),
                    Some(beta),
                    BN_EPS,
                    medseg_ops::Activation::Identity,
                )?;
                (y, name, "GroupNorm", 2 * gamma.elem_count())
            }
        };
        record(name, kind, &y, params, 0);
        Ok(y)
    }
}

/// `running = (1 - momentum) * running + momentum * batch` for mean and
/// (unbiased) variance, as PyTorch.
fn update_running(rm: &Var, rv: &Var, bm: &Tensor, bv: &Tensor) -> Result<()> {
    let new_m = ((rm.as_tensor().detach() * (1.0 - BN_MOMENTUM))? + (bm.detach() * BN_MOMENTUM)?)?;
    let new_v = ((rv.as_tensor().detach() * (1.0 - BN_MOMENTUM))? + (bv.detach() * BN_MOMENTUM)?)?;
    rm.set(&new_m)?;
    rv.set(&new_v)
}

/// Activation functions used by the networks.
pub(crate) enum Act {
    LeakyRelu(f64),
    Sigmoid,
    /// PReLU with one shared slope (PyTorch `nn.PReLU()`), parameter `weight`.
    PRelu(Tensor),
}

impl Act {
    /// PyTorch's default `nn.LeakyReLU()` slope.
    pub fn leaky() -> Self {
        Act::LeakyRelu(0.01)
    }

    pub fn prelu(ctx: &Ctx) -> Result<Self> {
        Ok(Act::PRelu(ctx.param(
            &[1],
            "weight",
            ParamInit::Const(0.25),
        )?))
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Act::LeakyRelu(s) => x.maximum(&(x * *s)?),
            Act::Sigmoid => candle_nn::ops::sigmoid(x),
            Act::PRelu(a) => {
                let pos = x.relu()?;
                let neg = x.minimum(0.0)?;
                pos + neg.broadcast_mul(a)?
            }
        }
    }
}

/// Element-wise dropout (PyTorch `nn.Dropout`), identity in eval mode,
/// masks drawn from the network's seeded generator.
pub(crate) struct Dropout {
    p: f64,
    rng: Arc<Mutex<ChaCha8Rng>>,
}

impl Dropout {
    pub fn new(ctx: &Ctx, p: f64) -> Self {
        Self {
            p,
            rng: ctx.drop_rng.clone(),
        }
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.p <= 0.0 {
            return Ok(x.clone());
        }
        if self.p >= 1.0 {
            return x.zeros_like();
        }
        let mask = bernoulli_mask(&self.rng, x.dims(), 1.0 - self.p, x.device())?;
        x.broadcast_mul(&mask.to_dtype(x.dtype())?)
    }
}

/// A `{0, 1/keep}` mask of `shape` with keep probability `keep`.
pub(crate) fn bernoulli_mask(
    rng: &Mutex<ChaCha8Rng>,
    shape: &[usize],
    keep: f64,
    dev: &Device,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let scale = (1.0 / keep) as f32;
    let mut rng = rng
        .lock()
        .map_err(|_| candle_core::Error::Msg("dropout generator poisoned".into()))?;
    crate::dropout_step::align(&mut rng);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            if rng.random::<f64>() < keep {
                scale
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(v, shape.to_vec(), dev)
}

/// Uniform noise in `[-r, r]` of `shape` from a generator.
pub(crate) fn uniform_noise(
    rng: &Mutex<ChaCha8Rng>,
    shape: &[usize],
    r: f64,
    dev: &Device,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut rng = rng
        .lock()
        .map_err(|_| candle_core::Error::Msg("noise generator poisoned".into()))?;
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-r..=r) as f32).collect();
    Tensor::from_vec(v, shape.to_vec(), dev)
}

/// Max pooling layer (kernel 2, stride 2).
pub(crate) struct Pool {
    nd: usize,
    name: String,
}

impl Pool {
    pub fn new(ctx: &Ctx, nd: usize) -> Self {
        Self {
            nd,
            name: ctx.prefix(),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = max_pool2(x, self.nd)?;
        let kind = if self.nd == 2 {
            "MaxPool2d"
        } else {
            "MaxPool3d"
        };
        record(&self.name, kind, &y, 0, 0);
        Ok(y)
    }
}

/// Up-sampling to an explicit target size: PyMIC's `scale_factor = 2`
/// becomes "the size of the skip connection", which equals doubling for
/// even sizes and also handles odd ones.
pub(crate) struct Upsample {
    mode: UpMode,
    name: String,
}

impl Upsample {
    pub fn new(ctx: &Ctx, mode: UpMode) -> Self {
        Self {
            mode,
            name: ctx.prefix(),
        }
    }

    pub fn forward(&self, x: &Tensor, size: &[usize]) -> Result<Tensor> {
        let y = match self.mode {
            UpMode::Nearest => resize_nearest(x, size)?,
            _ => resize_linear(x, size, true)?,
        };
        record(&self.name, "Upsample", &y, 0, 0);
        Ok(y)
    }
}

/// Concatenates along channels.
pub(crate) fn cat_channels(xs: &[&Tensor]) -> Result<Tensor> {
    Tensor::cat(xs, 1)
}

/// Mean over channels keeping the axis (used by feature perturbations).
pub(crate) fn channel_mean(x: &Tensor) -> Result<Tensor> {
    x.mean_keepdim(1)
}

/// Softmax over channels.
pub(crate) fn softmax_channels(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, 1)
}

/// Log-softmax over channels.
pub(crate) fn log_softmax_channels(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::log_softmax(x, 1)
}

/// Flattens everything but the batch axis: `[N, ...] -> [N, M]`.
pub(crate) fn flatten_batch(x: &Tensor) -> Result<Tensor> {
    let n = x.dim(0)?;
    x.reshape((n, ()))
}

/// `x / (||x||_2 + 1e-8)` per sample.
pub(crate) fn l2_normalize_per_sample(x: &Tensor) -> Result<Tensor> {
    let norm = flatten_batch(x)?.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    let mut shape = vec![x.dim(0)?];
    shape.extend(std::iter::repeat_n(1, x.rank() - 1));
    x.broadcast_div(&(norm.reshape(shape)? + 1e-8)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn pseudo(shape: &[usize], seed: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| ((i as f32 * 0.613 + seed).sin() * 9187.31).fract())
            .collect();
        Tensor::from_vec(v, shape.to_vec(), &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// The candle composition (used off the f32 CPU path) and the
    /// `medseg-ops` kernels agree in value and gradient.
    #[test]
    fn composed_conv3d_matches_medseg_ops() {
        for (stride, pad, k) in [(1, 1, 3), (2, 1, 3), (1, 0, 1)] {
            let x = Var::from_tensor(&pseudo(&[2, 3, 7, 6, 5], 0.1)).unwrap();
            let w = Var::from_tensor(&pseudo(&[4, 3, k, k, k], 0.7)).unwrap();
            let b = pseudo(&[4], 0.3);
            let a =
                conv_bias(x.as_tensor(), w.as_tensor(), Some(&b), 3, stride, pad, 1, 1).unwrap();
            let c = conv_nd(x.as_tensor(), w.as_tensor(), 3, stride, pad)
                .unwrap()
                .broadcast_add(&per_channel(&b, 3).unwrap())
                .unwrap();
            assert_eq!(a.dims(), c.dims());
            assert!(max_diff(&a, &c) < 1e-4);
            if stride != 1 {
                // candle's own conv2d backward mis-sizes strided gradients
                // for odd remainders; the networks use stride 1 only.
                continue;
            }
            let ga = (a.sqr().unwrap().sum_all().unwrap()).backward().unwrap();
            let gc = (c.sqr().unwrap().sum_all().unwrap()).backward().unwrap();
            for v in [&x, &w] {
                let (g1, g2) = (
                    ga.get(v.as_tensor()).unwrap(),
                    gc.get(v.as_tensor()).unwrap(),
                );
                let scale = g2
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                let d = max_diff(g1, g2);
                assert!(
                    d < 1e-5 * scale.max(1.0),
                    "gradient differs by {d} (scale {scale})"
                );
            }
        }
    }

    #[test]
    fn composed_conv_transpose3d_matches_medseg_ops() {
        let x = Var::from_tensor(&pseudo(&[2, 3, 3, 4, 5], 0.2)).unwrap();
        let w = Var::from_tensor(&pseudo(&[3, 2, 2, 2, 2], 0.9)).unwrap();
        let b = pseudo(&[2], 0.4);
        let a = conv_transpose_bias(x.as_tensor(), w.as_tensor(), &b, 3, 2).unwrap();
        let c = conv_transpose_nd(x.as_tensor(), w.as_tensor(), 3, 2)
            .unwrap()
            .broadcast_add(&per_channel(&b, 3).unwrap())
            .unwrap();
        assert_eq!(a.dims(), &[2, 2, 6, 8, 10]);
        assert!(max_diff(&a, &c) < 1e-4);
        let ga = (a.sqr().unwrap().sum_all().unwrap()).backward().unwrap();
        let gc = (c.sqr().unwrap().sum_all().unwrap()).backward().unwrap();
        for v in [&x, &w] {
            let (g1, g2) = (
                ga.get(v.as_tensor()).unwrap(),
                gc.get(v.as_tensor()).unwrap(),
            );
            let scale = g2
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let d = max_diff(g1, g2);
            assert!(
                d < 1e-5 * scale.max(1.0),
                "gradient differs by {d} (scale {scale})"
            );
        }
    }

    /// Linear resize against hand-computed PyTorch values.
    #[test]
    fn linear_resize_matches_pytorch_conventions() {
        let x = Tensor::new(&[0f32, 1.0, 3.0], &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 3))
            .unwrap();
        // align_corners = True, 3 -> 5: positions 0, .5, 1, 1.5, 2
        let y = resize_linear(&x, &[5], true).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0.0, 0.5, 1.0, 2.0, 3.0]
        );
        // align_corners = False, 3 -> 6: src = (i + .5) / 2 - .5, clamped at 0
        let y = resize_linear(&x, &[6], false).unwrap();
        let want = [0.0, 0.25, 0.75, 1.5, 2.5, 3.0];
        for (a, b) in y
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .zip(want)
        {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        // nearest 3 -> 6 repeats each sample
        let y = resize_nearest(&x, &[6]).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0.0, 0.0, 1.0, 1.0, 3.0, 3.0]
        );
    }

    #[track_caller]
    fn grads_agree(a: &Tensor, c: &Tensor, vars: &[&Var]) {
        assert_eq!(a.dims(), c.dims());
        let scale = c
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(max_diff(a, c) < 1e-5 * scale.max(1.0), "values differ");
        // a non-symmetric loss so that the gradients are informative
        let wts = pseudo(a.dims(), 0.5);
        let ga = (a * &wts).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (c * &wts).unwrap().sum_all().unwrap().backward().unwrap();
        for v in vars {
            let (g1, g2) = (
                ga.get(v.as_tensor()).unwrap(),
                gc.get(v.as_tensor()).unwrap(),
            );
            let scale = g2
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let d = max_diff(g1, g2);
            assert!(
                d < 1e-4 * scale.max(1.0),
                "gradient differs by {d} (scale {scale})"
            );
        }
    }

    /// medseg-ops pooling and resizing agree with the candle compositions.
    #[test]
    fn pool_and_resize_kernels_match_compositions() {
        for shape in [vec![2, 3, 9, 7], vec![1, 2, 5, 7, 6]] {
            let nd = shape.len() - 2;
            let x = Var::from_tensor(&pseudo(&shape, 0.3)).unwrap();
            let xt = x.as_tensor();
            grads_agree(
                &max_pool2(xt, nd).unwrap(),
                &max_pool2_composed(xt, nd).unwrap(),
                &[&x],
            );
            let size: Vec<usize> = shape[2..].iter().map(|s| 2 * s + 1).collect();
            for ac in [true, false] {
                grads_agree(
                    &resize_linear(xt, &size, ac).unwrap(),
                    &resize_linear_composed(xt, &size, ac).unwrap(),
                    &[&x],
                );
            }
            grads_agree(
                &resize_nearest(xt, &size).unwrap(),
                &resize_nearest_composed(xt, &size).unwrap(),
                &[&x],
            );
        }
    }

    /// The fused BatchNorm/InstanceNorm kernels agree with the compositions,
    /// including the running-statistics update.
    #[test]
    fn fused_norms_match_compositions() {
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let ctx = Ctx::new(vb, 0);
        let x = Var::from_tensor(&pseudo(&[3, 4, 5, 6], 0.8)).unwrap();
        for (i, kind) in [NormType::BatchNorm, NormType::InstanceNorm]
            .into_iter()
            .enumerate()
        {
            let a = Norm::new(&ctx.pp(format!("a{i}")), kind, 4, 1).unwrap();
            let c = Norm::new(&ctx.pp(format!("c{i}")), kind, 4, 1).unwrap();
            let leaky = Act::leaky();
            for train in [true, false] {
                let ya = a.forward_act(x.as_tensor(), train, Some(&leaky)).unwrap();
                let yc = leaky
                    .forward(&c.forward_composed(x.as_tensor(), train).unwrap())
                    .unwrap();
                grads_agree(&ya, &yc, &[&x]);
            }
            if let (
                Norm::Batch {
                    running_mean: m1,
                    running_var: v1,
                    ..
                },
                Norm::Batch {
                    running_mean: m2,
                    running_var: v2,
                    ..
                },
            ) = (&a, &c)
            {
                assert!(max_diff(m1.as_tensor(), m2.as_tensor()) < 1e-6);
                assert!(max_diff(v1.as_tensor(), v2.as_tensor()) < 1e-5);
                // the statistics moved away from (0, 1)
                assert!(
                    m1.as_tensor()
                        .abs()
                        .unwrap()
                        .max_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                        > 1e-3
                );
            }
        }
    }
}
