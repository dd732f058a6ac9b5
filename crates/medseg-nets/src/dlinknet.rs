//! D-LinkNet (Zhou et al., CVPR Workshops 2018) after the authors' code
//! (github.com/zlckanata/DeepGlobe-Road-Extraction-Challenge,
//! `networks/dinknet.py`, `DinkNet34`) as JMedSeg ships it
//! (`model/dlink_jittor.py`); see [`DLinkNet`].

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::backbones::resnet::{ResNet, ResNetNames, ResNetSpec};
use crate::cenet::DecoderBlock;
use crate::config::{parse_net_config, KeyKind};
use crate::error::{NetError, Result};
use crate::layers::{Conv, Ctx, TransConv};
use crate::unet::{fold_5d, logits_only_2d, unet_meta};
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

/// Configuration of [`DLinkNet`] (registry names `DLinkNet` and
/// `D-LinkNet`).
///
/// Defaults are the reference's ResNet-34 layout: `feature_chns = [64, 128,
/// 256, 512]`, `block_nums = [3, 4, 6, 3]`. The reference's own default is
/// 3 input channels and `num_classes = 1` with a sigmoid; here `in_chns` and
/// `class_num` are required and the network returns `class_num` logits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DLinkNetConfig {
    /// Registry name (`net_type` in PyMIC files is accepted).
    #[serde(alias = "net_type")]
    pub name: String,
    /// Spatial dimensions; D-LinkNet is 2D only, so only 2 is accepted (a
    /// 5D input is folded into the batch).
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

impl DLinkNetConfig {
    /// The reference's layout with `in_chns` inputs and `class_num` classes.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "DLinkNet".to_string(),
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
                "dimension must be 2 (D-LinkNet is a 2D network), got {}",
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
        if self.block_nums.len() != 4 || self.block_nums.contains(&0) {
            return Err(format!(
                "block_nums must have 4 positive values (encoder1..encoder4), got {:?}",
                self.block_nums
            ));
        }
        Ok(())
    }
}

/// D-LinkNet's centre `Dblock`: four chained 3x3 convolutions (with bias)
/// of dilation 1, 2, 4 and 8, each followed by ReLU, all added to the input.
struct Dblock {
    convs: Vec<Conv>,
}

impl Dblock {
    fn new(ctx: &Ctx, c: usize) -> CandleResult<Self> {
        let mut convs = Vec::with_capacity(4);
        for (i, d) in [1, 2, 4, 8].into_iter().enumerate() {
            let sub = ctx.pp(format!("dilate{}", i + 1));
            // the reference zeroes these biases: creating them as zeros
            // first makes the layer keep them
            if !sub.vb.contains_tensor("bias") {
                sub.vb.get_with_hints(c, "bias", Init::Const(0.0))?;
            }
            convs.push(Conv::dilated(&sub, 2, c, c, 3, d)?);
        }
        Ok(Self { convs })
    }

    fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        let mut sum = x.clone();
        let mut y = x.clone();
        for c in &self.convs {
            y = c.forward(&y)?.relu()?;
            sum = (sum + &y)?;
        }
        Ok(sum)
    }
}

/// D-LinkNet 34 (Zhou, Zhang and Wu, "D-LinkNet: LinkNet with Pretrained
/// Encoder and Dilated Convolution for High Resolution Satellite Imagery
/// Road Extraction", CVPR Workshops 2018), after the authors' PyTorch code
/// (github.com/zlckanata/DeepGlobe-Road-Extraction-Challenge,
/// `networks/dinknet.py`, class `DinkNet34`) that JMedSeg ports
/// (`model/dlink_jittor.py`), with its module and parameter names:
///
/// * a ResNet-34 encoder in torchvision's layout, the shared
///   [`ResNet`](crate::ResNet) backbone: `firstconv` (7x7, stride 2),
///   `firstbn`, ReLU, `firstmaxpool` (3x3, stride 2, padding 1), then
///   `encoder1..encoder4` of `[3, 4, 6, 3]` BasicBlocks;
/// * the centre `dblock`: 3x3 convolutions of dilation 1, 2, 4 and 8 in a
///   chain, each with ReLU, their outputs added to the input (biases start
///   at zero as in the reference);
/// * `decoder4..decoder1` (CE-Net's decoder block: 1x1 convolution to a
///   quarter of the channels, BN, ReLU, 3x3 transposed convolution stride 2,
///   BN, ReLU, 1x1 convolution, BN, ReLU) with additive skips from
///   `encoder3..encoder1`;
/// * `finaldeconv1` (4x4 transposed convolution, stride 2, padding 1, to 32
///   channels), ReLU, `finalconv2` (3x3), ReLU, `finalconv3` (3x3 to
///   `class_num`).
///
/// Differences from the reference: no ImageNet weights (nothing is
/// downloaded), `in_chns` inputs instead of 3, configurable encoder widths
/// and block counts (defaults equal the reference), and logits: the
/// reference's final sigmoid (and its single class) is left out.
///
/// Input sizes: height and width must be multiples of 32 (five halvings
/// whose skips are added back); others are rejected with an error that
/// says so. The network is 2D; a `[N, C, D, H, W]` input has its depth
/// folded into the batch.
///
/// The default configuration (3 inputs, 1 class) has 31,096,129 trainable
/// parameters (21,284,672 in the ResNet-34 part), as the reference.
/// tests/dlinknet.rs checks outputs (eval and train mode) and BatchNorm
/// running statistics against a PyTorch transcription
/// (tools/make_light_hrnet_dlink_fixtures.py). [`SegNetwork::encode`]
/// returns the ResNet's stem and stage outputs (before `dblock`); the
/// encoder is `firstconv`, `firstbn` and `encoder1..4`.
pub struct DLinkNet {
    cfg: DLinkNetConfig,
    params: Vec<ParamInfo>,
    resnet: ResNet,
    dblock: Dblock,
    decoders: Vec<DecoderBlock>, // decoder4 .. decoder1
    finaldeconv1: TransConv,
    finalconv2: Conv,
    finalconv3: Conv,
}

impl DLinkNet {
    /// Input height and width must be multiples of this.
    pub const SIZE_MULTIPLE: usize = 32;

    /// Builds the network, creating (or reading) its parameters in `vb`
    /// under the reference's names (`firstconv.weight`,
    /// `encoder1.0.conv1.weight`, `dblock.dilate4.bias`, ...).
    pub fn new(cfg: DLinkNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: DLinkNetConfig) -> CandleResult<Self> {
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
        let dblock = Dblock::new(&ctx.pp("dblock"), f[3])?;
        let decoders = vec![
            DecoderBlock::new(&ctx.pp("decoder4"), f[3], f[2])?,
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
            decoders,
            finaldeconv1,
            finalconv2,
            finalconv3,
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &DLinkNetConfig {
        &self.cfg
    }

    fn check_input(&self, x: &Tensor) -> CandleResult<()> {
        let (_, _, h, w) = x.dims4()?;
        let m = Self::SIZE_MULTIPLE;
        if h % m != 0 || w % m != 0 || h == 0 || w == 0 {
            candle_core::bail!(
                "{}: D-LinkNet needs height and width that are multiples of {m} (five halvings \
                 whose skips are added back), got {h}x{w}; pad or crop the input",
                self.cfg.name
            )
        }
        Ok(())
    }

    fn forward4(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        self.check_input(x)?;
        // stem output, encoder1..encoder4
        let feats = self.resnet.features(x, train)?;
        let skips = &feats[1..];
        let mut d = self.dblock.forward(&skips[3])?;
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

impl SegNetwork for DLinkNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput> {
        logits_only_2d(&self.cfg.name, "D-LinkNet", self.cfg.in_chns, x, |x| {
            self.forward4(x, train)
        })
    }

    // `dimension` is 2 (checked by `DLinkNetConfig::validate`)
    unet_meta!(custom_input_size);

    fn input_size(&self) -> crate::InputSize {
        crate::InputSize::pooled(2, 5)
    }

    fn encode(&self, x: &Tensor, train: bool) -> CandleResult<Option<Vec<Tensor>>> {
        let x = fold_5d(x)?;
        self.check_input(&x)?;
        Ok(Some(self.resnet.features(&x, train)?))
    }

    fn encoder_prefixes(&self) -> Vec<String> {
        vec!["firstconv.".into(), "firstbn.".into(), "encoder".into()]
    }
}

/// Builds a DLinkNet from its JSON configuration (registry entries
/// `DLinkNet` and `D-LinkNet`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    let cfg: DLinkNetConfig = parse_net_config(
        config,
        &[
            ("feature_chns", KeyKind::UsizeList),
            ("block_nums", KeyKind::UsizeList),
        ],
    )?;
    Ok(Box::new(DLinkNet::new(cfg, vb)?))
}
