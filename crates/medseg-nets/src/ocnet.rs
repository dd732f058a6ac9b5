//! OCNet (Yuan et al., "OCNet: Object Context Network for Scene Parsing",
//! 2018) in JMedSeg's layout (`model/OCNet.py`); see [`OCNet`].

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::attention::{
    backbone_spec, check_common, d_backbone, d_dimension, d_output_stride, d_width,
    position_attention, zero_weight_pointwise, ConvBnRelu3, ATTENTION_KEYS,
};
use crate::backbones::dilated_resnet::{DilatedResNet, DilatedResNetSpec};
use crate::config::parse_net_config;
use crate::error::{NetError, Result};
use crate::layers::{cat_channels, resize_linear, Conv, Ctx, Dropout};
use crate::unet::{fold_5d, logits_only_2d, unet_meta};
use crate::{NetOutput, ParamInfo, SegNetwork};

fn d_dropout() -> f64 {
    0.1
}

/// Configuration of [`OCNet`] (registry name `OCNet`).
///
/// Defaults are JMedSeg's `OCNet()`: a ResNet-101 backbone at output
/// stride 16, dropout 0.1 before the classifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OCNetConfig {
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
    /// Element-wise dropout before the classifier (JMedSeg's
    /// `nn.Dropout(0.1)` of `conv_2`), in `[0, 1)`.
    #[serde(default = "d_dropout")]
    pub dropout: f64,
    /// Seed of the initial weights and of the dropout masks.
    #[serde(default)]
    pub seed: u64,
}

impl OCNetConfig {
    /// JMedSeg's default layout with `in_chns` inputs and `class_num`
    /// classes.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "OCNet".to_string(),
            dimension: 2,
            in_chns,
            class_num,
            backbone: d_backbone(),
            output_stride: d_output_stride(),
            backbone_width: d_width(),
            backbone_blocks: None,
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
        check_common(self.dimension, self.class_num, self.dropout, "OCNet")?;
        self.backbone_spec().map(|_| ())
    }
}

/// OCNet (Yuan et al., "OCNet: Object Context Network for Scene Parsing",
/// 2018; its base object context head) in JMedSeg's layout
/// (github.com/THU-CVlab/JMedSeg, `model/OCNet.py`), with JMedSeg's
/// parameter names:
///
/// * `backbone.*`: JMedSeg's dilated ResNet ([`DilatedResNet`]; ResNet-101
///   at output stride 16 by default); the head takes `layer4` (2048
///   channels);
/// * `head.conv_0`: 3x3 convolution (no bias), BatchNorm, ReLU to a quarter
///   of the channels (512);
/// * `head.oc`: object context (self-attention over positions):
///   `query_conv` and `key_conv` (1x1 to half the channels), `value_conv`,
///   `scale_conv` (1x1, weight starting at zero) on the attended values,
///   concatenated before its input;
/// * `head.conv_1`: 3x3 convolution, BatchNorm, ReLU back to 512 channels;
///   dropout (0.1); `head.out_conv` (JMedSeg's `head.conv_2.1`): 1x1
///   convolution to `class_num`; bilinear resize to the input size (no
///   aligned corners, as Jittor's `nn.resize`).
///
/// Differences from JMedSeg: `in_chns` inputs (JMedSeg: 3); the classifier
/// is named `head.out_conv` instead of `head.conv_2.1`; the backbone's
/// width and blocks are configurable; no ImageNet weights.
///
/// JMedSeg's default (ResNet-101, output stride 16, 3 inputs, 2 classes)
/// has 57,570,498 parameters (42,623,680 in the backbone), counted on the
/// PyTorch transcription in tools/make_attention_fixtures.py; this network
/// has the same. Any input size runs (the backbone rounds odd sizes up and
/// the logits are resized to the input). tests/ocnet.rs checks outputs and
/// BatchNorm running statistics against the transcription.
pub struct OCNet {
    cfg: OCNetConfig,
    params: Vec<ParamInfo>,
    backbone: DilatedResNet,
    conv_0: ConvBnRelu3,
    query: Conv,
    key: Conv,
    value: Conv,
    scale: Conv,
    conv_1: ConvBnRelu3,
    drop: Dropout,
    out_conv: Conv,
}

impl OCNet {
    /// Builds the network, creating (or reading) its parameters in `vb`
    /// under JMedSeg's names (`backbone.layer4.2.conv2.weight`,
    /// `head.oc.scale_conv.weight`, ...).
    pub fn new(cfg: OCNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: OCNetConfig) -> CandleResult<Self> {
        let spec = cfg.backbone_spec().map_err(candle_core::Error::Msg)?;
        let cin = spec.channels()[3];
        let backbone = DilatedResNet::build(&ctx.pp("backbone"), spec)?;
        let h = ctx.pp("head");
        let inter = cin / 4;
        let conv_0 = ConvBnRelu3::new(&h.pp("conv_0"), cin, inter, false)?;
        let oc = h.pp("oc");
        let query = Conv::pointwise(&oc.pp("query_conv"), 2, inter, inter / 2)?;
        let key = Conv::pointwise(&oc.pp("key_conv"), 2, inter, inter / 2)?;
        let value = Conv::pointwise(&oc.pp("value_conv"), 2, inter, inter)?;
        let scale = zero_weight_pointwise(&oc.pp("scale_conv"), inter, inter)?;
        let conv_1 = ConvBnRelu3::new(&h.pp("conv_1"), 2 * inter, inter, false)?;
        let drop = Dropout::new(ctx, cfg.dropout);
        let out_conv = Conv::pointwise(&h.pp("out_conv"), 2, inter, cfg.class_num)?;
        Ok(Self {
            cfg,
            params: ctx.params_snapshot(),
            backbone,
            conv_0,
            query,
            key,
            value,
            scale,
            conv_1,
            drop,
            out_conv,
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &OCNetConfig {
        &self.cfg
    }

    fn forward4(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let feats = self.backbone.features(x, train)?;
        let f = self.conv_0.forward(&feats[3], train)?;
        let att = position_attention(
            &self.query.forward(&f)?,
            &self.key.forward(&f)?,
            &self.value.forward(&f)?,
        )?;
        let y = cat_channels(&[&self.scale.forward(&att)?, &f])?;
        let y = self.conv_1.forward(&y, train)?;
        let y = self.drop.forward(&y, train)?;
        resize_linear(&self.out_conv.forward(&y)?, &[h, w], false)
    }
}

impl SegNetwork for OCNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput> {
        logits_only_2d(&self.cfg.name, "OCNet", self.cfg.in_chns, x, |x| {
            self.forward4(x, train)
        })
    }

    // `dimension` is 2 (checked by `OCNetConfig::validate`); any size runs
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

/// Builds an OCNet from its JSON configuration (registry entry `OCNet`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    let cfg: OCNetConfig = parse_net_config(config, ATTENTION_KEYS)?;
    Ok(Box::new(OCNet::new(cfg, vb)?))
}
