//! TransUNet (Chen et al., 2021) after the authors' code
//! (`networks/vit_seg_modeling.py` and `vit_seg_modeling_resnet_skip.py`,
//! github Beckschen/TransUNet; copied in JMedSeg `model/TransUNet/`), with
//! their module names; see [`TransUNet`].

mod vit;

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::backbones::resnet::{bn, relu};
use crate::backbones::resnetv2::{ResNetV2, ResNetV2Spec};
use crate::config::{parse_net_config, KeyKind};
use crate::error::{NetError, Result};
use crate::layers::{cat_channels, record, resize_linear, Conv, Ctx, Norm};
use crate::unet::{fold_5d, logits_only_2d, unet_meta};
use crate::{NetOutput, ParamInfo, SegNetwork};
use vit::{Embeddings, Encoder, VitSpec};

/// Pixels per token side: the ViT-B/16 patch (16x16 patches of the image,
/// or 1x1 patches of the ResNet's 1/16 map in the hybrid).
pub const TRANSUNET_PATCH: usize = 16;

fn d_dimension() -> usize {
    2
}
fn d_img() -> usize {
    224
}
fn d_true() -> bool {
    true
}
fn d_units() -> Vec<usize> {
    vec![3, 4, 9]
}
fn d_width() -> usize {
    64
}
fn d_groups() -> usize {
    32
}
fn d_hidden() -> usize {
    768
}
fn d_mlp() -> usize {
    3072
}
fn d_heads() -> usize {
    12
}
fn d_layers() -> usize {
    12
}
fn d_dropout() -> f64 {
    0.1
}
fn d_head() -> usize {
    512
}
fn d_decoder() -> Vec<usize> {
    vec![256, 128, 64, 16]
}

/// Configuration of [`TransUNet`] (registry name `TransUNet`).
///
/// Defaults are the authors' R50-ViT-B_16 (`get_r50_b16_config()` with
/// `n_skip` 3, as their `train.py`) at their default `img_size` 224. The
/// pure ViT-B_16 (`get_b16_config()`, no ResNet) is `hybrid = false`
/// (`n_skip` then defaults to 0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransUNetConfig {
    /// Registry name (`net_type` in PyMIC files is accepted).
    #[serde(alias = "net_type")]
    pub name: String,
    /// Spatial dimensions; TransUNet is 2D only, so only 2 is accepted (a
    /// 5D input is folded into the batch).
    #[serde(default = "d_dimension")]
    pub dimension: usize,
    /// Input channels. As the authors, a one-channel input is repeated to
    /// three channels, so the first convolution has 3 input channels (the
    /// ImageNet stem); other counts are taken as they are.
    pub in_chns: usize,
    /// Output classes (logit channels; the authors' `n_classes`).
    pub class_num: usize,
    /// Side of the square input, a multiple of 16 (default 224, the
    /// authors'); the learnt position embeddings hold `(img_size / 16)^2`
    /// tokens, so every input must have this size.
    #[serde(default = "d_img")]
    pub img_size: usize,
    /// A ResNetV2 in front of the ViT (R50-ViT-B_16, the authors'
    /// `hybrid`); `false`: the pure ViT-B_16 on 16x16 image patches.
    #[serde(default = "d_true")]
    pub hybrid: bool,
    /// Units of the ResNetV2's three blocks (`resnet.num_layers`, R50:
    /// `[3, 4, 9]`).
    #[serde(default = "d_units")]
    pub resnet_units: Vec<usize>,
    /// Channels of the ResNetV2's root (`64 * resnet.width_factor`).
    #[serde(default = "d_width")]
    pub resnet_width: usize,
    /// Groups of the ResNetV2's GroupNorms (32 in the authors' code, where
    /// it is not configurable); must divide `resnet_width`.
    #[serde(default = "d_groups")]
    pub gn_groups: usize,
    /// Token width (`hidden_size`).
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// Width of the MLPs (`transformer.mlp_dim`).
    #[serde(default = "d_mlp")]
    pub mlp_dim: usize,
    /// Attention heads (`transformer.num_heads`), dividing `hidden_size`.
    #[serde(default = "d_heads")]
    pub num_heads: usize,
    /// Transformer blocks (`transformer.num_layers`).
    #[serde(default = "d_layers")]
    pub num_layers: usize,
    /// Dropout after the embeddings and in the MLPs
    /// (`transformer.dropout_rate`), in `[0, 1)`.
    #[serde(default = "d_dropout")]
    pub dropout_rate: f64,
    /// Dropout of the attention probabilities and output
    /// (`transformer.attention_dropout_rate`), in `[0, 1)`.
    #[serde(default)]
    pub attention_dropout_rate: f64,
    /// Channels of the decoder's first convolution (`conv_more`; 512,
    /// hard-coded by the authors).
    #[serde(default = "d_head")]
    pub head_channels: usize,
    /// Output channels of the four decoder blocks (`decoder_channels`).
    #[serde(default = "d_decoder")]
    pub decoder_channels: Vec<usize>,
    /// Decoder blocks that take a ResNet skip (`n_skip`, 0 to 3; default 3
    /// with ResNet, 0 without): the 1/8, 1/4 and 1/2 maps in that order.
    #[serde(default)]
    pub n_skip: Option<usize>,
    /// Seed of the initial weights and of the dropout masks.
    #[serde(default)]
    pub seed: u64,
}

impl TransUNetConfig {
    /// The authors' R50-ViT-B_16 TransUNet (224x224) with `in_chns` inputs
    /// and `class_num` classes.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "TransUNet".into(),
            dimension: 2,
            in_chns,
            class_num,
            img_size: d_img(),
            hybrid: true,
            resnet_units: d_units(),
            resnet_width: d_width(),
            gn_groups: d_groups(),
            hidden_size: d_hidden(),
            mlp_dim: d_mlp(),
            num_heads: d_heads(),
            num_layers: d_layers(),
            dropout_rate: d_dropout(),
            attention_dropout_rate: 0.0,
            head_channels: d_head(),
            decoder_channels: d_decoder(),
            n_skip: None,
            seed: 0,
        }
    }

    /// The skips used (`n_skip`, by default 3 with ResNet, 0 without).
    pub fn skips(&self) -> usize {
        self.n_skip.unwrap_or(if self.hybrid { 3 } else { 0 })
    }

    /// Channels the image enters the network with (a one-channel input is
    /// repeated to three).
    pub fn embed_chns(&self) -> usize {
        if self.in_chns == 1 {
            3
        } else {
            self.in_chns
        }
    }

    /// Side of the token grid, `img_size / 16`.
    pub fn grid(&self) -> usize {
        self.img_size / TRANSUNET_PATCH
    }

    /// Checks the values and names the first bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.dimension != 2 {
            return Err(format!(
                "dimension must be 2 (TransUNet is a 2D network), got {}",
                self.dimension
            ));
        }
        if self.in_chns == 0 {
            return Err("in_chns must be positive".into());
        }
        if self.class_num == 0 {
            return Err("class_num must be positive".into());
        }
        if self.img_size == 0 || self.img_size % TRANSUNET_PATCH != 0 {
            return Err(format!(
                "img_size must be a positive multiple of {TRANSUNET_PATCH}, got {}",
                self.img_size
            ));
        }
        if self.resnet_units.len() != 3 || self.resnet_units.contains(&0) {
            return Err(format!(
                "resnet_units must have 3 positive values, got {:?}",
                self.resnet_units
            ));
        }
        if self.resnet_width == 0 {
            return Err("resnet_width must be positive".into());
        }
        if self.gn_groups == 0 || self.resnet_width % self.gn_groups != 0 {
            return Err(format!(
                "gn_groups {} must divide resnet_width {}",
                self.gn_groups, self.resnet_width
            ));
        }
        if self.num_heads == 0 || self.hidden_size == 0 || self.hidden_size % self.num_heads != 0 {
            return Err(format!(
                "hidden_size {} must be a positive multiple of num_heads {}",
                self.hidden_size, self.num_heads
            ));
        }
        if self.mlp_dim == 0 {
            return Err("mlp_dim must be positive".into());
        }
        if self.num_layers == 0 {
            return Err("num_layers must be positive".into());
        }
        for (key, p) in [
            ("dropout_rate", self.dropout_rate),
            ("attention_dropout_rate", self.attention_dropout_rate),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("{key} must be in [0, 1), got {p}"));
            }
        }
        if self.head_channels == 0 {
            return Err("head_channels must be positive".into());
        }
        if self.decoder_channels.len() != 4 || self.decoder_channels.contains(&0) {
            return Err(format!(
                "decoder_channels must have 4 positive values, got {:?}",
                self.decoder_channels
            ));
        }
        let s = self.skips();
        if s > 3 {
            return Err(format!("n_skip must be 0 to 3, got {s}"));
        }
        if s > 0 && !self.hybrid {
            return Err(format!(
                "n_skip {s} needs the ResNet (hybrid = true); the pure ViT has no skips"
            ));
        }
        Ok(())
    }

    fn resnet_spec(&self) -> ResNetV2Spec {
        ResNetV2Spec {
            in_chns: self.embed_chns(),
            width: self.resnet_width,
            block_units: [
                self.resnet_units[0],
                self.resnet_units[1],
                self.resnet_units[2],
            ],
            gn_groups: self.gn_groups,
        }
    }
}

/// The authors' `Conv2dReLU`: convolution without bias (`0`), BatchNorm
/// (`1`), ReLU.
struct Conv2dReLU {
    conv: Conv,
    bn: Norm,
}

impl Conv2dReLU {
    fn new(ctx: &Ctx, cin: usize, cout: usize) -> CandleResult<Self> {
        Ok(Self {
            conv: Conv::new(&ctx.pp(0), 2, cin, cout, 3, 1, 1, false)?,
            bn: bn(&ctx.pp(1), cout)?,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        self.bn
            .forward_act(&self.conv.forward(x)?, train, Some(&relu()))
    }
}

/// The authors' `DecoderBlock`: bilinear x2 up-sampling with aligned
/// corners (`nn.UpsamplingBilinear2d`), the skip concatenated after, two
/// [`Conv2dReLU`] (`conv1`, `conv2`).
struct DecoderBlock {
    conv1: Conv2dReLU,
    conv2: Conv2dReLU,
    name: String,
}

impl DecoderBlock {
    fn new(ctx: &Ctx, cin: usize, cout: usize, skip: usize) -> CandleResult<Self> {
        Ok(Self {
            conv1: Conv2dReLU::new(&ctx.pp("conv1"), cin + skip, cout)?,
            conv2: Conv2dReLU::new(&ctx.pp("conv2"), cout, cout)?,
            name: ctx.prefix(),
        })
    }

    fn forward(&self, x: &Tensor, skip: Option<&Tensor>, train: bool) -> CandleResult<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let y = resize_linear(x, &[2 * h, 2 * w], true)?;
        record(
            &format!("{}.up", self.name),
            "UpsamplingBilinear2d",
            &y,
            0,
            0,
        );
        let y = match skip {
            Some(s) => cat_channels(&[&y, s])?,
            None => y,
        };
        let y = self.conv1.forward(&y, train)?;
        self.conv2.forward(&y, train)
    }
}

/// TransUNet (Chen et al., "TransUNet: Transformers Make Strong Encoders
/// for Medical Image Segmentation", 2021) after the authors' PyTorch code
/// (github Beckschen/TransUNet, `networks/vit_seg_modeling.py`,
/// `VisionTransformer`, and `networks/vit_seg_modeling_resnet_skip.py`;
/// JMedSeg copies them in `model/TransUNet/`), with their parameter names:
///
/// * `transformer.embeddings.hybrid_model.*`: the [`ResNetV2`] (R50 of
///   `[3, 4, 9]` units, `root.conv`, `body.block1.unit1.conv1`, ...), its
///   1/16 map cut into 1x1 patches; without ResNet (`hybrid = false`) the
///   image is cut into 16x16 patches;
/// * `transformer.embeddings.patch_embeddings` (convolution to
///   `hidden_size`) and `position_embeddings` (learnt, `[1, (img/16)^2,
///   hidden]`), dropout;
/// * `transformer.encoder.layer.{0..11}`: pre-norm blocks,
///   `attention_norm`, `attn.query/key/value/out` (12 heads),
///   `ffn_norm`, `ffn.fc1/fc2` (3072, exact GELU), LayerNorm eps 1e-6;
///   `transformer.encoder.encoder_norm`;
/// * `decoder.conv_more` (3x3 convolution to 512, BatchNorm, ReLU on the
///   token grid), `decoder.blocks.{0..3}` (bilinear x2, then the ResNet's
///   1/8, 1/4, 1/2 maps concatenated for the first `n_skip` blocks, two
///   3x3 convolution + BatchNorm + ReLU, to 256, 128, 64, 16 channels);
/// * `segmentation_head.0`: 3x3 convolution to `class_num` logits.
///
/// A one-channel input is repeated to three channels, as the authors do.
/// The released ImageNet-21k `.npz` weights map onto these names by the
/// authors' `load_from`. Differences: weights start random; the ResNet
/// width, GroupNorm groups, `conv_more` width and skip channels follow
/// the configuration (the authors hard-code 32 groups, 512 and
/// `[512, 256, 64, 16]`, which are the defaults here).
///
/// Input: exactly `img_size` x `img_size` (the position embeddings fix
/// it); inference pads smaller images and slides a window over larger
/// ones. Default parameter count (R50-ViT-B_16, 224x224, 3 or 1 input
/// channels): 105,276,066 for 2 classes (the authors' default
/// `n_classes`), 105,277,081 for 9 (their Synapse setting), as the
/// authors' `VisionTransformer(CONFIGS['R50-ViT-B_16'], img_size=224)`
/// counts; 105,153,476 at 96x96 with 4 classes (configs/zoo). The pure
/// ViT-B_16 at 224 with 9 classes: 91,674,201.
pub struct TransUNet {
    cfg: TransUNetConfig,
    params: Vec<ParamInfo>,
    embeddings: Embeddings,
    encoder: Encoder,
    conv_more: Conv2dReLU,
    blocks: Vec<DecoderBlock>,
    head: Conv,
}

impl TransUNet {
    /// Builds the network, creating (or reading) its parameters in `vb`
    /// under the authors' names.
    pub fn new(mut cfg: TransUNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        // the complete configuration names the skips in use
        cfg.n_skip = Some(cfg.skips());
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: TransUNetConfig) -> CandleResult<Self> {
        let t = ctx.pp("transformer");
        let e = t.pp("embeddings");
        let g = cfg.grid();
        let (hybrid_model, vit_cin, patch) = if cfg.hybrid {
            let spec = cfg.resnet_spec();
            let cin = spec.channels()[3];
            (Some(ResNetV2::build(&e.pp("hybrid_model"), spec)?), cin, 1)
        } else {
            (None, cfg.embed_chns(), TRANSUNET_PATCH)
        };
        let spec = VitSpec {
            cin: vit_cin,
            patch,
            tokens: g * g,
            hidden: cfg.hidden_size,
            mlp_dim: cfg.mlp_dim,
            heads: cfg.num_heads,
            layers: cfg.num_layers,
            dropout: cfg.dropout_rate,
            attention_dropout: cfg.attention_dropout_rate,
        };
        let embeddings = Embeddings::new(&e, hybrid_model, &spec)?;
        let encoder = Encoder::new(&t.pp("encoder"), &spec)?;
        let d = ctx.pp("decoder");
        let conv_more = Conv2dReLU::new(&d.pp("conv_more"), cfg.hidden_size, cfg.head_channels)?;
        let w = cfg.resnet_width;
        let skip_chns = [8 * w, 4 * w, w];
        let mut cin = cfg.head_channels;
        let mut blocks = Vec::with_capacity(4);
        for (i, &cout) in cfg.decoder_channels.iter().enumerate() {
            let skip = if i < cfg.skips() { skip_chns[i] } else { 0 };
            blocks.push(DecoderBlock::new(&d.pp("blocks").pp(i), cin, cout, skip)?);
            cin = cout;
        }
        let head = Conv::k3(&ctx.pp("segmentation_head").pp(0), 2, cin, cfg.class_num)?;
        Ok(Self {
            params: ctx.params_snapshot(),
            cfg,
            embeddings,
            encoder,
            conv_more,
            blocks,
            head,
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &TransUNetConfig {
        &self.cfg
    }

    /// The ResNetV2 of the hybrid (`None` for the pure ViT).
    pub fn resnet(&self) -> Option<&ResNetV2> {
        self.embeddings.hybrid_model.as_ref()
    }

    /// Checks a `[N, C, H, W]` input and repeats one channel to three.
    fn prepare(&self, x: &Tensor) -> CandleResult<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        let s = self.cfg.img_size;
        if c != self.cfg.in_chns {
            candle_core::bail!(
                "{}: expected {} input channels, got shape {:?}",
                self.cfg.name,
                self.cfg.in_chns,
                x.dims()
            )
        }
        if h != s || w != s {
            candle_core::bail!(
                "{}: TransUNet was built for img_size {s} (its position embeddings are learnt \
                 for {s}x{s}), got input {:?}",
                self.cfg.name,
                x.dims()
            )
        }
        if c != self.cfg.embed_chns() {
            return Tensor::cat(&[x, x, x], 1);
        }
        Ok(x.clone())
    }

    /// The encoded tokens as a map `[N, hidden, img/16, img/16]` and the
    /// ResNet's maps (1/2, 1/4, 1/8; none without ResNet).
    fn encode4(&self, x: &Tensor, train: bool) -> CandleResult<(Tensor, Vec<Tensor>)> {
        let x = self.prepare(x)?;
        let (tokens, feats) = self.embeddings.forward(&x, train)?;
        let encoded = self.encoder.forward(&tokens, train)?;
        let (n, _, c) = encoded.dims3()?;
        let g = self.cfg.grid();
        let map = encoded
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n, c, g, g))?;
        Ok((map, feats))
    }

    fn forward4(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let (map, feats) = self.encode4(x, train)?;
        let mut y = self.conv_more.forward(&map, train)?;
        for (i, block) in self.blocks.iter().enumerate() {
            // the skips deepest first: 1/8, 1/4, 1/2
            let skip = if i < self.cfg.skips() {
                feats.get(feats.len() - 1 - i)
            } else {
                None
            };
            y = block.forward(&y, skip, train)?;
        }
        self.head.forward(&y)
    }
}

impl SegNetwork for TransUNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput> {
        logits_only_2d(&self.cfg.name, "TransUNet", self.cfg.in_chns, x, |x| {
            self.forward4(x, train)
        })
    }

    // `dimension` is 2 (checked by `TransUNetConfig::validate`)
    unet_meta!(custom_input_size);

    /// Exactly `img_size` x `img_size`: the learnt position embeddings fix
    /// it, so a smaller input is padded up to it and a larger one needs a
    /// sliding window of that size.
    fn input_size(&self) -> crate::InputSize {
        crate::InputSize::exact(&[self.cfg.img_size; 2])
    }

    /// The ResNet's maps (1/2, 1/4, 1/8, zero-padded as the authors do)
    /// and the transformer's normed tokens as a map `[N, hidden, img/16,
    /// img/16]` (the only map without ResNet). A 5D input is folded into
    /// the batch.
    fn encode(&self, x: &Tensor, train: bool) -> CandleResult<Option<Vec<Tensor>>> {
        let x = fold_5d(x)?;
        let (map, mut feats) = self.encode4(&x, train)?;
        feats.push(map);
        Ok(Some(feats))
    }

    fn encoder_prefixes(&self) -> Vec<String> {
        vec!["transformer.".to_string()]
    }
}

/// The keys of [`TransUNetConfig`] beyond the common ones, for naming a
/// mistyped one.
const TRANSUNET_KEYS: &[(&str, KeyKind)] = &[
    ("img_size", KeyKind::Usize),
    ("hybrid", KeyKind::Bool),
    ("resnet_units", KeyKind::UsizeList),
    ("resnet_width", KeyKind::Usize),
    ("gn_groups", KeyKind::Usize),
    ("hidden_size", KeyKind::Usize),
    ("mlp_dim", KeyKind::Usize),
    ("num_heads", KeyKind::Usize),
    ("num_layers", KeyKind::Usize),
    ("dropout_rate", KeyKind::F64),
    ("attention_dropout_rate", KeyKind::F64),
    ("head_channels", KeyKind::Usize),
    ("decoder_channels", KeyKind::UsizeList),
    ("n_skip", KeyKind::Usize),
];

/// Builds a TransUNet from its JSON configuration (registry `TransUNet`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    let cfg: TransUNetConfig = parse_net_config(config, TRANSUNET_KEYS)?;
    Ok(Box::new(TransUNet::new(cfg, vb)?))
}
