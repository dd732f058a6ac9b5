//! DeepLabV3+ (Chen et al., ECCV 2018) in segmentation_models_pytorch's
//! layout (`smp.DeepLabV3Plus`); see [`DeepLabV3Plus`].

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::backbones::resnet::{bn, relu, ResNet, ResNetNames, ResNetSpec};
use crate::config::parse_net_config;
use crate::error::{NetError, Result};
use crate::layers::{cat_channels, resize_linear, Conv, Ctx, Dropout, Norm};
use crate::pspnet::SMP_KEYS;
use crate::unet::{fold_5d, logits_only_2d, unet_meta};
use crate::{NetOutput, ParamInfo, SegNetwork};

fn d_dimension() -> usize {
    2
}
fn d_widths() -> Vec<usize> {
    vec![64, 128, 256, 512]
}
fn d_blocks() -> Vec<usize> {
    vec![3, 4, 6, 3]
}
fn d_os() -> usize {
    16
}
fn d_channels() -> usize {
    256
}
fn d_rates() -> Vec<usize> {
    vec![12, 24, 36]
}
fn d_true() -> bool {
    true
}
fn d_dropout() -> f64 {
    0.5
}
fn d_upsampling() -> usize {
    4
}

/// Channels of the low-level (stride-4) projection, as the paper and smp.
pub const LOW_LEVEL_CHANNELS: usize = 48;

/// Configuration of [`DeepLabV3Plus`] (registry names `DeepLabV3Plus` and
/// `DeepLabV3+`).
///
/// Defaults are `smp.DeepLabV3Plus`'s: a ResNet-34 encoder of output
/// stride 16, 256 decoder channels, atrous rates 12, 24, 36, separable
/// ASPP convolutions, ASPP dropout 0.5, up-sampling 4.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeepLabV3PlusConfig {
    /// Registry name (`net_type` in PyMIC files is accepted).
    #[serde(alias = "net_type")]
    pub name: String,
    /// Spatial dimensions; only 2 is accepted (a 5D input is folded into
    /// the batch).
    #[serde(default = "d_dimension")]
    pub dimension: usize,
    /// Input channels.
    pub in_chns: usize,
    /// Output classes (logit channels).
    pub class_num: usize,
    /// Channels of the ResNet stages `layer1..layer4` (the stem has the
    /// first value); four positive values.
    #[serde(default = "d_widths")]
    pub encoder_channels: Vec<usize>,
    /// BasicBlocks per stage; four positive values.
    #[serde(default = "d_blocks")]
    pub encoder_blocks: Vec<usize>,
    /// Encoder output stride, 16 (`layer4` dilated by 2) or 8 (`layer3`
    /// dilated by 2, `layer4` by 4).
    #[serde(default = "d_os")]
    pub encoder_output_stride: usize,
    /// Channels of the ASPP branches and of the decoder.
    #[serde(default = "d_channels")]
    pub decoder_channels: usize,
    /// Dilation rates of the three atrous ASPP branches.
    #[serde(default = "d_rates")]
    pub decoder_atrous_rates: Vec<usize>,
    /// Depthwise-separable atrous ASPP convolutions (smp's default for
    /// DeepLabV3+); otherwise ordinary 3x3 convolutions.
    #[serde(default = "d_true")]
    pub decoder_aspp_separable: bool,
    /// Element-wise dropout after the ASPP projection, in `[0, 1)`.
    #[serde(default = "d_dropout")]
    pub decoder_aspp_dropout: f64,
    /// Final bilinear up-sampling factor; must be 4 (the decoder works at
    /// stride 4).
    #[serde(default = "d_upsampling")]
    pub upsampling: usize,
    /// Seed of the initial weights and of the dropout masks.
    #[serde(default)]
    pub seed: u64,
}

impl DeepLabV3PlusConfig {
    /// smp's default layout with `in_chns` inputs and `class_num` classes.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "DeepLabV3Plus".to_string(),
            dimension: d_dimension(),
            in_chns,
            class_num,
            encoder_channels: d_widths(),
            encoder_blocks: d_blocks(),
            encoder_output_stride: d_os(),
            decoder_channels: d_channels(),
            decoder_atrous_rates: d_rates(),
            decoder_aspp_separable: true,
            decoder_aspp_dropout: d_dropout(),
            upsampling: d_upsampling(),
            seed: 0,
        }
    }

    /// Checks the values and names the first bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.dimension != 2 {
            return Err(format!(
                "dimension must be 2 (DeepLabV3+ is a 2D network), got {}",
                self.dimension
            ));
        }
        if self.in_chns == 0 {
            return Err("in_chns must be positive".into());
        }
        if self.class_num == 0 {
            return Err("class_num must be positive".into());
        }
        if self.encoder_channels.len() != 4 || self.encoder_channels.contains(&0) {
            return Err(format!(
                "encoder_channels must have 4 positive values, got {:?}",
                self.encoder_channels
            ));
        }
        if self.encoder_blocks.len() != 4 || self.encoder_blocks.contains(&0) {
            return Err(format!(
                "encoder_blocks must have 4 positive values, got {:?}",
                self.encoder_blocks
            ));
        }
        if !matches!(self.encoder_output_stride, 8 | 16) {
            return Err(format!(
                "encoder_output_stride must be 8 or 16, got {}",
                self.encoder_output_stride
            ));
        }
        if self.decoder_channels == 0 {
            return Err("decoder_channels must be positive".into());
        }
        if self.decoder_atrous_rates.len() != 3 || self.decoder_atrous_rates.contains(&0) {
            return Err(format!(
                "decoder_atrous_rates must have 3 positive values, got {:?}",
                self.decoder_atrous_rates
            ));
        }
        if !(0.0..1.0).contains(&self.decoder_aspp_dropout) {
            return Err(format!(
                "decoder_aspp_dropout must be in [0, 1), got {}",
                self.decoder_aspp_dropout
            ));
        }
        if self.upsampling != 4 {
            return Err(format!(
                "upsampling must be 4 (the decoder's stride; logits at the input size), got {}",
                self.upsampling
            ));
        }
        Ok(())
    }

    fn dilations(&self) -> Vec<usize> {
        if self.encoder_output_stride == 8 {
            vec![1, 1, 2, 4]
        } else {
            vec![1, 1, 1, 2]
        }
    }
}

/// smp's `SeparableConv2d`: depthwise `k x k` convolution (`0`, no bias)
/// then pointwise 1x1 convolution (`1`).
struct SeparableConv {
    depthwise: Conv,
    pointwise: Conv,
}

impl SeparableConv {
    fn new(ctx: &Ctx, cin: usize, cout: usize, dil: usize) -> CandleResult<Self> {
        Ok(Self {
            depthwise: Conv::conv2d(&ctx.pp(0), cin, cin, 3, 1, dil, dil, cin, false)?,
            pointwise: Conv::new(&ctx.pp(1), 2, cin, cout, 1, 1, 0, false)?,
        })
    }

    fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        self.pointwise.forward(&self.depthwise.forward(x)?)
    }
}

/// A convolution (plain or separable) followed by BatchNorm and ReLU.
enum AnyConv {
    Plain(Conv),
    Separable(SeparableConv),
}

impl AnyConv {
    fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        match self {
            AnyConv::Plain(c) => c.forward(x),
            AnyConv::Separable(c) => c.forward(x),
        }
    }
}

struct ConvBn {
    conv: AnyConv,
    bn: Norm,
}

impl ConvBn {
    fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        self.bn
            .forward_act(&self.conv.forward(x)?, train, Some(&relu()))
    }
}

/// DeepLabV3+ (Chen et al., "Encoder-Decoder with Atrous Separable
/// Convolution for Semantic Image Segmentation", ECCV 2018) in
/// segmentation_models_pytorch's layout (`smp.DeepLabV3Plus`, smp 0.6),
/// with its parameter names:
///
/// * `encoder.*`: a ResNet-34 encoder ([`ResNet`], torchvision's names) of
///   output stride 16: `layer4` has stride 1 and all its 3x3 convolutions
///   dilated by 2 (smp's `make_dilated`; output stride 8 also dilates
///   `layer3` by 2 and `layer4` by 4);
/// * `decoder.aspp.0` (ASPP): `convs.0` 1x1 convolution + BN + ReLU;
///   `convs.1..3` atrous 3x3 convolutions of rates 12, 24, 36 (separable:
///   depthwise `.0.0` + pointwise `.0.1`, then BN `.1`); `convs.4` global
///   average pooling, 1x1 convolution (`.1`), BN (`.2`), ReLU, broadcast
///   back; concatenated, `project` 1x1 convolution + BN + ReLU + dropout;
///   then `decoder.aspp.1` separable 3x3 convolution, `decoder.aspp.2` BN,
///   ReLU;
/// * bilinear up-sampling (aligned corners) to stride 4, concatenated with
///   `decoder.block1` (1x1 convolution of `layer1`'s output to 48 channels,
///   BN, ReLU), `decoder.block2` (separable 3x3 convolution, BN, ReLU);
/// * `segmentation_head.0`: 1x1 convolution to `class_num`, bilinear
///   up-sampling by 4 with aligned corners.
///
/// All dilated and depthwise convolutions run through `medseg_ops::conv2d`
/// (dilation and groups supported, f32 CPU kernels; candle composition
/// elsewhere).
///
/// Differences from smp: weights start random (no ImageNet weights,
/// nothing is downloaded), the encoder's widths and blocks are
/// configurable, `encoder_depth` is fixed at 5, no `activation` and no
/// auxiliary classification head (logits are returned). In train mode the
/// ASPP pooling branch's BatchNorm sees one value per channel and sample;
/// PyTorch refuses a batch of one there, this network normalises it to the
/// BN bias.
///
/// Input sizes: multiples of the output stride (16 by default). The default
/// configuration (3 inputs, 1 class) has 22,437,457 trainable parameters,
/// as smp. tests/deeplabv3plus.rs checks outputs and BatchNorm running
/// statistics against models built by smp itself (torchvision's ResNet
/// transcribed)
/// (tools/make_smp_fixtures.py).
pub struct DeepLabV3Plus {
    cfg: DeepLabV3PlusConfig,
    params: Vec<ParamInfo>,
    encoder: ResNet,
    aspp: Vec<ConvBn>, // convs.0 .. convs.3
    pool_conv: Conv,
    pool_bn: Norm,
    project: ConvBn,
    dropout: Dropout,
    aspp_sep: ConvBn,
    block1: ConvBn,
    block2: ConvBn,
    head: Conv,
}

impl DeepLabV3Plus {
    /// Builds the network, creating (or reading) its parameters in `vb`
    /// under smp's names (`encoder.layer4.0.conv1.weight`,
    /// `decoder.aspp.0.convs.1.0.0.weight`, ...).
    pub fn new(cfg: DeepLabV3PlusConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: DeepLabV3PlusConfig) -> CandleResult<Self> {
        let spec = ResNetSpec {
            in_chns: cfg.in_chns,
            stem_chns: cfg.encoder_channels[0],
            widths: cfg.encoder_channels.clone(),
            blocks: cfg.encoder_blocks.clone(),
            dilations: cfg.dilations(),
            names: ResNetNames::torchvision(),
        };
        let encoder = ResNet::build(&ctx.pp("encoder"), spec)?;
        let cin = cfg.encoder_channels[3];
        let c = cfg.decoder_channels;
        let dec = ctx.pp("decoder");
        let a0 = dec.pp("aspp").pp(0);
        let convs = a0.pp("convs");
        let mut aspp = Vec::with_capacity(4);
        let b0 = convs.pp(0);
        aspp.push(ConvBn {
            conv: AnyConv::Plain(Conv::new(&b0.pp(0), 2, cin, c, 1, 1, 0, false)?),
            bn: bn(&b0.pp(1), c)?,
        });
        for (i, &rate) in cfg.decoder_atrous_rates.iter().enumerate() {
            let b = convs.pp(i + 1);
            let conv = if cfg.decoder_aspp_separable {
                AnyConv::Separable(SeparableConv::new(&b.pp(0), cin, c, rate)?)
            } else {
                AnyConv::Plain(Conv::conv2d(&b.pp(0), cin, c, 3, 1, rate, rate, 1, false)?)
            };
            aspp.push(ConvBn {
                conv,
                bn: bn(&b.pp(1), c)?,
            });
        }
        let b4 = convs.pp(4);
        let pool_conv = Conv::new(&b4.pp(1), 2, cin, c, 1, 1, 0, false)?;
        let pool_bn = bn(&b4.pp(2), c)?;
        let pr = a0.pp("project");
        let project = ConvBn {
            conv: AnyConv::Plain(Conv::new(&pr.pp(0), 2, 5 * c, c, 1, 1, 0, false)?),
            bn: bn(&pr.pp(1), c)?,
        };
        let dropout = Dropout::new(ctx, cfg.decoder_aspp_dropout);
        let aspp_sep = ConvBn {
            conv: AnyConv::Separable(SeparableConv::new(&dec.pp("aspp").pp(1), c, c, 1)?),
            bn: bn(&dec.pp("aspp").pp(2), c)?,
        };
        let low = cfg.encoder_channels[0];
        let b1 = dec.pp("block1");
        let block1 = ConvBn {
            conv: AnyConv::Plain(Conv::new(
                &b1.pp(0),
                2,
                low,
                LOW_LEVEL_CHANNELS,
                1,
                1,
                0,
                false,
            )?),
            bn: bn(&b1.pp(1), LOW_LEVEL_CHANNELS)?,
        };
        let b2 = dec.pp("block2");
        let block2 = ConvBn {
            conv: AnyConv::Separable(SeparableConv::new(&b2.pp(0), LOW_LEVEL_CHANNELS + c, c, 1)?),
            bn: bn(&b2.pp(1), c)?,
        };
        let head = Conv::pointwise(&ctx.pp("segmentation_head").pp(0), 2, c, cfg.class_num)?;
        Ok(Self {
            cfg,
            params: ctx.params_snapshot(),
            encoder,
            aspp,
            pool_conv,
            pool_bn,
            project,
            dropout,
            aspp_sep,
            block1,
            block2,
            head,
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &DeepLabV3PlusConfig {
        &self.cfg
    }

    fn check_input(&self, x: &Tensor) -> CandleResult<()> {
        let (_, _, h, w) = x.dims4()?;
        let m = self.cfg.encoder_output_stride;
        if h % m != 0 || w % m != 0 || h == 0 || w == 0 {
            candle_core::bail!(
                "{}: DeepLabV3+ needs height and width that are multiples of {m} (its output \
                 stride), got {h}x{w}; pad or crop the input",
                self.cfg.name
            )
        }
        Ok(())
    }

    fn forward4(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        self.check_input(x)?;
        let (_, _, h, w) = x.dims4()?;
        let feats = self.encoder.features(x, train)?;
        let f = &feats[4];
        let mut parts = Vec::with_capacity(5);
        for b in &self.aspp {
            parts.push(b.forward(f, train)?);
        }
        let p = medseg_ops::adaptive_avg_pool2d(f, [1, 1])?;
        let p = self
            .pool_bn
            .forward_act(&self.pool_conv.forward(&p)?, train, Some(&relu()))?;
        // bilinear from 1x1 is a broadcast
        parts.push(p.broadcast_as(parts[0].dims())?.contiguous()?);
        let refs: Vec<&Tensor> = parts.iter().collect();
        let y = self.project.forward(&cat_channels(&refs)?, train)?;
        let y = self.dropout.forward(&y, train)?;
        let y = self.aspp_sep.forward(&y, train)?;
        let low = &feats[1];
        let (_, _, lh, lw) = low.dims4()?;
        let y = resize_linear(&y, &[lh, lw], true)?;
        let l = self.block1.forward(low, train)?;
        let y = self.block2.forward(&cat_channels(&[&y, &l])?, train)?;
        let y = self.head.forward(&y)?;
        resize_linear(&y, &[h, w], true)
    }
}

impl SegNetwork for DeepLabV3Plus {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput> {
        logits_only_2d(&self.cfg.name, "DeepLabV3+", self.cfg.in_chns, x, |x| {
            self.forward4(x, train)
        })
    }

    // `dimension` is 2 (checked by `DeepLabV3PlusConfig::validate`)
    unet_meta!(custom_input_size);

    fn input_size(&self) -> crate::InputSize {
        let m = self.cfg.encoder_output_stride;
        crate::InputSize {
            multiple: vec![m; 2],
            minimum: vec![m; 2],
            maximum: None,
        }
    }

    /// The encoder's maps: stem output, then `layer1..layer4` (finest
    /// first). A 5D input is folded into the batch.
    fn encode(&self, x: &Tensor, train: bool) -> CandleResult<Option<Vec<Tensor>>> {
        let x = fold_5d(x)?;
        self.check_input(&x)?;
        Ok(Some(self.encoder.features(&x, train)?))
    }

    fn encoder_prefixes(&self) -> Vec<String> {
        vec!["encoder.".to_string()]
    }
}

/// Builds a DeepLabV3+ from its JSON configuration (registry entries
/// `DeepLabV3Plus` and `DeepLabV3+`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    let cfg: DeepLabV3PlusConfig = parse_net_config(config, SMP_KEYS)?;
    Ok(Box::new(DeepLabV3Plus::new(cfg, vb)?))
}
