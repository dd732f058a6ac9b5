//! EANet (Guo et al., "Beyond Self-attention: External Attention using Two
//! Linear Layers for Visual Tasks", 2021) in JMedSeg's layout
//! (`model/EANet.py`); see [`EANet`].

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::attention::{
    backbone_spec, check_common, d_backbone, d_dimension, d_output_stride, d_width, ATTENTION_KEYS,
};
use crate::backbones::dilated_resnet::{
    norm_layer, DilatedResNet, DilatedResNetSpec, ResNetFlavour,
};
use crate::backbones::resnet::relu;
use crate::config::parse_net_config;
use crate::error::{NetError, Result};
use crate::layers::{record, resize_linear, Conv, Ctx, Dropout, Norm, ParamInit, TransConv};
use crate::unet::{fold_5d, logits_only_2d, unet_meta};
use crate::{InputSize, NetOutput, ParamInfo, SegNetwork};

fn d_dropout() -> f64 {
    0.1
}
fn d_memory_units() -> usize {
    64
}

/// Configuration of [`EANet`] (registry name `EANet`).
///
/// Defaults are JMedSeg's `EANet()`: its GroupNorm ResNet-101 at output
/// stride 16, 64 external memory units, dropout 0.1 after the first
/// up-sampling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EANetConfig {
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
    /// `resnet50` or `resnet101` (JMedSeg builds `resnet101`).
    #[serde(default = "d_backbone")]
    pub backbone: String,
    /// Only 16 (JMedSeg's EANet backbone has no other).
    #[serde(default = "d_output_stride")]
    pub output_stride: usize,
    /// Base width `w` of the backbone (64; see
    /// [`DilatedResNetSpec::width`]); the head works on `8w` channels
    /// (512) and up-samples to `4w` (256).
    #[serde(default = "d_width")]
    pub backbone_width: usize,
    /// Bottlenecks of `layer1..layer3`, replacing the `backbone`'s when
    /// given (for small configurations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone_blocks: Option<Vec<usize>>,
    /// External memory units `S` of the attention (JMedSeg's `k = 64`).
    #[serde(default = "d_memory_units")]
    pub memory_units: usize,
    /// Element-wise dropout after the first up-sampling (JMedSeg's
    /// `nn.Dropout(p=0.1)` in `fc1`), in `[0, 1)`.
    #[serde(default = "d_dropout")]
    pub dropout: f64,
    /// Seed of the initial weights and of the dropout masks.
    #[serde(default)]
    pub seed: u64,
}

impl EANetConfig {
    /// JMedSeg's default layout with `in_chns` inputs and `class_num`
    /// classes.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "EANet".to_string(),
            dimension: 2,
            in_chns,
            class_num,
            backbone: d_backbone(),
            output_stride: d_output_stride(),
            backbone_width: d_width(),
            backbone_blocks: None,
            memory_units: d_memory_units(),
            dropout: d_dropout(),
            seed: 0,
        }
    }

    /// The backbone's shape (the EANet flavour); errors name the bad key.
    pub fn backbone_spec(&self) -> std::result::Result<DilatedResNetSpec, String> {
        if self.output_stride != 16 {
            return Err(format!(
                "output_stride must be 16 (EANet's backbone has no other), got {}",
                self.output_stride
            ));
        }
        let mut spec = backbone_spec(
            &self.backbone,
            self.in_chns,
            self.backbone_width,
            self.backbone_blocks.as_ref(),
            self.output_stride,
        )?;
        spec.flavour = ResNetFlavour::EANet;
        Ok(spec)
    }

    /// Checks the values and names the first bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        check_common(self.dimension, self.class_num, self.dropout, "EANet")?;
        if self.memory_units == 0 {
            return Err("memory_units must be positive".into());
        }
        self.backbone_spec().map(|_| ())
    }
}

/// JMedSeg's `External_attention(c)`: `conv1` (1x1 with bias), the two
/// linear layers on the flattened positions, `linear_0` (`c -> S` memory
/// units, softmax over the positions, then each position normalised over
/// the units: the paper's double normalisation) and `linear_1` (`S -> c`),
/// `conv2` (1x1 without bias, `NormLayer`), the residual from the input,
/// ReLU.
pub struct ExternalAttention {
    conv1: Conv,
    /// `[S, c]` (stored `[S, c, 1]` as Jittor's `Conv1d`).
    linear_0: Tensor,
    /// `[c, S]` (stored `[c, S, 1]`).
    linear_1: Tensor,
    conv2: Conv,
    norm2: Norm,
    name: String,
}

impl ExternalAttention {
    fn new(ctx: &Ctx, c: usize, units: usize) -> CandleResult<Self> {
        // Conv1d(cin, cout, 1, bias=False): PyTorch's bound 1 / sqrt(cin)
        let l0 = ctx.param(
            &[units, c, 1],
            "linear_0.weight",
            ParamInit::Uniform(1.0 / (c as f32).sqrt()),
        )?;
        let l1 = ctx.param(
            &[c, units, 1],
            "linear_1.weight",
            ParamInit::Uniform(1.0 / (units as f32).sqrt()),
        )?;
        let c2 = ctx.pp("conv2");
        Ok(Self {
            conv1: Conv::pointwise(&ctx.pp("conv1"), 2, c, c)?,
            linear_0: l0.squeeze(2)?,
            linear_1: l1.squeeze(2)?,
            conv2: Conv::new(&c2.pp(0), 2, c, c, 1, 1, 0, false)?,
            norm2: norm_layer(&c2.pp(1), c)?,
            name: ctx.prefix(),
        })
    }

    /// `[N, c, H, W] -> [N, c, H, W]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let units = self.linear_0.dim(0)?;
        let y = self.conv1.forward(x)?.reshape((n, c, h * w))?;
        let attn = self.linear_0.broadcast_left(n)?.matmul(&y)?; // [N, S, HW]
        let attn = candle_nn::ops::softmax_last_dim(&attn)?;
        let attn = attn.broadcast_div(&(attn.sum_keepdim(1)? + 1e-9)?)?;
        let y = self.linear_1.broadcast_left(n)?.matmul(&attn)?; // [N, c, HW]
                                                                 // the two linear layers: c * S multiply-adds per position each
        record(
            &format!("{}.linear_0/1", self.name),
            "Conv1d",
            &y,
            2 * c * units,
            (2 * n * h * w * c * units) as u64,
        );
        let y = self.conv2.forward(&y.reshape((n, c, h, w))?)?;
        let y = self.norm2.forward(&y, train)?;
        (y + x)?.relu()
    }
}

/// EANet (Guo et al., "Beyond Self-attention: External Attention using Two
/// Linear Layers for Visual Tasks", 2021) in JMedSeg's layout
/// (github.com/THU-CVlab/JMedSeg, `model/EANet.py`), with JMedSeg's
/// parameter names:
///
/// * `backbone.*`: the GroupNorm ResNet of `EANet.py` ([`DilatedResNet`]
///   with [`ResNetFlavour::EANet`]; ResNet-101 at output stride 16);
/// * `fc0`: 3x3 convolution (`conv`, no bias), `NormLayer` (`bn.norm`),
///   ReLU from `32w` (2048) to `8w` (512) channels;
/// * `head`: external attention ([`ExternalAttention`], 64 memory units);
/// * `fc1.0`: 3x3 transposed convolution (`deconv`, stride 2, padding 1,
///   output padding 1, no bias), `NormLayer`, ReLU to `4w` (256) channels;
///   dropout (0.1);
/// * `out_conv` (JMedSeg's `fc2`): 2x2 transposed convolution (stride 2,
///   with bias) to `class_num`; the logits, now at a quarter of the input
///   size, are resized bilinearly to it (no aligned corners, as Jittor's
///   `nn.resize`).
///
/// Differences from JMedSeg: `in_chns` inputs (JMedSeg: 3); the classifier
/// is named `out_conv` instead of `fc2`, so that the federated head
/// pattern `*out_conv*` finds it; the backbone's width and blocks are
/// configurable; no ImageNet weights. JMedSeg's unused `Cluster_attention`
/// is not built.
///
/// JMedSeg's default (3 inputs, 2 classes) has 53,835,714 parameters,
/// counted on `EANet.py` itself in Jittor and on the PyTorch transcription
/// in tools/make_eanet_fixtures.py (the comment in `EANet.py`, 53,242,818,
/// lacks exactly the attention head and two NormLayers); tests/eanet.rs
/// checks the count and the outputs against the transcription. Any input
/// size of at least 3 runs (the backbone's 2x2 pooling floors).
pub struct EANet {
    cfg: EANetConfig,
    params: Vec<ParamInfo>,
    backbone: DilatedResNet,
    fc0: Conv,
    fc0_norm: Norm,
    head: ExternalAttention,
    fc1: TransConv,
    fc1_norm: Norm,
    drop: Dropout,
    out_conv: TransConv,
}

impl EANet {
    /// Builds the network, creating (or reading) its parameters in `vb`
    /// under JMedSeg's names (`backbone.layer4.2.bn3.norm.weight`,
    /// `head.linear_0.weight`, ...).
    pub fn new(cfg: EANetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: EANetConfig) -> CandleResult<Self> {
        let spec = cfg.backbone_spec().map_err(candle_core::Error::Msg)?;
        let cin = spec.channels()[3];
        let w = spec.width;
        let backbone = DilatedResNet::build(&ctx.pp("backbone"), spec)?;
        let fc0 = ctx.pp("fc0");
        let fc1 = ctx.pp("fc1").pp(0);
        Ok(Self {
            backbone,
            fc0: Conv::new(&fc0.pp("conv"), 2, cin, 8 * w, 3, 1, 1, false)?,
            fc0_norm: norm_layer(&fc0.pp("bn"), 8 * w)?,
            head: ExternalAttention::new(&ctx.pp("head"), 8 * w, cfg.memory_units)?,
            fc1: TransConv::without_bias(&fc1.pp("deconv"), 8 * w, 4 * w, 3, 2, 1, 1)?,
            fc1_norm: norm_layer(&fc1.pp("bn"), 4 * w)?,
            drop: Dropout::new(ctx, cfg.dropout),
            out_conv: TransConv::new(&ctx.pp("out_conv"), 4 * w, cfg.class_num, 2, 2, 0, 0)?,
            params: ctx.params_snapshot(),
            cfg,
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &EANetConfig {
        &self.cfg
    }

    fn forward4(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let r = Some(relu());
        let feats = self.backbone.features(x, train)?;
        let y = self
            .fc0_norm
            .forward_act(&self.fc0.forward(&feats[3])?, train, r.as_ref())?;
        let y = self.head.forward(&y, train)?;
        let y = self
            .fc1_norm
            .forward_act(&self.fc1.forward(&y)?, train, r.as_ref())?;
        let y = self.drop.forward(&y, train)?;
        resize_linear(&self.out_conv.forward(&y)?, &[h, w], false)
    }
}

impl SegNetwork for EANet {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput> {
        logits_only_2d(&self.cfg.name, "EANet", self.cfg.in_chns, x, |x| {
            self.forward4(x, train)
        })
    }

    // `dimension` is 2 (checked by `EANetConfig::validate`)
    unet_meta!(custom_input_size);

    /// Any size of at least 3 (the stem's stride-2 convolution rounds up,
    /// its 2x2 pooling floors).
    fn input_size(&self) -> InputSize {
        InputSize {
            multiple: vec![1, 1],
            minimum: vec![3, 3],
            maximum: None,
        }
    }

    /// The backbone's maps: `layer1` .. `layer4`. A 5D input is folded into
    /// the batch.
    fn encode(&self, x: &Tensor, train: bool) -> CandleResult<Option<Vec<Tensor>>> {
        Ok(Some(self.backbone.features(&fold_5d(x)?, train)?))
    }

    fn encoder_prefixes(&self) -> Vec<String> {
        vec!["backbone.".to_string()]
    }
}

/// Builds an EANet from its JSON configuration (registry entry `EANet`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    let cfg: EANetConfig = parse_net_config(config, ATTENTION_KEYS)?;
    Ok(Box::new(EANet::new(cfg, vb)?))
}
