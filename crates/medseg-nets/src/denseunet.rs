//! DenseUNet, the 2D network of H-DenseUNet (Li et al., IEEE TMI 2018); see
//! [`DenseUNet`].

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::config::{NormType, UpMode};
use crate::error::{NetError, Result as NetResult};
use crate::layers::{
    bernoulli_mask, cat_channels, spatial, Act, Conv, Ctx, Dropout, Norm, Upsample,
};
use crate::unet::{logits_only_2d, unet_meta};
use crate::{NetOutput, ParamInfo, SegNetwork};

fn d_dimension() -> usize {
    2
}
fn d_growth() -> usize {
    48
}
fn d_blocks() -> Vec<usize> {
    vec![6, 12, 36, 24]
}
fn d_init() -> usize {
    96
}
fn d_bn_size() -> usize {
    4
}
fn d_decoder() -> Vec<usize> {
    vec![768, 384, 96, 96, 64]
}
fn d_dropout() -> f64 {
    0.3
}

/// Configuration of [`DenseUNet`]. Defaults are the reference's
/// (DenseNet-161 encoder, H-DenseUNet decoder).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseUNetConfig {
    /// Registry name (`DenseUNet`; PyMIC's `net_type` is accepted).
    #[serde(alias = "net_type")]
    pub name: String,
    /// Spatial dimensions; only 2 (a 5D input is folded slice by slice).
    #[serde(default = "d_dimension")]
    pub dimension: usize,
    /// Input channels.
    pub in_chns: usize,
    /// Output classes (logit channels).
    pub class_num: usize,
    /// Channels each dense layer adds (DenseNet-161: 48).
    #[serde(default = "d_growth")]
    pub growth_rate: usize,
    /// Dense layers in each of the four dense blocks (DenseNet-161:
    /// `[6, 12, 36, 24]`).
    #[serde(default = "d_blocks")]
    pub block_config: Vec<usize>,
    /// Channels of the 7x7 stem convolution (DenseNet-161: 96).
    #[serde(default = "d_init")]
    pub num_init_features: usize,
    /// Bottleneck width factor of the dense layers' 1x1 convolutions.
    #[serde(default = "d_bn_size")]
    pub bn_size: usize,
    /// Output channels of `up1`, `up2`, `up3`, `up4` and of the head
    /// convolution (H-DenseUNet: `[768, 384, 96, 96, 64]`). The first three
    /// must equal the channels of dense block 2, dense block 1 and the stem,
    /// which they are added to.
    #[serde(default = "d_decoder")]
    pub decoder_chns: Vec<usize>,
    /// Channel dropout (`dropout2d`) probability in the head, training only
    /// (reference: 0.3).
    #[serde(default = "d_dropout")]
    pub dropout: f64,
    /// Dropout after each dense layer, training only (torchvision's
    /// `drop_rate`; reference: 0).
    #[serde(default)]
    pub drop_rate: f64,
    /// Seed of the initial weights and of the dropout masks.
    #[serde(default)]
    pub seed: u64,
}

impl DenseUNetConfig {
    /// The default (DenseNet-161) configuration for `in_chns` inputs and
    /// `class_num` classes.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "DenseUNet".into(),
            dimension: d_dimension(),
            in_chns,
            class_num,
            growth_rate: d_growth(),
            block_config: d_blocks(),
            num_init_features: d_init(),
            bn_size: d_bn_size(),
            decoder_chns: d_decoder(),
            dropout: d_dropout(),
            drop_rate: 0.0,
            seed: 0,
        }
    }

    /// Encoder channels: stem, dense blocks 1 to 4 (outputs before the
    /// transitions).
    pub fn encoder_chns(&self) -> [usize; 5] {
        let mut out = [self.num_init_features; 5];
        let mut c = self.num_init_features;
        for (i, &n) in self.block_config.iter().take(4).enumerate() {
            c += n * self.growth_rate;
            out[i + 1] = c;
            c /= 2;
        }
        out
    }

    /// Checks the values and names the first bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.dimension != 2 {
            return Err(format!(
                "dimension must be 2 (DenseUNet is a 2D network; 3D input is folded), got {}",
                self.dimension
            ));
        }
        for (key, v) in [
            ("in_chns", self.in_chns),
            ("class_num", self.class_num),
            ("growth_rate", self.growth_rate),
            ("num_init_features", self.num_init_features),
            ("bn_size", self.bn_size),
        ] {
            if v == 0 {
                return Err(format!("{key} must be positive"));
            }
        }
        if self.block_config.len() != 4 {
            return Err(format!(
                "block_config must list 4 dense blocks, got {:?}",
                self.block_config
            ));
        }
        if self.block_config.contains(&0) {
            return Err(format!(
                "block_config entries must be positive, got {:?}",
                self.block_config
            ));
        }
        if self.decoder_chns.len() != 5 {
            return Err(format!(
                "decoder_chns must have 5 entries (up1..up4 and the head), got {:?}",
                self.decoder_chns
            ));
        }
        if self.decoder_chns.contains(&0) {
            return Err(format!(
                "decoder_chns entries must be positive, got {:?}",
                self.decoder_chns
            ));
        }
        let enc = self.encoder_chns();
        for (i, (want, what)) in [
            (enc[2], "dense block 2"),
            (enc[1], "dense block 1"),
            (enc[0], "the stem (num_init_features)"),
        ]
        .into_iter()
        .enumerate()
        {
            if self.decoder_chns[i] != want {
                return Err(format!(
                    "decoder_chns[{i}] = {} must equal the {want} channels of {what}, \
                     which up{} adds to it",
                    self.decoder_chns[i],
                    i + 2
                ));
            }
        }
        for (key, p) in [("dropout", self.dropout), ("drop_rate", self.drop_rate)] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("{key} {p} is outside [0, 1)"));
            }
        }
        Ok(())
    }
}

/// ReLU as a fused activation of the norms (LeakyReLU with slope 0).
fn relu() -> Act {
    Act::LeakyRelu(0.0)
}

/// Zero-pads the spatial axes by 1 on each side and max-pools with kernel 3,
/// stride 2. Zero padding equals PyTorch's `-inf` padding here because the
/// input (after a ReLU) is non-negative.
fn max_pool3s2p1(x: &Tensor) -> Result<Tensor> {
    let xp = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    if medseg_ops::fast_path(&xp) {
        return medseg_ops::max_pool2d(&xp, [3, 3], [2, 2]);
    }
    // candle composition: the maximum of the nine strided taps
    let (_, _, hp, wp) = xp.dims4()?;
    let (oh, ow) = ((hp - 3) / 2 + 1, (wp - 3) / 2 + 1);
    let taps = |off: usize, n: usize| -> Result<Tensor> {
        let idx: Vec<u32> = (0..n).map(|i| (off + 2 * i) as u32).collect();
        Tensor::new(idx.as_slice(), xp.device())
    };
    let mut acc: Option<Tensor> = None;
    for dy in 0..3 {
        let rows = xp.index_select(&taps(dy, oh)?, 2)?;
        for dx in 0..3 {
            let t = rows.index_select(&taps(dx, ow)?, 3)?;
            acc = Some(match acc {
                None => t,
                Some(a) => a.maximum(&t)?,
            });
        }
    }
    acc.ok_or_else(|| candle_core::Error::Msg("max pool: no taps".into()))
}

/// 2x2 average pooling with stride 2 (floor of odd sizes).
fn avg_pool2(x: &Tensor) -> Result<Tensor> {
    if medseg_ops::fast_path(x) {
        return medseg_ops::avg_pool2d(x, [2, 2], [2, 2]);
    }
    // candle composition: drop an odd trailing row/column, average the pairs
    // (candle's own avg_pool2d gradient is wrong for odd sizes)
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (h / 2, w / 2);
    x.narrow(2, 0, 2 * oh)?
        .narrow(3, 0, 2 * ow)?
        .contiguous()?
        .reshape((n, c, oh, 2, ow, 2))?
        .mean(5)?
        .mean(3)
}

/// torchvision `_DenseLayer`: BN-ReLU-1x1 conv-BN-ReLU-3x3 conv.
struct DenseLayer {
    norm1: Norm,
    conv1: Conv,
    norm2: Norm,
    conv2: Conv,
    drop: Dropout,
}

impl DenseLayer {
    fn new(ctx: &Ctx, cin: usize, growth: usize, bn_size: usize, drop: f64) -> Result<Self> {
        let mid = bn_size * growth;
        Ok(Self {
            norm1: Norm::new(&ctx.pp("norm1"), NormType::BatchNorm, cin, 1)?,
            conv1: Conv::new(&ctx.pp("conv1"), 2, cin, mid, 1, 1, 0, false)?,
            norm2: Norm::new(&ctx.pp("norm2"), NormType::BatchNorm, mid, 1)?,
            conv2: Conv::new(&ctx.pp("conv2"), 2, mid, growth, 3, 1, 1, false)?,
            drop: Dropout::new(ctx, drop),
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let r = relu();
        let y = self
            .conv1
            .forward(&self.norm1.forward_act(x, train, Some(&r))?)?;
        let y = self
            .conv2
            .forward(&self.norm2.forward_act(&y, train, Some(&r))?)?;
        self.drop.forward(&y, train)
    }
}

/// torchvision `_DenseBlock`: every layer sees the concatenation of the
/// block input and all earlier layers' outputs; the block returns it all.
struct DenseBlock {
    layers: Vec<DenseLayer>,
}

impl DenseBlock {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut feats = x.clone();
        for l in &self.layers {
            let y = l.forward(&feats, train)?;
            feats = cat_channels(&[&feats, &y])?;
        }
        Ok(feats)
    }
}

/// torchvision `_Transition`: BN-ReLU-1x1 conv-2x2 average pooling.
struct Transition {
    norm: Norm,
    conv: Conv,
}

impl Transition {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.norm.forward_act(x, train, Some(&relu()))?;
        avg_pool2(&self.conv.forward(&y)?)
    }
}

/// `UnetBlock_` (with `x_conv_`, the 1x1 skip projection) and `UnetBlock`:
/// up-sample, add the skip, 3x3 conv-BN-ReLU.
struct UpBlock {
    x_conv: Conv,
    x_conv_: Option<Conv>,
    bn: Norm,
    up: Upsample,
}

impl UpBlock {
    fn new(ctx: &Ctx, cin: usize, skip: Option<usize>, cout: usize) -> Result<Self> {
        let x_conv = Conv::k3(&ctx.pp("x_conv"), 2, cin, cout)?;
        let x_conv_ = match skip {
            Some(cs) => Some(Conv::pointwise(&ctx.pp("x_conv_"), 2, cs, cin)?),
            None => None,
        };
        Ok(Self {
            x_conv,
            x_conv_,
            bn: Norm::new(&ctx.pp("bn"), NormType::BatchNorm, cout, 1)?,
            up: Upsample::new(&ctx.pp("up"), UpMode::Linear),
        })
    }

    fn forward(&self, x: &Tensor, skip: &Tensor, train: bool) -> Result<Tensor> {
        let u = self.up.forward(x, &spatial(skip))?;
        let s = match &self.x_conv_ {
            Some(c) => c.forward(skip)?,
            None => skip.clone(),
        };
        let y = self.x_conv.forward(&(u + s)?)?;
        self.bn.forward_act(&y, train, Some(&relu()))
    }
}

/// DenseUNet: the 2D DenseUNet of H-DenseUNet (X. Li, H. Chen, X. Qi, Q. Dou,
/// C.-W. Fu, P.-A. Heng, "H-DenseUNet: Hybrid Densely Connected UNet for
/// Liver and Tumor Segmentation from CT Volumes", IEEE TMI 37(12), 2018).
///
/// It follows the PyTorch port by the same group, `DenseUnet_2d` in
/// `models/network.py` with `UnetBlock_`/`UnetBlock` from `models/layers.py`
/// of the TCSM repository (xmengli/TCSM, Li et al., IEEE TNNLS 2020), itself
/// a transcription of the Keras `DenseUNet` of xmengli/H-DenseUNet
/// (`denseunet.py`):
///
/// * **Encoder** `rn`: torchvision's DenseNet `features` (DenseNet-161 by
///   default: `num_init_features` 96, `growth_rate` 48, `block_config`
///   `[6, 12, 36, 24]`, `bn_size` 4): 7x7 stride-2 convolution, BN, ReLU,
///   3x3 stride-2 max pooling (padding 1); dense blocks of BN-ReLU-1x1
///   conv (`bn_size * growth_rate`)-BN-ReLU-3x3 conv (`growth_rate`) layers
///   whose outputs are concatenated; transitions BN-ReLU-1x1 conv (half the
///   channels)-2x2 average pooling; a final BN (`norm5`) followed by ReLU.
///   Parameter names are torchvision's under `rn`:
///   `rn.conv0`, `rn.norm0`, `rn.denseblock1.denselayer1.norm1`, ...,
///   `rn.transition1.conv`, `rn.norm5`.
/// * **Decoder**: four stages `up1..up4`, each up-sampling bilinearly (aligned
///   corners) by 2, **adding** the encoder feature map of that scale and
///   applying 3x3 conv (with bias)-BN-ReLU (`x_conv`, `bn`): the skips are
///   the outputs of dense blocks 3, 2, 1 and of the stem ReLU. Only `up1`
///   projects its skip with a 1x1 convolution (`x_conv_`, dense block 3 to
///   the `norm5` channels); the other sums need the decoder channels to
///   equal the encoder's (`decoder_chns[0..3]` = channels of dense blocks 2,
///   1 and of the stem; H-DenseUNet's 768, 384, 96).
/// * **Head**: bilinear up-sampling by 2 to the input resolution, 3x3 conv
///   (`conv1`, 64 channels), channel dropout (p 0.3), BN (`bn1`), ReLU and a
///   1x1 classifier (`conv2`).
///
/// Two differences from the reference: (1) each up-sampling goes to the
/// size of its skip connection (the input size for the head) instead of a
/// fixed factor of 2 -- identical for sides that are multiples of 32, and
/// it lets any side of at least 29 pixels through (the five down-samplings
/// need that much; the reference needs multiples of 32), with logits at the
/// input size; (2) the head's channel dropout acts in training mode only
/// (the reference calls `F.dropout2d` with its default `training=True`, so
/// it also drops at inference unless called with `dropout=False`). The
/// Keras original up-samples with nearest neighbours and uses Keras' BN
/// epsilon; the PyTorch port (and this network) use bilinear up-sampling and
/// PyTorch's BN (eps 1e-5, momentum 0.1). Weights saved from the reference's
/// `state_dict()` load by name ([`crate::import_pytorch`]); torchvision's
/// ImageNet DenseNet weights need `features.` renamed to `rn.`.
///
/// 2D only; a `[N, C, D, H, W]` input is processed slice by slice (depth
/// folded into the batch). Tensors are channel-first.
pub struct DenseUNet {
    cfg: DenseUNetConfig,
    params: Vec<ParamInfo>,
    conv0: Conv,
    norm0: Norm,
    blocks: Vec<DenseBlock>,
    transitions: Vec<Transition>,
    norm5: Norm,
    ups: Vec<UpBlock>,
    head_up: Upsample,
    conv1: Conv,
    bn1: Norm,
    conv2: Conv,
    drop_rng: std::sync::Arc<std::sync::Mutex<rand_chacha::ChaCha8Rng>>,
}

/// Smallest spatial side the five down-samplings accept.
const MIN_SIDE: usize = 29;

impl DenseUNet {
    /// Builds the network in `vb` (parameters created or read by name).
    pub fn new(cfg: DenseUNetConfig, vb: VarBuilder) -> NetResult<Self> {
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: DenseUNetConfig) -> Result<Self> {
        let rn = ctx.pp("rn");
        let c0 = cfg.num_init_features;
        let conv0 = Conv::new(&rn.pp("conv0"), 2, cfg.in_chns, c0, 7, 2, 3, false)?;
        let norm0 = Norm::new(&rn.pp("norm0"), NormType::BatchNorm, c0, 1)?;
        let mut blocks = Vec::new();
        let mut transitions = Vec::new();
        let mut c = c0;
        for (b, &n) in cfg.block_config.iter().enumerate() {
            let bctx = rn.pp(format!("denseblock{}", b + 1));
            let layers = (0..n)
                .map(|l| {
                    DenseLayer::new(
                        &bctx.pp(format!("denselayer{}", l + 1)),
                        c + l * cfg.growth_rate,
                        cfg.growth_rate,
                        cfg.bn_size,
                        cfg.drop_rate,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            blocks.push(DenseBlock { layers });
            c += n * cfg.growth_rate;
            if b + 1 < cfg.block_config.len() {
                let t = rn.pp(format!("transition{}", b + 1));
                transitions.push(Transition {
                    norm: Norm::new(&t.pp("norm"), NormType::BatchNorm, c, 1)?,
                    conv: Conv::new(&t.pp("conv"), 2, c, c / 2, 1, 1, 0, false)?,
                });
                c /= 2;
            }
        }
        let norm5 = Norm::new(&rn.pp("norm5"), NormType::BatchNorm, c, 1)?;
        let enc = cfg.encoder_chns();
        let dec = &cfg.decoder_chns;
        let ups = vec![
            UpBlock::new(&ctx.pp("up1"), enc[4], Some(enc[3]), dec[0])?,
            UpBlock::new(&ctx.pp("up2"), dec[0], None, dec[1])?,
            UpBlock::new(&ctx.pp("up3"), dec[1], None, dec[2])?,
            UpBlock::new(&ctx.pp("up4"), dec[2], None, dec[3])?,
        ];
        let head_up = Upsample::new(&ctx.pp("up5"), UpMode::Linear);
        let bn1 = Norm::new(&ctx.pp("bn1"), NormType::BatchNorm, dec[4], 1)?;
        let conv1 = Conv::k3(&ctx.pp("conv1"), 2, dec[3], dec[4])?;
        let conv2 = Conv::pointwise(&ctx.pp("conv2"), 2, dec[4], cfg.class_num)?;
        Ok(Self {
            params: ctx.params_snapshot(),
            cfg,
            conv0,
            norm0,
            blocks,
            transitions,
            norm5,
            ups,
            head_up,
            conv1,
            bn1,
            conv2,
            drop_rng: ctx.drop_rng.clone(),
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &DenseUNetConfig {
        &self.cfg
    }

    fn forward4(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        if h < MIN_SIDE || w < MIN_SIDE {
            candle_core::bail!(
                "{}: every spatial side must be at least {MIN_SIDE} (five down-samplings), \
                 got {h}x{w}",
                self.cfg.name
            )
        }
        let r = relu();
        let x0 = self
            .norm0
            .forward_act(&self.conv0.forward(x)?, train, Some(&r))?;
        let mut f = max_pool3s2p1(&x0)?;
        let mut skips = vec![x0];
        for (b, block) in self.blocks.iter().enumerate() {
            f = block.forward(&f, train)?;
            if let Some(t) = self.transitions.get(b) {
                skips.push(f.clone());
                f = t.forward(&f, train)?;
            }
        }
        let mut y = self.norm5.forward_act(&f, train, Some(&r))?;
        // up1 takes dense block 3, up2 block 2, up3 block 1, up4 the stem
        for (k, up) in self.ups.iter().enumerate() {
            y = up.forward(&y, &skips[3 - k], train)?;
        }
        let y = self.head_up.forward(&y, &[h, w])?;
        let mut z = self.conv1.forward(&y)?;
        if train && self.cfg.dropout > 0.0 {
            let (n, c, _, _) = z.dims4()?;
            let keep = 1.0 - self.cfg.dropout;
            let mask = bernoulli_mask(&self.drop_rng, &[n, c, 1, 1], keep, z.device())?;
            z = z.broadcast_mul(&mask.to_dtype(z.dtype())?)?;
        }
        let z = self.bn1.forward_act(&z, train, Some(&r))?;
        self.conv2.forward(&z)
    }
}

impl SegNetwork for DenseUNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<NetOutput> {
        logits_only_2d(&self.cfg.name, "a 2D network", self.cfg.in_chns, x, |x| {
            self.forward4(x, train)
        })
    }

    // `dimension` is 2 (checked by `DenseUNetConfig::validate`)
    unet_meta!(custom_input_size);

    /// Five halvings (stem, max pooling, three transitions).
    fn input_size(&self) -> crate::InputSize {
        crate::InputSize::pooled(2, 5)
    }
}

/// Builds a DenseUNet from its JSON configuration (registry entry `DenseUNet`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
) -> NetResult<Box<dyn SegNetwork>> {
    let cfg: DenseUNetConfig = serde_json::from_value(config.clone())
        .map_err(|e| NetError::Config(format!("DenseUNet: {e} in {config}")))?;
    Ok(Box::new(DenseUNet::new(cfg, vb)?))
}
