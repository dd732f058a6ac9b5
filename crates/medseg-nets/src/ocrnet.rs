//! OCRNet (Yuan, Chen & Wang, "Object-Contextual Representations for
//! Semantic Segmentation", ECCV 2020) in JMedSeg's layout
//! (`model/OCRNet.py`, its ResNet-backbone variant); see [`OCRNet`].

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::attention::{
    backbone_spec, check_common, d_backbone, d_dimension, d_output_stride, d_width, flat, t,
    zero_weight_pointwise, ConvBnRelu3, ATTENTION_KEYS,
};
use crate::backbones::dilated_resnet::{DilatedResNet, DilatedResNetSpec};
use crate::config::parse_net_config;
use crate::error::{NetError, Result};
use crate::layers::{cat_channels, resize_linear, Conv, Ctx, Dropout};
use crate::unet::{fold_5d, logits_only_2d, unet_meta};
use crate::{NetOutput, ParamInfo, SegNetwork};

fn d_dropout() -> f64 {
    0.05
}
fn d_ocr() -> usize {
    512
}

/// Configuration of [`OCRNet`] (registry name `OCRNet`).
///
/// Defaults are JMedSeg's `OCRNet()`: a ResNet-101 backbone at output
/// stride 16, 512 channels in the object-contextual head, dropout 0.05 in
/// the soft-region branch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OCRNetConfig {
    /// Registry name (`net_type` in PyMIC files is accepted).
    #[serde(alias = "net_type")]
    pub name: String,
    /// Spatial dimensions; only 2 (a 5D input is folded into the batch).
    #[serde(default = "d_dimension")]
    pub dimension: usize,
    /// Input channels (JMedSeg hard-codes 3).
    pub in_chns: usize,
    /// Output classes (logit channels).
    pub class_num: usize,
    /// `resnet50` or `resnet101` (JMedSeg's `backbone`).
    #[serde(default = "d_backbone")]
    pub backbone: String,
    /// 8 or 16 (JMedSeg's `output_stride`).
    #[serde(default = "d_output_stride")]
    pub output_stride: usize,
    /// Base width of the backbone (64; see [`DilatedResNetSpec::width`]);
    /// the head works on `32 * backbone_width` channels.
    #[serde(default = "d_width")]
    pub backbone_width: usize,
    /// Bottlenecks of `layer1..layer3`, replacing the `backbone`'s when
    /// given (for small configurations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone_blocks: Option<Vec<usize>>,
    /// Channels of the object-contextual head (JMedSeg: 512).
    #[serde(default = "d_ocr")]
    pub ocr_channels: usize,
    /// Element-wise dropout in the soft object region branch (JMedSeg's
    /// `nn.Dropout(0.05)` of `get_context`), in `[0, 1)`.
    #[serde(default = "d_dropout")]
    pub dropout: f64,
    /// Seed of the initial weights and of the dropout masks.
    #[serde(default)]
    pub seed: u64,
}

impl OCRNetConfig {
    /// JMedSeg's default layout with `in_chns` inputs and `class_num`
    /// classes.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "OCRNet".to_string(),
            dimension: 2,
            in_chns,
            class_num,
            backbone: d_backbone(),
            output_stride: d_output_stride(),
            backbone_width: d_width(),
            backbone_blocks: None,
            ocr_channels: d_ocr(),
            dropout: d_dropout(),
            seed: 0,
        }
    }

    /// The backbone's shape; errors name the bad key.
    pub fn backbone_spec(&self) -> std::result::Result<DilatedResNetSpec, String> {
        backbone_spec(
            &self.backbone,
            self.in_chns,
            self.backbone_width,
            self.backbone_blocks.as_ref(),
            self.output_stride,
        )
    }

    /// Checks the values and names the first bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        check_common(self.dimension, self.class_num, self.dropout, "OCRNet")?;
        if self.ocr_channels == 0 {
            return Err("ocr_channels must be positive".into());
        }
        self.backbone_spec().map(|_| ())
    }
}

/// OCRNet (Yuan, Chen & Wang, "Object-Contextual Representations for
/// Semantic Segmentation", ECCV 2020) in JMedSeg's layout
/// (github.com/THU-CVlab/JMedSeg, `model/OCRNet.py`: the ResNet-backbone
/// variant), with JMedSeg's parameter names:
///
/// * `backbone.*`: JMedSeg's dilated ResNet ([`DilatedResNet`]; ResNet-101
///   at output stride 16 by default);
/// * soft object regions from `layer3` (1024 channels): `get_context.0`
///   (3x3 convolution with bias to `ocr_channels` = 512), `get_context.1`
///   (BatchNorm), ReLU, dropout (0.05), `context_out_conv` (JMedSeg's
///   `get_context.4`: 1x1 convolution to `class_num`);
/// * pixel features from `layer4` (2048 channels): `conv_3x3.0` (3x3 with
///   bias to 512), `conv_3x3.1` (BatchNorm), ReLU;
/// * `head`: a softmax over positions of each region map pools the pixel
///   features into one vector per class; the pixel-region relation
///   (`features . regions`), again softmaxed over positions as JMedSeg
///   does, spreads them back; `head.conv_1x1` (1x1 with bias, weight
///   starting at zero), concatenated before the pixel features;
///   `head.out_conv` (JMedSeg's `head.last_conv`: 3x3 convolution to
///   `class_num`); bilinear resize to the input size (no aligned corners,
///   as Jittor's `nn.resize`).
///
/// JMedSeg computes the region logits but returns only the final logits
/// (its `get_loss` takes no region output from `execute`); so does this
/// network.
///
/// Differences from JMedSeg: `in_chns` inputs (JMedSeg: 3); the two
/// classifiers are named `head.out_conv` and `context_out_conv` instead of
/// `head.last_conv` and `get_context.4`; the backbone's width and blocks
/// and the head's width are configurable; no ImageNet weights.
///
/// JMedSeg's default (ResNet-101, output stride 16, 3 inputs, 2 classes)
/// has 57,064,644 parameters (42,623,680 in the backbone), counted on the
/// PyTorch transcription in tools/make_attention_fixtures.py; this network
/// has the same. Any input size runs (the backbone rounds odd sizes up and
/// the logits are resized to the input). tests/ocrnet.rs checks outputs and
/// BatchNorm running statistics against the transcription.
pub struct OCRNet {
    cfg: OCRNetConfig,
    params: Vec<ParamInfo>,
    backbone: DilatedResNet,
    context: ConvBnRelu3,
    drop: Dropout,
    context_out: Conv,
    feature: ConvBnRelu3,
    conv_1x1: Conv,
    out_conv: Conv,
}

impl OCRNet {
    /// Builds the network, creating (or reading) its parameters in `vb`
    /// under JMedSeg's names (`backbone.layer4.2.conv2.weight`,
    /// `get_context.0.weight`, `head.conv_1x1.bias`, ...).
    pub fn new(cfg: OCRNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: OCRNetConfig) -> CandleResult<Self> {
        let spec = cfg.backbone_spec().map_err(candle_core::Error::Msg)?;
        let [_, _, c3, c4] = spec.channels();
        let backbone = DilatedResNet::build(&ctx.pp("backbone"), spec)?;
        let ocr = cfg.ocr_channels;
        let h = ctx.pp("head");
        // JMedSeg's creation order: head, get_context, conv_3x3
        let conv_1x1 = zero_weight_pointwise(&h.pp("conv_1x1"), ocr, ocr)?;
        let out_conv = Conv::new(&h.pp("out_conv"), 2, 2 * ocr, cfg.class_num, 3, 1, 1, true)?;
        let context = ConvBnRelu3::new(&ctx.pp("get_context"), c3, ocr, true)?;
        let drop = Dropout::new(ctx, cfg.dropout);
        let context_out = Conv::pointwise(&ctx.pp("context_out_conv"), 2, ocr, cfg.class_num)?;
        let feature = ConvBnRelu3::new(&ctx.pp("conv_3x3"), c4, ocr, true)?;
        Ok(Self {
            cfg,
            params: ctx.params_snapshot(),
            backbone,
            context,
            drop,
            context_out,
            feature,
            conv_1x1,
            out_conv,
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &OCRNetConfig {
        &self.cfg
    }

    fn forward4(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let feats = self.backbone.features(x, train)?;
        let context = self.context.forward(&feats[2], train)?;
        let context = self
            .context_out
            .forward(&self.drop.forward(&context, train)?)?;
        let feature = self.feature.forward(&feats[3], train)?;
        let (n, c, fh, fw) = feature.dims4()?;
        let f = t(&flat(&feature)?)?; // [N, HW, C]
        let regions = candle_nn::ops::softmax_last_dim(&flat(&context)?.contiguous()?)?; // [N, K, HW]
        let ocr_context = t(&regions.matmul(&f)?)?; // [N, C, K]
        let relation = t(&f.matmul(&ocr_context)?)?; // [N, K, HW]
        let attention = candle_nn::ops::softmax_last_dim(&relation)?;
        let result = ocr_context.matmul(&attention)?.reshape((n, c, fh, fw))?;
        let y = cat_channels(&[&self.conv_1x1.forward(&result)?, &feature])?;
        resize_linear(&self.out_conv.forward(&y)?, &[h, w], false)
    }
}

impl SegNetwork for OCRNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput> {
        logits_only_2d(&self.cfg.name, "OCRNet", self.cfg.in_chns, x, |x| {
            self.forward4(x, train)
        })
    }

    // `dimension` is 2 (checked by `OCRNetConfig::validate`); any size runs
    unet_meta!(custom_input_size);

    /// The backbone's maps: `layer1` .. `layer4`. A 5D input is folded into
    /// the batch.
    fn encode(&self, x: &Tensor, train: bool) -> CandleResult<Option<Vec<Tensor>>> {
        Ok(Some(self.backbone.features(&fold_5d(x)?, train)?))
    }

    fn encoder_prefixes(&self) -> Vec<String> {
        vec!["backbone.".to_string()]
    }
}

/// Builds an OCRNet from its JSON configuration (registry entry `OCRNet`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    let cfg: OCRNetConfig = parse_net_config(config, ATTENTION_KEYS)?;
    Ok(Box::new(OCRNet::new(cfg, vb)?))
}
