//! PSPNet (Zhao et al., CVPR 2017) in segmentation_models_pytorch's layout
//! (`smp.PSPNet`); see [`PSPNet`].

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::backbones::resnet::{bn, relu, ResNet, ResNetNames, ResNetSpec};
use crate::config::{parse_net_config, KeyKind};
use crate::error::{NetError, Result};
use crate::layers::{bernoulli_mask, cat_channels, resize_linear, Conv, Ctx, Norm};
use crate::unet::{fold_5d, logits_only_2d, unet_meta};
use crate::{NetOutput, ParamInfo, SegNetwork};

fn d_dimension() -> usize {
    2
}
fn d_depth() -> usize {
    3
}
fn d_widths() -> Vec<usize> {
    vec![64, 128, 256, 512]
}
fn d_blocks() -> Vec<usize> {
    vec![3, 4, 6, 3]
}
fn d_psp_out() -> usize {
    512
}
fn d_true() -> bool {
    true
}
fn d_dropout() -> f64 {
    0.2
}
fn d_upsampling() -> usize {
    8
}

/// Bins of the pyramid pooling module (smp's `sizes`).
pub const PSP_BINS: [usize; 4] = [1, 2, 3, 6];

/// Configuration of [`PSPNet`] (registry name `PSPNet`).
///
/// Defaults are `smp.PSPNet`'s: a ResNet-34 encoder of depth 3,
/// `psp_out_channels = 512`, BatchNorm, dropout 0.2, up-sampling 8.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PSPNetConfig {
    /// Registry name (`net_type` in PyMIC files is accepted).
    #[serde(alias = "net_type")]
    pub name: String,
    /// Spatial dimensions; PSPNet is 2D only, so only 2 is accepted (a 5D
    /// input is folded into the batch).
    #[serde(default = "d_dimension")]
    pub dimension: usize,
    /// Input channels.
    pub in_chns: usize,
    /// Output classes (logit channels).
    pub class_num: usize,
    /// smp's `encoder_depth`: the stem counts 1, each ResNet stage 1; 2 to 5
    /// (3: the pyramid pools the stride-8 `layer2` output).
    #[serde(default = "d_depth")]
    pub encoder_depth: usize,
    /// Channels of the ResNet stages `layer1..layer4` (the stem has the
    /// first value); four values, only the first `encoder_depth - 1` used.
    #[serde(default = "d_widths")]
    pub encoder_channels: Vec<usize>,
    /// BasicBlocks per stage; four values, as `encoder_channels`.
    #[serde(default = "d_blocks")]
    pub encoder_blocks: Vec<usize>,
    /// Output channels of the decoder's fusing 1x1 convolution.
    #[serde(default = "d_psp_out")]
    pub psp_out_channels: usize,
    /// BatchNorm after the decoder's convolutions (otherwise they have
    /// biases).
    #[serde(default = "d_true")]
    pub psp_use_batchnorm: bool,
    /// Channel dropout (`nn.Dropout2d`) after the decoder, in `[0, 1)`.
    #[serde(default = "d_dropout")]
    pub psp_dropout: f64,
    /// Final bilinear up-sampling factor; must equal the encoder's stride
    /// `2^encoder_depth` so that the logits have the input's size.
    #[serde(default = "d_upsampling")]
    pub upsampling: usize,
    /// Seed of the initial weights and of the dropout masks.
    #[serde(default)]
    pub seed: u64,
}

impl PSPNetConfig {
    /// smp's default layout with `in_chns` inputs and `class_num` classes.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "PSPNet".to_string(),
            dimension: d_dimension(),
            in_chns,
            class_num,
            encoder_depth: d_depth(),
            encoder_channels: d_widths(),
            encoder_blocks: d_blocks(),
            psp_out_channels: d_psp_out(),
            psp_use_batchnorm: true,
            psp_dropout: d_dropout(),
            upsampling: d_upsampling(),
            seed: 0,
        }
    }

    /// Checks the values and names the first bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.dimension != 2 {
            return Err(format!(
                "dimension must be 2 (PSPNet is a 2D network), got {}",
                self.dimension
            ));
        }
        if self.in_chns == 0 {
            return Err("in_chns must be positive".into());
        }
        if self.class_num == 0 {
            return Err("class_num must be positive".into());
        }
        if !(2..=5).contains(&self.encoder_depth) {
            return Err(format!(
                "encoder_depth must be 2 to 5, got {}",
                self.encoder_depth
            ));
        }
        if self.encoder_channels.len() != 4 || self.encoder_channels.contains(&0) {
            return Err(format!(
                "encoder_channels must have 4 positive values, got {:?}",
                self.encoder_channels
            ));
        }
        let last = self.encoder_channels[self.encoder_depth - 2];
        if last < PSP_BINS.len() {
            return Err(format!(
                "encoder_channels: the pooled stage needs at least {} channels, got {last}",
                PSP_BINS.len()
            ));
        }
        if self.encoder_blocks.len() != 4 || self.encoder_blocks.contains(&0) {
            return Err(format!(
                "encoder_blocks must have 4 positive values, got {:?}",
                self.encoder_blocks
            ));
        }
        if self.psp_out_channels == 0 {
            return Err("psp_out_channels must be positive".into());
        }
        if !(0.0..1.0).contains(&self.psp_dropout) {
            return Err(format!(
                "psp_dropout must be in [0, 1), got {}",
                self.psp_dropout
            ));
        }
        if self.upsampling != 1 << self.encoder_depth {
            return Err(format!(
                "upsampling must be 2^encoder_depth = {} (logits at the input size), got {}",
                1usize << self.encoder_depth,
                self.upsampling
            ));
        }
        Ok(())
    }

    fn stages(&self) -> usize {
        self.encoder_depth - 1
    }
}

/// smp's `Conv2dReLU`: convolution (`0`), BatchNorm (`1`) or none (the
/// convolution then has a bias), ReLU.
pub(crate) struct ConvBnRelu {
    conv: Conv,
    bn: Option<Norm>,
}

impl ConvBnRelu {
    pub(crate) fn new(ctx: &Ctx, cin: usize, cout: usize, use_bn: bool) -> CandleResult<Self> {
        let conv = Conv::new(&ctx.pp(0), 2, cin, cout, 1, 1, 0, !use_bn)?;
        let bn = if use_bn {
            Some(bn(&ctx.pp(1), cout)?)
        } else {
            None
        };
        Ok(Self { conv, bn })
    }

    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let y = self.conv.forward(x)?;
        match &self.bn {
            Some(n) => n.forward_act(&y, train, Some(&relu())),
            None => y.relu(),
        }
    }
}

/// PSPNet (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017) in
/// segmentation_models_pytorch's layout (`smp.PSPNet`, smp 0.6), with its
/// parameter names:
///
/// * `encoder.*`: a ResNet-34 encoder ([`ResNet`], torchvision's names
///   `conv1`, `bn1`, `layer1`, ...) cut at `encoder_depth` (3: the stem,
///   `layer1` and `layer2`, stride 8, 128 channels);
/// * `decoder.psp.blocks.{0..3}.pool`: adaptive average pooling to 1x1,
///   2x2, 3x3 and 6x6 bins, a 1x1 convolution to a quarter of the channels
///   (`pool.1.0`), BatchNorm (`pool.1.1`; none for the 1x1 bin, whose
///   convolution has a bias instead, as smp) and ReLU, bilinear
///   up-sampling with aligned corners, concatenated before the input;
/// * `decoder.conv`: 1x1 convolution to `psp_out_channels`, BatchNorm,
///   ReLU, then channel dropout (`psp_dropout`);
/// * `segmentation_head.0`: 3x3 convolution to `class_num`, bilinear
///   up-sampling by `upsampling` with aligned corners.
///
/// Differences from smp: weights start random (no ImageNet weights,
/// nothing is downloaded); smp keeps the unused `layer3` and `layer4` of
/// its ResNet in the model (21,437,985 parameters for 3 inputs, 1 class)
/// while this network holds only what the output depends on; the encoder's
/// widths and blocks are configurable; no `activation` and no auxiliary
/// classification head (logits are returned).
///
/// Input sizes: multiples of `2^encoder_depth` (8 by default). The default
/// configuration (3 inputs, 1 class) has 1,501,217 trainable parameters
/// (smp's count less its unused `layer3` and `layer4`).
/// tests/pspnet.rs checks outputs and BatchNorm running statistics against
/// models built by smp itself (tools/make_smp_fixtures.py; torchvision's ResNet
/// transcribed there).
pub struct PSPNet {
    cfg: PSPNetConfig,
    params: Vec<ParamInfo>,
    encoder: ResNet,
    blocks: Vec<ConvBnRelu>,
    conv: ConvBnRelu,
    head: Conv,
    drop_rng: std::sync::Arc<std::sync::Mutex<rand_chacha::ChaCha8Rng>>,
}

impl PSPNet {
    /// Builds the network, creating (or reading) its parameters in `vb`
    /// under smp's names (`encoder.layer1.0.conv1.weight`,
    /// `decoder.psp.blocks.1.pool.1.1.running_var`, ...).
    pub fn new(cfg: PSPNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: PSPNetConfig) -> CandleResult<Self> {
        let n = cfg.stages();
        let spec = ResNetSpec {
            in_chns: cfg.in_chns,
            stem_chns: cfg.encoder_channels[0],
            widths: cfg.encoder_channels[..n].to_vec(),
            blocks: cfg.encoder_blocks[..n].to_vec(),
            dilations: vec![1; n],
            names: ResNetNames::torchvision(),
        };
        let encoder = ResNet::build(&ctx.pp("encoder"), spec)?;
        let c = cfg.encoder_channels[n - 1];
        let psp = ctx.pp("decoder").pp("psp").pp("blocks");
        let mut blocks = Vec::with_capacity(PSP_BINS.len());
        for (i, &bin) in PSP_BINS.iter().enumerate() {
            let use_bn = cfg.psp_use_batchnorm && bin != 1;
            blocks.push(ConvBnRelu::new(
                &psp.pp(i).pp("pool").pp(1),
                c,
                c / PSP_BINS.len(),
                use_bn,
            )?);
        }
        let cat = c + PSP_BINS.len() * (c / PSP_BINS.len());
        let conv = ConvBnRelu::new(
            &ctx.pp("decoder").pp("conv"),
            cat,
            cfg.psp_out_channels,
            cfg.psp_use_batchnorm,
        )?;
        let head = Conv::k3(
            &ctx.pp("segmentation_head").pp(0),
            2,
            cfg.psp_out_channels,
            cfg.class_num,
        )?;
        Ok(Self {
            cfg,
            params: ctx.params_snapshot(),
            encoder,
            blocks,
            conv,
            head,
            drop_rng: ctx.drop_rng.clone(),
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &PSPNetConfig {
        &self.cfg
    }

    fn multiple(&self) -> usize {
        1 << self.cfg.encoder_depth
    }

    fn check_input(&self, x: &Tensor) -> CandleResult<()> {
        let (_, _, h, w) = x.dims4()?;
        let m = self.multiple();
        if h % m != 0 || w % m != 0 || h == 0 || w == 0 {
            candle_core::bail!(
                "{}: PSPNet needs height and width that are multiples of {m}, got {h}x{w}; \
                 pad or crop the input",
                self.cfg.name
            )
        }
        Ok(())
    }

    fn forward4(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        self.check_input(x)?;
        let (_, _, h, w) = x.dims4()?;
        let feats = self.encoder.features(x, train)?;
        let f = &feats[feats.len() - 1];
        let (_, _, fh, fw) = f.dims4()?;
        let mut parts = Vec::with_capacity(PSP_BINS.len() + 1);
        for (block, &bin) in self.blocks.iter().zip(&PSP_BINS) {
            let p = medseg_ops::adaptive_avg_pool2d(f, [bin, bin])?;
            let y = block.forward(&p, train)?;
            parts.push(resize_linear(&y, &[fh, fw], true)?);
        }
        parts.push(f.clone());
        let refs: Vec<&Tensor> = parts.iter().collect();
        let y = self.conv.forward(&cat_channels(&refs)?, train)?;
        let y = if train && self.cfg.psp_dropout > 0.0 {
            // nn.Dropout2d: whole channels
            let (n, c, _, _) = y.dims4()?;
            let keep = 1.0 - self.cfg.psp_dropout;
            let mask = bernoulli_mask(&self.drop_rng, &[n, c, 1, 1], keep, y.device())?;
            y.broadcast_mul(&mask.to_dtype(y.dtype())?)?
        } else {
            y
        };
        let y = self.head.forward(&y)?;
        resize_linear(&y, &[h, w], true)
    }
}

impl SegNetwork for PSPNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput> {
        logits_only_2d(&self.cfg.name, "PSPNet", self.cfg.in_chns, x, |x| {
            self.forward4(x, train)
        })
    }

    // `dimension` is 2 (checked by `PSPNetConfig::validate`)
    unet_meta!(custom_input_size);

    fn input_size(&self) -> crate::InputSize {
        crate::InputSize {
            multiple: vec![self.multiple(); 2],
            minimum: vec![self.multiple(); 2],
            maximum: None,
        }
    }

    /// The encoder's maps: stem output, then `layer1`, ... (finest first).
    /// A 5D input is folded into the batch.
    fn encode(&self, x: &Tensor, train: bool) -> CandleResult<Option<Vec<Tensor>>> {
        let x = fold_5d(x)?;
        self.check_input(&x)?;
        Ok(Some(self.encoder.features(&x, train)?))
    }

    fn encoder_prefixes(&self) -> Vec<String> {
        vec!["encoder.".to_string()]
    }
}

/// Builds a PSPNet from its JSON configuration (registry entry `PSPNet`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    let cfg: PSPNetConfig = parse_net_config(config, SMP_KEYS)?;
    Ok(Box::new(PSPNet::new(cfg, vb)?))
}

/// The keys of the segmentation_models_pytorch-layout networks (PSPNet,
/// DeepLabV3+) beyond the common ones, for naming a mistyped one.
pub(crate) const SMP_KEYS: &[(&str, KeyKind)] = &[
    ("psp_dropout", KeyKind::F64),
    ("decoder_aspp_dropout", KeyKind::F64),
    ("psp_use_batchnorm", KeyKind::Bool),
    ("decoder_aspp_separable", KeyKind::Bool),
    ("encoder_channels", KeyKind::UsizeList),
    ("encoder_blocks", KeyKind::UsizeList),
    ("decoder_atrous_rates", KeyKind::UsizeList),
    ("encoder_depth", KeyKind::Usize),
    ("psp_out_channels", KeyKind::Usize),
    ("upsampling", KeyKind::Usize),
    ("encoder_output_stride", KeyKind::Usize),
    ("decoder_channels", KeyKind::Usize),
];
