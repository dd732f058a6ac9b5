//! TernausNet (Iglovikov & Shvets 2018): a UNet with a VGG11 encoder, after
//! the authors' `ternausnet/models.py`, class `UNet11`; see
//! [`TernausUNet`].

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::backbones::vgg::{Vgg, VGG11_CONVS, VGG_WIDTHS};
use crate::config::{parse_net_config, KeyKind};
use crate::error::{NetError, Result};
use crate::layers::{cat_channels, max_pool2, Conv, Ctx, TransConv};
use crate::unet::{fold_5d, logits_only_2d, unet_meta};
use crate::{NetOutput, ParamInfo, SegNetwork};

fn d_dimension() -> usize {
    2
}
fn d_features() -> Vec<usize> {
    VGG_WIDTHS.to_vec()
}
fn d_filters() -> usize {
    32
}

/// Configuration of [`TernausUNet`] (registry name `TernausUNet`).
///
/// Defaults are the reference's: VGG11 block widths `feature_chns = [64,
/// 128, 256, 512, 512]` (convolutions per block fixed at VGG11's `[1, 1,
/// 2, 2, 2]`) and `num_filters = 32`. The reference fixes 3 input channels
/// and 1 class; here both are required.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TernausUNetConfig {
    /// Registry name (`net_type` in PyMIC files is accepted).
    #[serde(alias = "net_type")]
    pub name: String,
    /// Spatial dimensions; TernausNet is 2D only, so only 2 is accepted (a
    /// 5D input is folded into the batch).
    #[serde(default = "d_dimension")]
    pub dimension: usize,
    /// Input channels (the reference fixes 3).
    pub in_chns: usize,
    /// Output classes (logit channels; the reference fixes 1).
    pub class_num: usize,
    /// Widths of the five VGG11 encoder blocks; five positive values.
    #[serde(default = "d_features")]
    pub feature_chns: Vec<usize>,
    /// The decoder's base width (`num_filters` of the reference).
    #[serde(default = "d_filters")]
    pub num_filters: usize,
    /// Seed of the initial weights.
    #[serde(default)]
    pub seed: u64,
}

impl TernausUNetConfig {
    /// The reference's layout with `in_chns` inputs and `class_num` classes.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "TernausUNet".to_string(),
            dimension: d_dimension(),
            in_chns,
            class_num,
            feature_chns: d_features(),
            num_filters: d_filters(),
            seed: 0,
        }
    }

    /// Checks the values and names the first bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.dimension != 2 {
            return Err(format!(
                "dimension must be 2 (TernausNet is a 2D network), got {}",
                self.dimension
            ));
        }
        if self.in_chns == 0 {
            return Err("in_chns must be positive".into());
        }
        if self.class_num == 0 {
            return Err("class_num must be positive".into());
        }
        if self.feature_chns.len() != 5 || self.feature_chns.contains(&0) {
            return Err(format!(
                "feature_chns must be 5 positive values (one per VGG11 block), got {:?}",
                self.feature_chns
            ));
        }
        if self.num_filters == 0 {
            return Err("num_filters must be positive".into());
        }
        Ok(())
    }
}

/// `ConvRelu`: 3x3 convolution (padding 1, bias) and ReLU, module `conv`.
struct ConvRelu {
    conv: Conv,
}

impl ConvRelu {
    fn new(ctx: &Ctx, cin: usize, cout: usize) -> CandleResult<Self> {
        Ok(Self {
            conv: Conv::k3(&ctx.pp("conv"), 2, cin, cout)?,
        })
    }

    fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        self.conv.forward(x)?.relu()
    }
}

/// `DecoderBlock`: `block.0` = ConvRelu to `mid`, `block.1` = 3x3
/// transposed convolution (stride 2, padding 1, output padding 1) to
/// `cout`, ReLU: doubles the size.
struct DecoderBlock {
    conv: ConvRelu,
    deconv: TransConv,
}

impl DecoderBlock {
    fn new(ctx: &Ctx, cin: usize, mid: usize, cout: usize) -> CandleResult<Self> {
        let b = ctx.pp("block");
        Ok(Self {
            conv: ConvRelu::new(&b.pp(0), cin, mid)?,
            deconv: TransConv::new(&b.pp(1), mid, cout, 3, 2, 1, 1)?,
        })
    }

    fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        self.deconv.forward(&self.conv.forward(x)?)?.relu()
    }
}

/// TernausNet (Iglovikov & Shvets, "TernausNet: U-Net with VGG11 Encoder
/// Pre-Trained on ImageNet for Image Segmentation", arXiv:1801.05746,
/// 2018), after the authors' PyTorch code (`ternausnet/models.py`, class
/// `UNet11`), with its module names:
///
/// * `encoder`: VGG11's feature extractor in torchvision's layout ([`Vgg`]
///   without BatchNorm: `encoder.0`, `encoder.3`, `encoder.6`, `encoder.8`,
///   `encoder.11`, `encoder.13`, `encoder.16`, `encoder.18`, the
///   reference's `conv1`, `conv2`, `conv3s`, `conv3`, `conv4s`, `conv4`,
///   `conv5s`, `conv5`), widths `64, 128, 256, 256, 512, 512, 512, 512`,
///   ReLU after each, 2x2 max pooling before blocks 2..5 and the centre;
/// * `center`, `dec5`, `dec4`, `dec3`, `dec2`: `DecoderBlock`s
///   (`block.0.conv` = 3x3 convolution + ReLU, `block.1` = 3x3 transposed
///   convolution, stride 2, padding 1, output padding 1, + ReLU), each
///   after concatenating the skip (`[decoder, encoder]` order); middle and
///   output widths `(16, 8)`, `(16, 8)`, `(16, 4)`, `(8, 2)`, `(4, 1)` times
///   `num_filters`;
/// * `dec1`: `ConvRelu` to `num_filters` on `[dec2, conv1]`; `final`: 1x1
///   convolution to `class_num` logits.
///
/// The concatenations take the actual widths (`num_filters * 8 +
/// feature_chns[4]`, ...); with the defaults they equal the reference's
/// `num_filters * (16 + 8)`, ... (the reference only builds for
/// `num_filters = 32`).
///
/// Differences from the reference: no ImageNet weights (PyTorch's default
/// initialisation), `in_chns` input channels instead of 3, `class_num`
/// outputs instead of 1, configurable encoder widths. The reference's
/// state dicts also list the encoder under its aliases (`conv1.weight` =
/// `encoder.0.weight`, ...); import them without those duplicates.
///
/// Input sizes: height and width must be multiples of 32 (five halvings
/// whose skips are concatenated back); others are rejected with an error
/// that says so. The network is 2D; a `[N, C, D, H, W]` input has its
/// depth folded into the batch.
///
/// The default configuration (3 input channels, 1 class) has 22,927,393
/// trainable parameters (9,220,480 in the encoder, torchvision's
/// `vgg11().features`), as the reference. tests/ternaus.rs checks outputs
/// against a PyTorch transcription (tools/make_ternaus_fixtures.py).
pub struct TernausUNet {
    cfg: TernausUNetConfig,
    params: Vec<ParamInfo>,
    encoder: Vgg,
    center: DecoderBlock,
    decs: Vec<DecoderBlock>, // dec5 .. dec2
    dec1: ConvRelu,
    final_conv: Conv,
}

impl TernausUNet {
    /// Input height and width must be multiples of this.
    pub const SIZE_MULTIPLE: usize = 32;

    /// Builds the network, creating (or reading) its parameters in `vb`
    /// under the reference's names (`encoder.0.weight`,
    /// `center.block.0.conv.weight`, `dec1.conv.bias`, `final.weight`, ...).
    pub fn new(cfg: TernausUNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: TernausUNetConfig) -> CandleResult<Self> {
        let f = &cfg.feature_chns;
        let nf = cfg.num_filters;
        let encoder = Vgg::new(&ctx.pp("encoder"), cfg.in_chns, f, &VGG11_CONVS, false)?;
        let center = DecoderBlock::new(&ctx.pp("center"), f[4], nf * 16, nf * 8)?;
        let decs = vec![
            DecoderBlock::new(&ctx.pp("dec5"), nf * 8 + f[4], nf * 16, nf * 8)?,
            DecoderBlock::new(&ctx.pp("dec4"), nf * 8 + f[3], nf * 16, nf * 4)?,
            DecoderBlock::new(&ctx.pp("dec3"), nf * 4 + f[2], nf * 8, nf * 2)?,
            DecoderBlock::new(&ctx.pp("dec2"), nf * 2 + f[1], nf * 4, nf)?,
        ];
        let dec1 = ConvRelu::new(&ctx.pp("dec1"), nf + f[0], nf)?;
        let final_conv = Conv::pointwise(&ctx.pp("final"), 2, nf, cfg.class_num)?;
        Ok(Self {
            cfg,
            params: ctx.params_snapshot(),
            encoder,
            center,
            decs,
            dec1,
            final_conv,
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &TernausUNetConfig {
        &self.cfg
    }

    fn check_input(&self, x: &Tensor) -> CandleResult<()> {
        let (_, _, h, w) = x.dims4()?;
        let ok = |s: usize| s > 0 && s % Self::SIZE_MULTIPLE == 0;
        if !ok(h) || !ok(w) {
            candle_core::bail!(
                "{}: TernausUNet needs height and width that are multiples of {} \
                 (five poolings whose skips are concatenated back), got {h}x{w}; \
                 pad or crop the input",
                self.cfg.name,
                Self::SIZE_MULTIPLE
            )
        }
        Ok(())
    }

    fn forward4(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        self.check_input(x)?;
        let skips = self.encoder.forward(x, train)?; // conv1, conv2, conv3, conv4, conv5
        let mut d = self.center.forward(&max_pool2(&skips[4], 2)?)?;
        for (k, dec) in self.decs.iter().enumerate() {
            d = dec.forward(&cat_channels(&[&d, &skips[4 - k]])?)?;
        }
        let d = self.dec1.forward(&cat_channels(&[&d, &skips[0]])?)?;
        self.final_conv.forward(&d)
    }
}

impl SegNetwork for TernausUNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput> {
        logits_only_2d(&self.cfg.name, "TernausUNet", self.cfg.in_chns, x, |x| {
            self.forward4(x, train)
        })
    }

    /// The five VGG11 blocks' outputs (`conv1`, `conv2`, `conv3`, `conv4`,
    /// `conv5` of the reference, 1 .. 1/16 of the input size), finest
    /// first.
    fn encode(&self, x: &Tensor, train: bool) -> CandleResult<Option<Vec<Tensor>>> {
        if !matches!(x.rank(), 4 | 5) || x.dim(1)? != self.cfg.in_chns {
            candle_core::bail!(
                "{}: expected [N, {}, H, W] or [N, {}, D, H, W] input, got shape {:?}",
                self.cfg.name,
                self.cfg.in_chns,
                self.cfg.in_chns,
                x.dims()
            )
        }
        let x4 = fold_5d(x)?;
        self.check_input(&x4)?;
        Ok(Some(self.encoder.forward(&x4, train)?))
    }

    fn encoder_prefixes(&self) -> Vec<String> {
        vec!["encoder.".to_string()]
    }

    // `dimension` is 2 (checked by `TernausUNetConfig::validate`)
    unet_meta!(custom_input_size);

    fn input_size(&self) -> crate::InputSize {
        crate::InputSize::pooled(2, 5)
    }
}

/// Builds a TernausUNet from its JSON configuration (registry entry
/// `TernausUNet`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    let cfg: TernausUNetConfig = parse_net_config(
        config,
        &[
            ("num_filters", KeyKind::Usize),
            ("feature_chns", KeyKind::UsizeList),
        ],
    )?;
    Ok(Box::new(TernausUNet::new(cfg, vb)?))
}
