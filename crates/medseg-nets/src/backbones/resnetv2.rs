//! ResNetV2 (Big Transfer "BiT" style): pre-activation bottlenecks of
//! weight-standardised convolutions and GroupNorms, in the layout of
//! TransUNet's hybrid encoder (the authors' `networks/
//! vit_seg_modeling_resnet_skip.py`, github Beckschen/TransUNet); see
//! [`ResNetV2`].

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::VarBuilder;

use crate::backbones::resnet::max_pool;
use crate::layers::{record, Ctx, ParamInit};
use crate::ParamInfo;

/// Convolution with weight standardisation (the authors' `StdConv2d`):
/// before each use the weight `[cout, cin, k, k]` is standardised per
/// output channel, `(w - mean) / sqrt(var + 1e-5)` (biased variance), then
/// convolved (no bias). Parameter `weight`.
pub struct StdConv2d {
    w: Tensor,
    stride: usize,
    pad: usize,
    name: String,
    macs_per_out: u64,
}

/// Epsilon of the weight standardisation.
const WS_EPS: f64 = 1e-5;

impl StdConv2d {
    /// A `k` x `k` convolution from `cin` to `cout` channels, PyTorch's
    /// initialisation (uniform in `+-1 / sqrt(cin k^2)`).
    pub(crate) fn new(
        ctx: &Ctx,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> CandleResult<Self> {
        let fan_in = cin * k * k;
        let bound = 1.0 / (fan_in as f32).sqrt();
        let w = ctx.param(&[cout, cin, k, k], "weight", ParamInit::Uniform(bound))?;
        Ok(Self {
            w,
            stride,
            pad,
            name: ctx.prefix(),
            macs_per_out: fan_in as u64,
        })
    }

    /// The standardised weight (differentiable in the raw weight).
    pub fn standardized_weight(&self) -> CandleResult<Tensor> {
        let cout = self.w.dim(0)?;
        let flat = self.w.reshape((cout, ()))?;
        let mean = flat.mean_keepdim(1)?;
        let xc = flat.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(1)?;
        xc.broadcast_div(&(var + WS_EPS)?.sqrt()?)?
            .reshape(self.w.dims())
    }

    /// `[N, cin, H, W] -> [N, cout, H', W']`.
    pub fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        let w = self.standardized_weight()?;
        let y = medseg_ops::conv2d(
            x,
            &w,
            None,
            &medseg_ops::Conv2dParams {
                stride: [self.stride; 2],
                padding: [self.pad; 2],
                dilation: [1; 2],
                groups: 1,
            },
        )?;
        record(
            &self.name,
            "StdConv2d",
            &y,
            self.w.elem_count(),
            y.elem_count() as u64 * self.macs_per_out,
        );
        Ok(y)
    }
}

/// Group normalisation with its own epsilon (PyTorch
/// `nn.GroupNorm(groups, c, eps)`), parameters `weight` and `bias`, no
/// running statistics; `medseg_ops::group_norm` (fused kernel on f32 CPU,
/// candle ops elsewhere).
pub struct GroupNorm {
    groups: usize,
    eps: f64,
    gamma: Tensor,
    beta: Tensor,
    name: String,
}

impl GroupNorm {
    /// `c` channels in `groups` groups (`groups` must divide `c`).
    pub(crate) fn new(ctx: &Ctx, groups: usize, c: usize, eps: f64) -> CandleResult<Self> {
        if groups == 0 || c % groups != 0 {
            candle_core::bail!("group norm: {c} channels are not divisible into {groups} groups")
        }
        Ok(Self {
            groups,
            eps,
            gamma: ctx.param(&[c], "weight", ParamInit::Const(1.0))?,
            beta: ctx.param(&[c], "bias", ParamInit::Const(0.0))?,
            name: ctx.prefix(),
        })
    }

    /// Normalises `[N, C, ...]` over each group's channels and positions
    /// (biased variance), then scales and shifts per channel.
    pub fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        let c = x.dim(1)?;
        let y = medseg_ops::group_norm(
            x,
            self.groups,
            Some(&self.gamma),
            Some(&self.beta),
            self.eps,
            medseg_ops::Activation::Identity,
        )?;
        record(&self.name, "GroupNorm", &y, 2 * c, 0);
        Ok(y)
    }
}

/// Epsilon of the root's and the bottlenecks' GroupNorms (the projection's
/// `gn_proj` keeps PyTorch's default 1e-5).
const GN_EPS: f64 = 1e-6;

/// The authors' `PreActBottleneck`: `relu(gn1(conv1(x)))` (1x1 to `cmid`),
/// `relu(gn2(conv2(.)))` (3x3, stride here), `gn3(conv3(.))` (1x1 to
/// `cout`), added to the input or to its projection
/// `gn_proj(downsample(x))` (1x1 with the stride, a GroupNorm of one
/// channel per group), then ReLU. Every convolution is a [`StdConv2d`]
/// without bias.
pub struct PreActBottleneck {
    gn1: GroupNorm,
    conv1: StdConv2d,
    gn2: GroupNorm,
    conv2: StdConv2d,
    gn3: GroupNorm,
    conv3: StdConv2d,
    proj: Option<(StdConv2d, GroupNorm)>,
}

impl PreActBottleneck {
    /// A unit from `cin` to `cout` channels through `cmid`; the projection
    /// exists where `stride != 1 || cin != cout`.
    pub(crate) fn new(
        ctx: &Ctx,
        cin: usize,
        cout: usize,
        cmid: usize,
        stride: usize,
        groups: usize,
    ) -> CandleResult<Self> {
        let gn1 = GroupNorm::new(&ctx.pp("gn1"), groups, cmid, GN_EPS)?;
        let conv1 = StdConv2d::new(&ctx.pp("conv1"), cin, cmid, 1, 1, 0)?;
        let gn2 = GroupNorm::new(&ctx.pp("gn2"), groups, cmid, GN_EPS)?;
        let conv2 = StdConv2d::new(&ctx.pp("conv2"), cmid, cmid, 3, stride, 1)?;
        let gn3 = GroupNorm::new(&ctx.pp("gn3"), groups, cout, GN_EPS)?;
        let conv3 = StdConv2d::new(&ctx.pp("conv3"), cmid, cout, 1, 1, 0)?;
        let proj = if stride != 1 || cin != cout {
            Some((
                StdConv2d::new(&ctx.pp("downsample"), cin, cout, 1, stride, 0)?,
                GroupNorm::new(&ctx.pp("gn_proj"), cout, cout, 1e-5)?,
            ))
        } else {
            None
        };
        Ok(Self {
            gn1,
            conv1,
            gn2,
            conv2,
            gn3,
            conv3,
            proj,
        })
    }

    /// The unit's output.
    pub fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        let residual = match &self.proj {
            Some((conv, gn)) => gn.forward(&conv.forward(x)?)?,
            None => x.clone(),
        };
        let y = self.gn1.forward(&self.conv1.forward(x)?)?.relu()?;
        let y = self.gn2.forward(&self.conv2.forward(&y)?)?.relu()?;
        let y = self.gn3.forward(&self.conv3.forward(&y)?)?;
        (residual + y)?.relu()
    }
}

/// Shape of a [`ResNetV2`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResNetV2Spec {
    /// Input channels of the root convolution (the authors: 3).
    pub in_chns: usize,
    /// Channels of the root (`64 * width_factor`; the authors: 64). Block
    /// `i` (from 0) has bottleneck width `width * 2^i` and `4 * width * 2^i`
    /// output channels.
    pub width: usize,
    /// Units of the three blocks (R50: `[3, 4, 9]`).
    pub block_units: [usize; 3],
    /// Groups of the root's and the bottlenecks' GroupNorms (the authors:
    /// 32); must divide `width`.
    pub gn_groups: usize,
}

impl ResNetV2Spec {
    /// TransUNet's R50 (`block_units` `[3, 4, 9]`, width 64, 32 groups) on
    /// `in_chns` channels: 11,894,848 parameters for 3 channels.
    pub fn r50(in_chns: usize) -> Self {
        Self {
            in_chns,
            width: 64,
            block_units: [3, 4, 9],
            gn_groups: 32,
        }
    }

    /// Checks the values and names the first bad one.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.in_chns == 0 {
            return Err("in_chns must be positive".into());
        }
        if self.block_units.contains(&0) {
            return Err(format!(
                "block_units must be positive, got {:?}",
                self.block_units
            ));
        }
        if self.gn_groups == 0 || self.width == 0 || self.width % self.gn_groups != 0 {
            return Err(format!(
                "gn_groups {} must divide the width {} (a positive number)",
                self.gn_groups, self.width
            ));
        }
        Ok(())
    }

    /// Output channels of the root and the three blocks, finest first.
    pub fn channels(&self) -> [usize; 4] {
        let w = self.width;
        [w, 4 * w, 8 * w, 16 * w]
    }
}

/// The authors' `ResNetV2` (pre-activation ResNet with weight-standardised
/// convolutions and GroupNorms; TransUNet's hybrid encoder), with their
/// parameter names:
///
/// * `root.conv`: [`StdConv2d`] 7x7, stride 2, padding 3, to `width`
///   channels; `root.gn`: GroupNorm (`gn_groups`, eps 1e-6); ReLU; then a
///   3x3 max pooling of stride 2 without padding;
/// * `body.block1..block3.unit1..`: [`PreActBottleneck`]s of bottleneck
///   width `width`, `2 width`, `4 width` (output `4x` that), the first unit
///   of `block2` and `block3` with stride 2.
///
/// Output stride 16. [`ResNetV2::features`] returns the root output (1/2),
/// the outputs of `block1` (1/4) and `block2` (1/8), each zero-padded at
/// the bottom and right to `H / 4` and `H / 8` as the authors do (the
/// unpadded max pooling loses a row: 224 gives 55, padded to 56), and the
/// output of `block3` (1/16).
///
/// The R50 of TransUNet ([`ResNetV2Spec::r50`], 3 channels) has 11,894,848
/// parameters, as the authors' `ResNetV2((3, 4, 9), 1)`.
pub struct ResNetV2 {
    spec: ResNetV2Spec,
    root_conv: StdConv2d,
    root_gn: GroupNorm,
    body: Vec<Vec<PreActBottleneck>>,
    params: Vec<ParamInfo>,
}

impl ResNetV2 {
    /// Builds the backbone at the root of `vb` (names `root.conv.weight`,
    /// `body.block1.unit1.conv1.weight`, ...), random weights seeded by
    /// `seed` where `vb` holds none.
    pub fn from_varbuilder(vb: VarBuilder, seed: u64, spec: ResNetV2Spec) -> CandleResult<Self> {
        Self::build(&Ctx::new(vb, seed), spec)
    }

    pub(crate) fn build(ctx: &Ctx, spec: ResNetV2Spec) -> CandleResult<Self> {
        spec.validate()
            .map_err(|m| candle_core::Error::Msg(format!("ResNetV2: {m}")))?;
        let w = spec.width;
        let g = spec.gn_groups;
        let root = ctx.pp("root");
        let root_conv = StdConv2d::new(&root.pp("conv"), spec.in_chns, w, 7, 2, 3)?;
        let root_gn = GroupNorm::new(&root.pp("gn"), g, w, GN_EPS)?;
        let body_ctx = ctx.pp("body");
        let mut body = Vec::with_capacity(3);
        let mut cin = w;
        for (b, &units) in spec.block_units.iter().enumerate() {
            let cmid = w << b;
            let cout = 4 * cmid;
            let stride = if b == 0 { 1 } else { 2 };
            let bc = body_ctx.pp(format!("block{}", b + 1));
            let mut block = Vec::with_capacity(units);
            for u in 0..units {
                let (ci, s) = if u == 0 { (cin, stride) } else { (cout, 1) };
                block.push(PreActBottleneck::new(
                    &bc.pp(format!("unit{}", u + 1)),
                    ci,
                    cout,
                    cmid,
                    s,
                    g,
                )?);
            }
            body.push(block);
            cin = cout;
        }
        Ok(Self {
            spec,
            root_conv,
            root_gn,
            body,
            params: ctx.params_snapshot(),
        })
    }

    /// The shape.
    pub fn spec(&self) -> &ResNetV2Spec {
        &self.spec
    }

    /// The tensors created through this backbone's context (with the
    /// network's other tensors built before it, when built inside one).
    pub fn parameters(&self) -> &[ParamInfo] {
        &self.params
    }

    /// The four feature maps, finest first: root (1/2, `width` channels),
    /// `block1` (1/4, `4 width`, zero-padded to `H / 4`), `block2` (1/8,
    /// `8 width`, padded to `H / 8`), `block3` (1/16, `16 width`). Input
    /// `[N, in_chns, H, W]` with `H, W >= 8`.
    pub fn features(&self, x: &Tensor) -> CandleResult<Vec<Tensor>> {
        let (_, _, h, w) = x.dims4()?;
        if h < 8 || w < 8 {
            candle_core::bail!(
                "ResNetV2: input {:?} is smaller than 8x8 (the stem and its pooling)",
                x.dims()
            )
        }
        let root = self.root_gn.forward(&self.root_conv.forward(x)?)?.relu()?;
        let mut y = max_pool(&root, 3, 2, 0)?;
        record("root.pool", "MaxPool2d", &y, 0, 0);
        let mut feats = vec![root];
        for (i, block) in self.body.iter().enumerate() {
            for unit in block {
                y = unit.forward(&y)?;
            }
            if i + 1 < self.body.len() {
                // the authors' `right_size = int(in_size / 4 / (i + 1))`
                let div = 4 * (i + 1);
                feats.push(pad_to(&y, h / div, w / div)?);
            }
        }
        feats.push(y);
        Ok(feats)
    }
}

/// Zero-pads `[N, C, h, w]` at the bottom and right to `[N, C, ht, wt]`.
fn pad_to(x: &Tensor, ht: usize, wt: usize) -> CandleResult<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h > ht || w > wt {
        candle_core::bail!("ResNetV2: feature {:?} is larger than {ht}x{wt}", x.dims())
    }
    let mut y = x.clone();
    if ht > h {
        y = y.pad_with_zeros(2, 0, ht - h)?;
    }
    if wt > w {
        y = y.pad_with_zeros(3, 0, wt - w)?;
    }
    Ok(y)
}
