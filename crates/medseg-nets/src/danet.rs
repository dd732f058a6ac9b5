//! DANet (Fu et al., "Dual Attention Network for Scene Segmentation", CVPR
//! 2019) in JMedSeg's layout (`model/DANet.py`); see [`DANet`].

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::attention::{
    backbone_spec, check_common, d_backbone, d_dimension, d_output_stride, d_width, flat,
    position_attention, t, ConvBnRelu3, ATTENTION_KEYS,
};
use crate::backbones::dilated_resnet::{DilatedResNet, DilatedResNetSpec};
use crate::config::parse_net_config;
use crate::error::{NetError, Result};
use crate::layers::{resize_linear, Conv, Ctx, Dropout, ParamInit};
use crate::unet::{fold_5d, logits_only_2d, unet_meta};
use crate::{NetOutput, ParamInfo, SegNetwork};

fn d_dropout() -> f64 {
    0.1
}

/// Configuration of [`DANet`] (registry name `DANet`).
///
/// Defaults are JMedSeg's `DANet()`: a ResNet-101 backbone at output
/// stride 16, dropout 0.1 before the classifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DANetConfig {
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
    /// `nn.Dropout(0.1)` of `conv8`), in `[0, 1)`.
    #[serde(default = "d_dropout")]
    pub dropout: f64,
    /// Seed of the initial weights and of the dropout masks.
    #[serde(default)]
    pub seed: u64,
}

impl DANetConfig {
    /// JMedSeg's default layout with `in_chns` inputs and `class_num`
    /// classes.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "DANet".to_string(),
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
        check_common(self.dimension, self.class_num, self.dropout, "DANet")?;
        self.backbone_spec().map(|_| ())
    }
}

/// Position attention module (JMedSeg `PAM_Module`, from SAGAN):
/// `gamma * attention(query, key, value) + x` with 1x1 convolutions to
/// `C / 8`, `C / 8` and `C` channels and a learnt scalar `gamma` (starting
/// at zero).
struct Pam {
    query: Conv,
    key: Conv,
    value: Conv,
    gamma: Tensor,
}

impl Pam {
    fn new(ctx: &Ctx, c: usize) -> CandleResult<Self> {
        Ok(Self {
            query: Conv::pointwise(&ctx.pp("query_conv"), 2, c, c / 8)?,
            key: Conv::pointwise(&ctx.pp("key_conv"), 2, c, c / 8)?,
            value: Conv::pointwise(&ctx.pp("value_conv"), 2, c, c)?,
            gamma: ctx.param(&[1], "gamma", ParamInit::Const(0.0))?,
        })
    }

    fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        let out = position_attention(
            &self.query.forward(x)?,
            &self.key.forward(x)?,
            &self.value.forward(x)?,
        )?;
        out.broadcast_mul(&self.gamma)? + x
    }
}

/// Channel attention module (JMedSeg `CAM_Module`):
/// `gamma * softmax(X X^T) X + x` over the `C x HW` matrix `X` (JMedSeg
/// takes the softmax of the energy itself, not of the authors'
/// max-minus-energy), `gamma` a learnt scalar starting at zero.
struct Cam {
    gamma: Tensor,
}

impl Cam {
    fn new(ctx: &Ctx) -> CandleResult<Self> {
        Ok(Self {
            gamma: ctx.param(&[1], "gamma", ParamInit::Const(0.0))?,
        })
    }

    fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        let q = flat(x)?.contiguous()?; // [N, C, HW]
        let attention = candle_nn::ops::softmax_last_dim(&q.matmul(&t(&q)?)?)?;
        let out = attention.matmul(&q)?.reshape(x.dims())?;
        out.broadcast_mul(&self.gamma)? + x
    }
}

/// DANet (Fu et al., "Dual Attention Network for Scene Segmentation", CVPR
/// 2019) in JMedSeg's layout (github.com/THU-CVlab/JMedSeg,
/// `model/DANet.py`; the authors' code is github.com/junfu1115/DANet), with
/// JMedSeg's parameter names:
///
/// * `backbone.*`: JMedSeg's dilated ResNet ([`DilatedResNet`]; ResNet-101
///   at output stride 16 by default); the head takes `layer4` (2048
///   channels);
/// * `head.conv5a`, `head.conv5c`: 3x3 convolution (no bias), BatchNorm,
///   ReLU to a quarter of the channels (512), one per branch;
/// * `head.sa`: position attention (`query_conv`, `key_conv`,
///   `value_conv`, `gamma`), then `head.conv51` (3x3, BatchNorm, ReLU);
/// * `head.sc`: channel attention (`gamma`), then `head.conv52`;
/// * the two branches summed, dropout (0.1), `head.out_conv` (JMedSeg's
///   `head.conv8.1`): 1x1 convolution to `class_num`; bilinear resize to
///   the input size (no aligned corners, as Jittor's `nn.resize`).
///
/// Differences from JMedSeg: `in_chns` inputs (JMedSeg: 3); the classifier
/// is named `head.out_conv` instead of `head.conv8.1`; the backbone's width
/// and blocks are configurable; no ImageNet weights.
///
/// JMedSeg's default (ResNet-101, output stride 16, 3 inputs, 2 classes)
/// has 66,550,084 parameters (42,623,680 in the backbone), counted on the
/// PyTorch transcription in tools/make_attention_fixtures.py; this network
/// has the same. Any input size runs (the backbone rounds odd sizes up and
/// the logits are resized to the input); sizes that are multiples of the
/// output stride keep the grid aligned. tests/danet.rs checks outputs and
/// BatchNorm running statistics against the transcription.
pub struct DANet {
    cfg: DANetConfig,
    params: Vec<ParamInfo>,
    backbone: DilatedResNet,
    conv5a: ConvBnRelu3,
    conv5c: ConvBnRelu3,
    sa: Pam,
    sc: Cam,
    conv51: ConvBnRelu3,
    conv52: ConvBnRelu3,
    drop: Dropout,
    out_conv: Conv,
}

impl DANet {
    /// Builds the network, creating (or reading) its parameters in `vb`
    /// under JMedSeg's names (`backbone.layer4.2.conv2.weight`,
    /// `head.sa.gamma`, ...).
    pub fn new(cfg: DANetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: DANetConfig) -> CandleResult<Self> {
        let spec = cfg.backbone_spec().map_err(candle_core::Error::Msg)?;
        let cin = spec.channels()[3];
        let backbone = DilatedResNet::build(&ctx.pp("backbone"), spec)?;
        let h = ctx.pp("head");
        let inter = cin / 4;
        let conv5a = ConvBnRelu3::new(&h.pp("conv5a"), cin, inter, false)?;
        let conv5c = ConvBnRelu3::new(&h.pp("conv5c"), cin, inter, false)?;
        let sa = Pam::new(&h.pp("sa"), inter)?;
        let sc = Cam::new(&h.pp("sc"))?;
        let conv51 = ConvBnRelu3::new(&h.pp("conv51"), inter, inter, false)?;
        let conv52 = ConvBnRelu3::new(&h.pp("conv52"), inter, inter, false)?;
        let drop = Dropout::new(ctx, cfg.dropout);
        let out_conv = Conv::pointwise(&h.pp("out_conv"), 2, inter, cfg.class_num)?;
        Ok(Self {
            cfg,
            params: ctx.params_snapshot(),
            backbone,
            conv5a,
            conv5c,
            sa,
            sc,
            conv51,
            conv52,
            drop,
            out_conv,
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &DANetConfig {
        &self.cfg
    }

    fn forward4(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let feats = self.backbone.features(x, train)?;
        let f = &feats[3];
        let sa = self.sa.forward(&self.conv5a.forward(f, train)?)?;
        let sa = self.conv51.forward(&sa, train)?;
        let sc = self.sc.forward(&self.conv5c.forward(f, train)?)?;
        let sc = self.conv52.forward(&sc, train)?;
        let y = self.drop.forward(&(sa + sc)?, train)?;
        resize_linear(&self.out_conv.forward(&y)?, &[h, w], false)
    }
}

impl SegNetwork for DANet {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput> {
        logits_only_2d(&self.cfg.name, "DANet", self.cfg.in_chns, x, |x| {
            self.forward4(x, train)
        })
    }

    // `dimension` is 2 (checked by `DANetConfig::validate`); any size runs
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

/// Builds a DANet from its JSON configuration (registry entry `DANet`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    let cfg: DANetConfig = parse_net_config(config, ATTENTION_KEYS)?;
    Ok(Box::new(DANet::new(cfg, vb)?))
}
