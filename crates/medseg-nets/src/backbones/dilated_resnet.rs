//! The dilated Bottleneck ResNet of JMedSeg (`model/backbone/resnet.py`,
//! github.com/THU-CVlab/JMedSeg): ResNet-50/101 at output stride 8 or 16
//! with a three-convolution stem and a multi-grid last stage, shared by the
//! attention-head networks (DANet, OCNet, OCRNet), and the GroupNorm copy
//! of it inside JMedSeg's `model/EANet.py` ([`ResNetFlavour::EANet`]); see
//! [`DilatedResNet`].

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::VarBuilder;

use super::resnet::{bn, max_pool, relu};
use crate::config::NormType;
use crate::layers::{Conv, Ctx, Norm};
use crate::ParamInfo;

/// Block counts of `layer1..layer3` of JMedSeg's `resnet50` (`layer4` is
/// the multi-grid unit of [`MULTI_GRID`]).
pub const RESNET50_BLOCKS: [usize; 3] = [3, 4, 6];
/// Block counts of `layer1..layer3` of JMedSeg's `resnet101`.
pub const RESNET101_BLOCKS: [usize; 3] = [3, 4, 23];
/// Dilation multipliers of the three Bottlenecks of `layer4` (JMedSeg's
/// `_make_MG_unit(blocks=[1, 2, 4])`).
pub const MULTI_GRID: [usize; 3] = [1, 2, 4];

/// Which of JMedSeg's two copies of the dilated ResNet a
/// [`DilatedResNet`] follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResNetFlavour {
    /// `model/backbone/resnet.py` (DANet, OCNet, OCRNet): BatchNorm; the
    /// stem's third convolution is neither normalised nor activated; 3x3
    /// max pooling (stride 2, padding 1); every Bottleneck of a stage
    /// carries the stage's dilation (times the multi-grid factor in
    /// `layer4`).
    #[default]
    Backbone,
    /// The copy inside `model/EANet.py`: JMedSeg's `NormLayer` (a GroupNorm
    /// of 1, 4, 8, 16 or 32 groups for fewer than 64, at least 64, 128,
    /// 256 or 512 channels; parameters under `<layer>.norm.`) in place of
    /// every BatchNorm; the stem ends with `bn1` and ReLU; 2x2 max pooling
    /// (stride 2); the first Bottleneck of every stage is undilated (so
    /// `layer4` at output stride 16 is dilated 1, 4, 8).
    EANet,
}

impl ResNetFlavour {
    /// The normalisation of `c` channels at `ctx`.
    fn norm(self, ctx: &Ctx, c: usize) -> CandleResult<Norm> {
        match self {
            ResNetFlavour::Backbone => bn(ctx, c),
            ResNetFlavour::EANet => norm_layer(ctx, c),
        }
    }
}

/// JMedSeg's `NormLayer(c)` (`model/EANet.py`): a GroupNorm whose group
/// count grows with the channels (1 below 64, then 4, 8, 16, 32 from 64,
/// 128, 256, 512 channels), its parameters under `<ctx>.norm.`.
pub fn norm_layer_groups(c: usize) -> usize {
    match c {
        c if c >= 512 => 32,
        c if c >= 256 => 16,
        c if c >= 128 => 8,
        c if c >= 64 => 4,
        _ => 1,
    }
}

/// The GroupNorm of [`norm_layer_groups`] at `<ctx>.norm`.
pub(crate) fn norm_layer(ctx: &Ctx, c: usize) -> CandleResult<Norm> {
    Norm::new(
        &ctx.pp("norm"),
        NormType::GroupNorm,
        c,
        norm_layer_groups(c),
    )
}

/// Shape of a [`DilatedResNet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DilatedResNetSpec {
    /// Input channels of the stem (JMedSeg hard-codes 3).
    pub in_chns: usize,
    /// Base width `w` (JMedSeg: 64): the stem has `w`, `w`, `2w` channels,
    /// the stages `w`, `2w`, `4w`, `8w` Bottleneck planes (outputs four
    /// times that: 256, 512, 1024, 2048 by default).
    pub width: usize,
    /// Bottlenecks of `layer1..layer3` (ResNet-101: `[3, 4, 23]`); `layer4`
    /// always has the three of [`MULTI_GRID`].
    pub blocks: Vec<usize>,
    /// Output stride of `layer3` and `layer4`: 16 (`layer4` dilated 2) or 8
    /// (`layer3` dilated 2, `layer4` dilated 4).
    pub output_stride: usize,
    /// Which of JMedSeg's copies it follows.
    pub flavour: ResNetFlavour,
}

impl DilatedResNetSpec {
    /// JMedSeg's `resnet50(output_stride)` with `in_chns` inputs.
    pub fn resnet50(in_chns: usize, output_stride: usize) -> Self {
        Self {
            in_chns,
            width: 64,
            blocks: RESNET50_BLOCKS.to_vec(),
            output_stride,
            flavour: ResNetFlavour::Backbone,
        }
    }

    /// JMedSeg's `resnet101(output_stride)` with `in_chns` inputs.
    pub fn resnet101(in_chns: usize, output_stride: usize) -> Self {
        Self {
            blocks: RESNET101_BLOCKS.to_vec(),
            ..Self::resnet50(in_chns, output_stride)
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.in_chns == 0 || self.width == 0 {
            return Err("channel counts must be positive".into());
        }
        if self.blocks.len() != 3 || self.blocks.contains(&0) {
            return Err(format!(
                "blocks of layer1..layer3 must be 3 positive values, got {:?}",
                self.blocks
            ));
        }
        if !matches!(self.output_stride, 8 | 16) {
            return Err(format!(
                "output_stride must be 8 or 16, got {}",
                self.output_stride
            ));
        }
        Ok(())
    }

    /// Strides and dilations of `layer1..layer4` (JMedSeg's table).
    fn strides_dilations(&self) -> ([usize; 4], [usize; 4]) {
        if self.output_stride == 16 {
            ([1, 2, 2, 1], [1, 1, 1, 2])
        } else {
            ([1, 2, 1, 1], [1, 1, 2, 4])
        }
    }

    /// Output channels of `layer1..layer4` (`4w, 8w, 16w, 32w`).
    pub fn channels(&self) -> [usize; 4] {
        let w = self.width;
        [4 * w, 8 * w, 16 * w, 32 * w]
    }
}

/// The Bottleneck of JMedSeg (torchvision's v1.5 layout: the stride on the
/// 3x3 convolution): `conv1` 1x1, `bn1`, ReLU, `conv2` 3x3 (stride,
/// dilation = padding), `bn2`, ReLU, `conv3` 1x1 to four times the planes,
/// `bn3`, plus the identity or `downsample.0` (1x1, stride) and
/// `downsample.1` (BatchNorm, or the GroupNorm of
/// [`ResNetFlavour::EANet`]), ReLU.
pub struct Bottleneck {
    conv1: Conv,
    bn1: Norm,
    conv2: Conv,
    bn2: Norm,
    conv3: Conv,
    bn3: Norm,
    downsample: Option<(Conv, Norm)>,
}

impl Bottleneck {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ctx: &Ctx,
        flavour: ResNetFlavour,
        cin: usize,
        planes: usize,
        stride: usize,
        dilation: usize,
        project: bool,
    ) -> CandleResult<Self> {
        let out = 4 * planes;
        let d = dilation;
        let norm = |name: &str, c: usize| flavour.norm(&ctx.pp(name), c);
        let downsample = if project {
            let p = ctx.pp("downsample");
            Some((
                Conv::new(&p.pp(0), 2, cin, out, 1, stride, 0, false)?,
                flavour.norm(&p.pp(1), out)?,
            ))
        } else {
            None
        };
        Ok(Self {
            conv1: Conv::new(&ctx.pp("conv1"), 2, cin, planes, 1, 1, 0, false)?,
            bn1: norm("bn1", planes)?,
            conv2: Conv::conv2d(&ctx.pp("conv2"), planes, planes, 3, stride, d, d, 1, false)?,
            bn2: norm("bn2", planes)?,
            conv3: Conv::new(&ctx.pp("conv3"), 2, planes, out, 1, 1, 0, false)?,
            bn3: norm("bn3", out)?,
            downsample,
        })
    }

    /// The block's output (`train`: batch statistics and running-average
    /// update in the BatchNorms).
    pub fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let r = Some(relu());
        let y = self
            .bn1
            .forward_act(&self.conv1.forward(x)?, train, r.as_ref())?;
        let y = self
            .bn2
            .forward_act(&self.conv2.forward(&y)?, train, r.as_ref())?;
        let y = self.bn3.forward(&self.conv3.forward(&y)?, train)?;
        let id = match &self.downsample {
            Some((c, n)) => n.forward(&c.forward(x)?, train)?,
            None => x.clone(),
        };
        (y + id)?.relu()
    }
}

/// JMedSeg's dilated Bottleneck ResNet (`model/backbone/resnet.py`,
/// `resnet50` / `resnet101`), with its parameter names:
///
/// * `conv1.{0,1,3,4,6}`: the stem, 3x3 convolutions `in -> w` (stride 2),
///   `w -> w`, `w -> 2w` (no biases), BatchNorm + ReLU after the first two
///   only (JMedSeg leaves the third unnormalised), then 3x3 max pooling
///   (stride 2, padding 1);
/// * `layer1..layer3`: Bottlenecks of `w`, `2w`, `4w` planes, strides 1,
///   2, 2 (output stride 16) or 1, 2, 1 with `layer3` dilated 2 (output
///   stride 8); every block of a stage has the stage's dilation;
/// * `layer4`: JMedSeg's multi-grid unit, three Bottlenecks of `8w` planes,
///   stride 1, dilated 2, 4, 8 (output stride 16) or 4, 8, 16 (8).
///
/// With [`ResNetFlavour::EANet`] it is the copy inside JMedSeg's
/// `model/EANet.py` instead (GroupNorms, `bn1` after the stem, 2x2 max
/// pooling, undilated first blocks; output stride 16 only there).
///
/// Differences from JMedSeg: configurable input channels, base width and
/// block counts (for small test configurations); no ImageNet weights.
/// ResNet-101 at the default width holds 42,623,680 parameters for 3
/// inputs (JMedSeg's count; tools/make_attention_fixtures.py).
///
/// Every convolution rounds odd sizes up (`ceil(H / 2)` per stride), so any
/// input size of at least 1 runs; [`DilatedResNet::features`] returns the
/// outputs of `layer1..layer4` (strides 4, 8, then `output_stride` twice),
/// as JMedSeg's `execute`.
pub struct DilatedResNet {
    spec: DilatedResNetSpec,
    params: Vec<ParamInfo>,
    stem: [(Conv, Option<Norm>); 3],
    /// The EANet flavour's `bn1` after the stem's third convolution.
    stem_norm: Option<Norm>,
    stages: Vec<Vec<Bottleneck>>,
}

impl DilatedResNet {
    /// Builds the backbone at the root of `vb` (parameters initialised from
    /// `seed` where `vb` does not hold them).
    pub fn new(spec: DilatedResNetSpec, vb: VarBuilder, seed: u64) -> crate::Result<Self> {
        spec.validate().map_err(crate::NetError::Config)?;
        let ctx = Ctx::new(vb, seed);
        let mut r = Self::build(&ctx, spec)?;
        r.params = ctx.params_snapshot();
        Ok(r)
    }

    /// Builds the backbone in `ctx` (the caller validated `spec`).
    pub(crate) fn build(ctx: &Ctx, spec: DilatedResNetSpec) -> CandleResult<Self> {
        let w = spec.width;
        let f = spec.flavour;
        let s = ctx.pp("conv1");
        let stem = [
            (
                Conv::new(&s.pp(0), 2, spec.in_chns, w, 3, 2, 1, false)?,
                Some(f.norm(&s.pp(1), w)?),
            ),
            (
                Conv::new(&s.pp(3), 2, w, w, 3, 1, 1, false)?,
                Some(f.norm(&s.pp(4), w)?),
            ),
            (Conv::new(&s.pp(6), 2, w, 2 * w, 3, 1, 1, false)?, None),
        ];
        let stem_norm = match f {
            ResNetFlavour::Backbone => None,
            ResNetFlavour::EANet => Some(f.norm(&ctx.pp("bn1"), 2 * w)?),
        };
        let (strides, dilations) = spec.strides_dilations();
        let mut cin = 2 * w;
        let mut stages = Vec::with_capacity(4);
        for i in 0..4 {
            let planes = w << i;
            let e = ctx.pp(format!("layer{}", i + 1));
            // dilation of each block: the stage's, times the multi-grid
            // factor in layer4
            let mut dils: Vec<usize> = if i < 3 {
                vec![dilations[i]; spec.blocks[i]]
            } else {
                MULTI_GRID.iter().map(|m| m * dilations[i]).collect()
            };
            if f == ResNetFlavour::EANet {
                // EANet.py builds every stage's first block with dilation 1
                dils[0] = 1;
            }
            let mut blocks = Vec::with_capacity(dils.len());
            for (j, &dil) in dils.iter().enumerate() {
                let (stride, project) = if j == 0 {
                    (strides[i], strides[i] != 1 || cin != 4 * planes)
                } else {
                    (1, false)
                };
                blocks.push(Bottleneck::new(
                    &e.pp(j),
                    f,
                    cin,
                    planes,
                    stride,
                    dil,
                    project,
                )?);
                cin = 4 * planes;
            }
            stages.push(blocks);
        }
        Ok(Self {
            spec,
            params: Vec::new(),
            stem,
            stem_norm,
            stages,
        })
    }

    /// The shape it was built with.
    pub fn spec(&self) -> &DilatedResNetSpec {
        &self.spec
    }

    /// The tensors of a stand-alone backbone ([`DilatedResNet::new`]);
    /// empty when built inside a network (the network lists them).
    pub fn parameters(&self) -> &[ParamInfo] {
        &self.params
    }

    /// Overall stride of each returned feature map: 4, 8, then the output
    /// stride twice.
    pub fn strides(&self) -> [usize; 4] {
        let o = self.spec.output_stride;
        [4, 8, o, o]
    }

    /// Feature maps of `[N, C, H, W]` input: the outputs of `layer1`,
    /// `layer2`, `layer3` and `layer4`.
    pub fn features(&self, x: &Tensor, train: bool) -> CandleResult<Vec<Tensor>> {
        let mut y = x.clone();
        for (conv, norm) in &self.stem {
            y = conv.forward(&y)?;
            if let Some(n) = norm {
                y = n.forward_act(&y, train, Some(&relu()))?;
            }
        }
        let mut y = match &self.stem_norm {
            None => max_pool(&y, 3, 2, 1)?,
            Some(n) => max_pool(&n.forward_act(&y, train, Some(&relu()))?, 2, 2, 0)?,
        };
        let mut out = Vec::with_capacity(4);
        for blocks in &self.stages {
            for b in blocks {
                y = b.forward(&y, train)?;
            }
            out.push(y.clone());
        }
        Ok(out)
    }
}
