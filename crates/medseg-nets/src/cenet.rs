//! CE-Net (Gu et al., IEEE TMI 2019) after the authors' reference
//! implementation (github.com/Guzaiwang/CE-Net, `networks/cenet.py`,
//! `CE_Net_`); see [`CENet`].

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::backbones::resnet::{bn, max_pool, relu, ResNet, ResNetNames, ResNetSpec};
use crate::config::{parse_net_config, KeyKind};
use crate::error::{NetError, Result};
use crate::layers::{cat_channels, resize_linear, Conv, Ctx, Norm, TransConv};
use crate::unet::{logits_only_2d, unet_meta};
use crate::{NetOutput, ParamInfo, SegNetwork};

fn d_dimension() -> usize {
    2
}
fn d_features() -> Vec<usize> {
    vec![64, 128, 256, 512]
}
fn d_blocks() -> Vec<usize> {
    vec![3, 4, 6, 3]
}

/// Configuration of [`CENet`] (registry names `CENet` and `CE-Net`).
///
/// Defaults are the reference's ResNet-34 layout: `feature_chns =
/// [64, 128, 256, 512]`, `block_nums = [3, 4, 6, 3]`. The reference's own
/// default is `in_chns = 3`, `class_num = 1`; here both are required.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CENetConfig {
    /// Registry name (`net_type` in PyMIC files is accepted).
    #[serde(alias = "net_type")]
    pub name: String,
    /// Spatial dimensions; CE-Net is 2D only, so only 2 is accepted (a 5D
    /// input is folded into the batch).
    #[serde(default = "d_dimension")]
    pub dimension: usize,
    /// Input channels (the reference fixes 3).
    pub in_chns: usize,
    /// Output classes (logit channels).
    pub class_num: usize,
    /// Channels of `encoder1..encoder4` (the stem has `feature_chns[0]`);
    /// four values, each at least 4 (the decoder blocks divide by 4).
    #[serde(default = "d_features")]
    pub feature_chns: Vec<usize>,
    /// BasicBlocks in `encoder1..encoder4`; four positive values.
    #[serde(default = "d_blocks")]
    pub block_nums: Vec<usize>,
    /// Seed of the initial weights.
    #[serde(default)]
    pub seed: u64,
}

impl CENetConfig {
    /// The reference's layout with `in_chns` inputs and `class_num` classes.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "CENet".to_string(),
            dimension: d_dimension(),
            in_chns,
            class_num,
            feature_chns: d_features(),
            block_nums: d_blocks(),
            seed: 0,
        }
    }

    /// Checks the values and names the first bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.dimension != 2 {
            return Err(format!(
                "dimension must be 2 (CE-Net is a 2D network), got {}",
                self.dimension
            ));
        }
        if self.in_chns == 0 {
            return Err("in_chns must be positive".into());
        }
        if self.class_num == 0 {
            return Err("class_num must be positive".into());
        }
        if self.feature_chns.len() != 4 {
            return Err(format!(
                "feature_chns must have 4 values (encoder1..encoder4), got {:?}",
                self.feature_chns
            ));
        }
        if let Some(c) = self.feature_chns.iter().find(|&&c| c < 4) {
            return Err(format!(
                "feature_chns values must be at least 4 (the decoder blocks divide channels by 4), got {c}"
            ));
        }
        if self.block_nums.len() != 4 {
            return Err(format!(
                "block_nums must have 4 values (encoder1..encoder4), got {:?}",
                self.block_nums
            ));
        }
        if self.block_nums.contains(&0) {
            return Err(format!(
                "block_nums must be positive, got {:?}",
                self.block_nums
            ));
        }
        Ok(())
    }
}

/// Dense atrous convolution block (`dblock`).
struct DacBlock {
    dilate1: Conv,
    dilate2: Conv,
    dilate3: Conv,
    conv1x1: Conv,
}

impl DacBlock {
    fn new(ctx: &Ctx, c: usize) -> CandleResult<Self> {
        // The reference zeroes every bias of the block: creating the biases
        // as zeros first makes the layers keep them.
        let zero_bias = |name: &str| -> CandleResult<()> {
            let sub = ctx.pp(name);
            if !sub.vb.contains_tensor("bias") {
                sub.vb.get_with_hints(c, "bias", Init::Const(0.0))?;
            }
            Ok(())
        };
        for name in ["dilate1", "dilate2", "dilate3", "conv1x1"] {
            zero_bias(name)?;
        }
        Ok(Self {
            dilate1: Conv::dilated(&ctx.pp("dilate1"), 2, c, c, 3, 1)?,
            dilate2: Conv::dilated(&ctx.pp("dilate2"), 2, c, c, 3, 3)?,
            dilate3: Conv::dilated(&ctx.pp("dilate3"), 2, c, c, 3, 5)?,
            conv1x1: Conv::pointwise(&ctx.pp("conv1x1"), 2, c, c)?,
        })
    }

    fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        let a = self.dilate1.forward(x)?; // dilate1(x)
        let b = self.dilate2.forward(&a)?; // dilate2(dilate1(x))
        let o1 = a.relu()?;
        let o2 = self.conv1x1.forward(&self.dilate2.forward(x)?)?.relu()?;
        let o3 = self.conv1x1.forward(&b)?.relu()?;
        let o4 = self.conv1x1.forward(&self.dilate3.forward(&b)?)?.relu()?;
        x + o1 + o2 + o3 + o4
    }
}

/// Residual multi-kernel pooling (`spp`): four pooled maps reduced to one
/// channel each, up-sampled and concatenated before the input.
struct SppBlock {
    conv: Conv,
}

/// Kernel (= stride) of the four max poolings of the `spp` block.
const SPP_POOLS: [usize; 4] = [2, 3, 5, 6];

impl SppBlock {
    fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let mut parts = Vec::with_capacity(5);
        for k in SPP_POOLS {
            let y = self.conv.forward(&max_pool(x, k, k, 0)?)?;
            parts.push(resize_linear(&y, &[h, w], false)?);
        }
        parts.push(x.clone());
        let refs: Vec<&Tensor> = parts.iter().collect();
        cat_channels(&refs)
    }
}

/// `DecoderBlock`: 1x1 conv to `cin / 4`, BN, ReLU, transposed 3x3
/// stride-2 conv, BN, ReLU, 1x1 conv, BN, ReLU (doubles the size); also
/// D-LinkNet's.
pub(crate) struct DecoderBlock {
    conv1: Conv,
    norm1: Norm,
    deconv2: TransConv,
    norm2: Norm,
    conv3: Conv,
    norm3: Norm,
}

impl DecoderBlock {
    pub(crate) fn new(ctx: &Ctx, cin: usize, cout: usize) -> CandleResult<Self> {
        let q = cin / 4;
        Ok(Self {
            conv1: Conv::pointwise(&ctx.pp("conv1"), 2, cin, q)?,
            norm1: bn(&ctx.pp("norm1"), q)?,
            deconv2: TransConv::new(&ctx.pp("deconv2"), q, q, 3, 2, 1, 1)?,
            norm2: bn(&ctx.pp("norm2"), q)?,
            conv3: Conv::pointwise(&ctx.pp("conv3"), 2, q, cout)?,
            norm3: bn(&ctx.pp("norm3"), cout)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let r = relu();
        let y = self
            .norm1
            .forward_act(&self.conv1.forward(x)?, train, Some(&r))?;
        let y = self
            .norm2
            .forward_act(&self.deconv2.forward(&y)?, train, Some(&r))?;
        self.norm3
            .forward_act(&self.conv3.forward(&y)?, train, Some(&r))
    }
}

/// CE-Net (Gu et al., "CE-Net: Context Encoder Network for 2D Medical Image
/// Segmentation", IEEE TMI 38(10), 2019), after the authors' PyTorch
/// reference implementation (github.com/Guzaiwang/CE-Net,
/// `networks/cenet.py`, class `CE_Net_`), with its module and parameter
/// names:
///
/// * a ResNet-34 encoder in torchvision's layout: `firstconv` (7x7, stride 2,
///   padding 3, no bias), `firstbn`, ReLU, `firstmaxpool` (3x3, stride 2,
///   padding 1), then `encoder1..encoder4` (torchvision's `layer1..layer4`)
///   of `[3, 4, 6, 3]` BasicBlocks (`conv1`, `bn1`, `conv2`, `bn2`,
///   `downsample.0/1` = 1x1 strided convolution + BatchNorm where the shape
///   changes), strides 1, 2, 2, 2;
/// * the dense atrous convolution block `dblock` (3x3 convolutions of
///   dilation 1, 3 and 5 with biases, a shared 1x1 convolution, ReLUs,
///   four cascaded branches added to the input; biases start at zero as in
///   the reference);
/// * the residual multi-kernel pooling block `spp` (max pooling 2, 3, 5 and
///   6 with stride equal to the kernel, a shared 1x1 convolution to one
///   channel, bilinear up-sampling without aligned corners, concatenated
///   before the input: `feature_chns[3] + 4` channels, 516 by default);
/// * `decoder4..decoder1` (1x1 convolution to a quarter of the channels, BN,
///   ReLU, 3x3 transposed convolution stride 2 padding 1 output padding 1,
///   BN, ReLU, 1x1 convolution, BN, ReLU) with additive skips from
///   `encoder3..encoder1`;
/// * `finaldeconv1` (4x4 transposed convolution, stride 2, padding 1, to 32
///   channels), ReLU, `finalconv2` (3x3), ReLU, `finalconv3` (3x3 to
///   `class_num`).
///
/// Differences from the reference: weights start random (no ImageNet
/// weights, nothing is downloaded; the convolutions use PyTorch's default
/// uniform initialisation rather than torchvision's Kaiming normal), the
/// input has `in_chns` channels instead of 3, the encoder widths and block
/// counts are configurable (defaults equal the reference), and the network
/// returns logits: the reference's final sigmoid is left out (apply a
/// sigmoid or a softmax, or a loss that takes logits).
///
/// Input sizes: `H` and `W` must be multiples of 32 (five halvings whose
/// skips are added back) and at least 192, because the 6x6 max pooling of
/// the `spp` block runs on the 1/32 feature map (PyTorch rejects smaller
/// inputs too). Other sizes are rejected with an error that says so; pad or
/// crop the input first. The network is 2D; a `[N, C, D, H, W]` input has
/// its depth folded into the batch.
///
/// The default configuration has 29,003,093 trainable parameters (21,284,672
/// in the ResNet-34 part), as the reference. tests/cenet.rs checks outputs
/// (eval and train mode) and BatchNorm running statistics against a
/// PyTorch transcription of the reference (tools/make_cenet_fixtures.py).
pub struct CENet {
    cfg: CENetConfig,
    params: Vec<ParamInfo>,
    /// `firstconv`, `firstbn`, `encoder1..encoder4`.
    resnet: ResNet,
    dblock: DacBlock,
    spp: SppBlock,
    decoders: Vec<DecoderBlock>, // decoder4 .. decoder1
    finaldeconv1: TransConv,
    finalconv2: Conv,
    finalconv3: Conv,
}

impl CENet {
    /// Input height and width must be multiples of this.
    pub const SIZE_MULTIPLE: usize = 32;
    /// Smallest input height and width (the 6x6 pooling of the `spp` block
    /// on the 1/32 feature map).
    pub const MIN_SIZE: usize = 192;

    /// Builds the network, creating (or reading) its parameters in `vb`
    /// under the reference's names (`firstconv.weight`,
    /// `encoder1.0.conv1.weight`, `dblock.dilate1.bias`, ...).
    pub fn new(cfg: CENetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: CENetConfig) -> CandleResult<Self> {
        let f = cfg.feature_chns.clone();
        let resnet = ResNet::build(
            ctx,
            ResNetSpec {
                in_chns: cfg.in_chns,
                stem_chns: f[0],
                widths: f.clone(),
                blocks: cfg.block_nums.clone(),
                dilations: vec![1; 4],
                names: ResNetNames {
                    stem_conv: "firstconv".into(),
                    stem_bn: "firstbn".into(),
                    stage: "encoder".into(),
                },
            },
        )?;
        let dblock = DacBlock::new(&ctx.pp("dblock"), f[3])?;
        let spp = SppBlock {
            conv: Conv::pointwise(&ctx.pp("spp").pp("conv"), 2, f[3], 1)?,
        };
        let decoders = vec![
            DecoderBlock::new(&ctx.pp("decoder4"), f[3] + SPP_POOLS.len(), f[2])?,
            DecoderBlock::new(&ctx.pp("decoder3"), f[2], f[1])?,
            DecoderBlock::new(&ctx.pp("decoder2"), f[1], f[0])?,
            DecoderBlock::new(&ctx.pp("decoder1"), f[0], f[0])?,
        ];
        let finaldeconv1 = TransConv::new(&ctx.pp("finaldeconv1"), f[0], 32, 4, 2, 1, 0)?;
        let finalconv2 = Conv::k3(&ctx.pp("finalconv2"), 2, 32, 32)?;
        let finalconv3 = Conv::k3(&ctx.pp("finalconv3"), 2, 32, cfg.class_num)?;
        Ok(Self {
            cfg,
            params: ctx.params_snapshot(),
            resnet,
            dblock,
            spp,
            decoders,
            finaldeconv1,
            finalconv2,
            finalconv3,
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &CENetConfig {
        &self.cfg
    }

    /// Checks the spatial size (rank and channels: [`logits_only_2d`]).
    fn check_input(&self, x: &Tensor) -> CandleResult<()> {
        let (_, _, h, w) = x.dims4()?;
        let ok = |s: usize| s % Self::SIZE_MULTIPLE == 0 && s >= Self::MIN_SIZE;
        if !ok(h) || !ok(w) {
            candle_core::bail!(
                "{}: CE-Net needs height and width that are multiples of {} and at least {} \
                 (its 6x6 pyramid pooling runs on the 1/32 feature map), got {h}x{w}; \
                 pad or crop the input",
                self.cfg.name,
                Self::SIZE_MULTIPLE,
                Self::MIN_SIZE
            )
        }
        Ok(())
    }

    fn forward4(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        self.check_input(x)?;
        // stem output, encoder1..encoder4
        let feats = self.resnet.features(x, train)?;
        let skips = &feats[1..];
        let centre = self.spp.forward(&self.dblock.forward(&skips[3])?)?;
        let mut d = centre;
        for (k, dec) in self.decoders.iter().enumerate() {
            d = dec.forward(&d, train)?;
            if k < 3 {
                d = (d + &skips[2 - k])?;
            }
        }
        let y = self.finaldeconv1.forward(&d)?.relu()?;
        let y = self.finalconv2.forward(&y)?.relu()?;
        self.finalconv3.forward(&y)
    }
}

impl SegNetwork for CENet {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput> {
        logits_only_2d(&self.cfg.name, "CE-Net", self.cfg.in_chns, x, |x| {
            self.forward4(x, train)
        })
    }

    // `dimension` is 2 (checked by `CENetConfig::validate`)
    unet_meta!(custom_input_size);

    fn input_size(&self) -> crate::InputSize {
        crate::InputSize {
            multiple: vec![Self::SIZE_MULTIPLE; 2],
            minimum: vec![Self::MIN_SIZE; 2],
            maximum: None,
        }
    }
}

/// Builds a CENet from its JSON configuration (registry entries `CENet`
/// and `CE-Net`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    let cfg: CENetConfig = parse_net_config(
        config,
        &[
            ("feature_chns", KeyKind::UsizeList),
            ("block_nums", KeyKind::UsizeList),
        ],
    )?;
    Ok(Box::new(CENet::new(cfg, vb)?))
}
