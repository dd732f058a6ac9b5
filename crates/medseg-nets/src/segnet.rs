//! SegNet (Badrinarayanan, Kendall & Cipolla, IEEE TPAMI 2017): a VGG16-BN
//! encoder whose max-pooling indices drive the decoder's unpooling; see
//! [`SegNet`].

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::backbones::vgg::{Vgg, VGG16_CONVS, VGG_WIDTHS};
use crate::config::{parse_net_config, KeyKind, NormType};
use crate::error::{NetError, Result};
use crate::layers::{Act, Conv, Ctx, Norm};
use crate::pooling::{max_pool2d_with_indices, max_unpool2d};
use crate::unet::{fold_5d, logits_only_2d, unet_meta};
use crate::{NetOutput, ParamInfo, SegNetwork};

fn d_dimension() -> usize {
    2
}
fn d_features() -> Vec<usize> {
    VGG_WIDTHS.to_vec()
}
fn d_convs() -> Vec<usize> {
    VGG16_CONVS.to_vec()
}

/// Configuration of [`SegNet`] (registry name `SegNet`).
///
/// Defaults are the paper's VGG16 layout: `feature_chns = [64, 128, 256,
/// 512, 512]`, `block_convs = [2, 2, 3, 3, 3]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegNetConfig {
    /// Registry name (`net_type` in PyMIC files is accepted).
    #[serde(alias = "net_type")]
    pub name: String,
    /// Spatial dimensions; SegNet is 2D only, so only 2 is accepted (a 5D
    /// input is folded into the batch).
    #[serde(default = "d_dimension")]
    pub dimension: usize,
    /// Input channels.
    pub in_chns: usize,
    /// Output classes (logit channels).
    pub class_num: usize,
    /// Widths of the five encoder blocks (mirrored by the decoder); five
    /// positive values.
    #[serde(default = "d_features")]
    pub feature_chns: Vec<usize>,
    /// 3x3 convolutions per encoder block (and per mirrored decoder
    /// stage); five positive values.
    #[serde(default = "d_convs")]
    pub block_convs: Vec<usize>,
    /// Seed of the initial weights.
    #[serde(default)]
    pub seed: u64,
}

impl SegNetConfig {
    /// The paper's layout with `in_chns` inputs and `class_num` classes.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "SegNet".to_string(),
            dimension: d_dimension(),
            in_chns,
            class_num,
            feature_chns: d_features(),
            block_convs: d_convs(),
            seed: 0,
        }
    }

    /// Checks the values and names the first bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.dimension != 2 {
            return Err(format!(
                "dimension must be 2 (SegNet is a 2D network), got {}",
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
                "feature_chns must be 5 positive values (one per encoder block), got {:?}",
                self.feature_chns
            ));
        }
        if self.block_convs.len() != 5 || self.block_convs.contains(&0) {
            return Err(format!(
                "block_convs must be 5 positive values (convolutions per block), got {:?}",
                self.block_convs
            ));
        }
        Ok(())
    }
}

/// One `Conv2d(3x3) + BatchNorm2d + ReLU` unit of a decoder stage.
struct DecUnit {
    conv: Conv,
    bn: Norm,
}

/// SegNet (Badrinarayanan, Kendall & Cipolla, "SegNet: A Deep
/// Convolutional Encoder-Decoder Architecture for Image Segmentation",
/// IEEE TPAMI 39(12), 2017), the layout of the authors' Caffe model
/// (`segnet_train.prototxt`):
///
/// * `encoder`: VGG16-BN's feature extractor in torchvision's layout
///   ([`Vgg`] with BatchNorm: `encoder.0` = first convolution, `encoder.1`
///   its BatchNorm, ...), five blocks of `[2, 2, 3, 3, 3]` 3x3
///   convolution + BatchNorm + ReLU units of `[64, 128, 256, 512, 512]`
///   channels, each block followed by a 2x2 stride-2 max pooling that
///   keeps the indices of its maxima;
/// * `decoders.0` .. `decoders.4` (deepest first): max unpooling by the
///   indices of the mirrored block to that block's pre-pooling size, then
///   as many conv + BatchNorm + ReLU units as the block has convolutions
///   (`decoders.k.{3j}` the convolution, `decoders.k.{3j+1}` its
///   BatchNorm), the last unit of each stage narrowing to the next
///   block's width; the finest stage has one unit fewer, its last one
///   being
/// * `classifier`: a 3x3 convolution (with bias, no BatchNorm) to
///   `class_num` logits.
///
/// Pooling indices follow PyTorch's rule (the first maximum of a window
/// wins ties; see [`crate::pooling`]).
///
/// Differences from the reference: weights start random (PyTorch's default
/// initialisation; the paper's encoder starts from ImageNet VGG16), the
/// input has `in_chns` channels, widths and block lengths are configurable,
/// and logits are returned (no softmax).
///
/// Input sizes: any height and width of at least 32; inference pads to
/// multiples of 32 ([`SegNetwork::input_size`]), where no pooling drops a
/// row. Other sizes work as in PyTorch: a pooling floors and the unpooling
/// restores the exact pre-pooling size. The network is 2D; a `[N, C, D,
/// H, W]` input has its depth folded into the batch.
///
/// The default configuration has 29,443,008 + 577 * `class_num` trainable
/// parameters (29,444,162 for 2 classes; 14,723,136 in the encoder,
/// torchvision's `vgg16_bn().features`). tests/segnet.rs checks outputs
/// (eval and train mode), BatchNorm running statistics and the pooling
/// indices against a PyTorch transcription (tools/make_segnet_fixtures.py).
pub struct SegNet {
    cfg: SegNetConfig,
    params: Vec<ParamInfo>,
    encoder: Vgg,
    decoders: Vec<Vec<DecUnit>>, // deepest first
    classifier: Conv,
}

impl SegNet {
    /// Smallest input height and width (five halvings).
    pub const MIN_SIZE: usize = 32;

    /// Builds the network, creating (or reading) its parameters in `vb`
    /// under the names `encoder.0.weight`, `encoder.1.running_mean`, ...,
    /// `decoders.0.0.weight`, ..., `classifier.weight`.
    pub fn new(cfg: SegNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: SegNetConfig) -> CandleResult<Self> {
        let f = &cfg.feature_chns;
        let n = &cfg.block_convs;
        let encoder = Vgg::new(&ctx.pp("encoder"), cfg.in_chns, f, n, true)?;
        let mut decoders = Vec::with_capacity(5);
        for (k, block) in (0..5).rev().enumerate() {
            let stage = ctx.pp("decoders").pp(k);
            let w = f[block];
            // the finest stage leaves its last convolution to the classifier
            let units = if block == 0 { n[0] - 1 } else { n[block] };
            let mut v = Vec::with_capacity(units);
            for j in 0..units {
                let cout = if j + 1 == units && block > 0 {
                    f[block - 1]
                } else {
                    w
                };
                v.push(DecUnit {
                    conv: Conv::k3(&stage.pp(3 * j), 2, w, cout)?,
                    bn: Norm::new(&stage.pp(3 * j + 1), NormType::BatchNorm, cout, 1)?,
                });
            }
            decoders.push(v);
        }
        let classifier = Conv::k3(&ctx.pp("classifier"), 2, f[0], cfg.class_num)?;
        Ok(Self {
            cfg,
            params: ctx.params_snapshot(),
            encoder,
            decoders,
            classifier,
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &SegNetConfig {
        &self.cfg
    }

    fn check_input(&self, x: &Tensor) -> CandleResult<()> {
        let (_, _, h, w) = x.dims4()?;
        if h < Self::MIN_SIZE || w < Self::MIN_SIZE {
            candle_core::bail!(
                "{}: SegNet needs height and width of at least {} (five 2x2 poolings), got {h}x{w}",
                self.cfg.name,
                Self::MIN_SIZE
            )
        }
        Ok(())
    }

    fn forward4(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        self.check_input(x)?;
        let mut y = x.clone();
        let mut pools = Vec::with_capacity(5);
        for i in 0..5 {
            y = self.encoder.block(i, &y, train)?;
            let (_, _, h, w) = y.dims4()?;
            let (p, idx) = max_pool2d_with_indices(&y, 2, 2)?;
            pools.push((idx, [h, w]));
            y = p;
        }
        let relu = Act::LeakyRelu(0.0);
        for (stage, (idx, size)) in self.decoders.iter().zip(pools.iter().rev()) {
            y = max_unpool2d(&y, idx, *size)?;
            for u in stage {
                y = u.bn.forward_act(&u.conv.forward(&y)?, train, Some(&relu))?;
            }
        }
        self.classifier.forward(&y)
    }
}

impl SegNetwork for SegNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput> {
        logits_only_2d(&self.cfg.name, "SegNet", self.cfg.in_chns, x, |x| {
            self.forward4(x, train)
        })
    }

    /// The five encoder blocks' outputs before their poolings (1, 1/2, ...
    /// 1/16 of the input size), finest first.
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

    // `dimension` is 2 (checked by `SegNetConfig::validate`)
    unet_meta!(custom_input_size);

    fn input_size(&self) -> crate::InputSize {
        crate::InputSize::pooled(2, 5)
    }
}

/// Builds a SegNet from its JSON configuration (registry entry `SegNet`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    let cfg: SegNetConfig = parse_net_config(
        config,
        &[
            ("feature_chns", KeyKind::UsizeList),
            ("block_convs", KeyKind::UsizeList),
        ],
    )?;
    Ok(Box::new(SegNet::new(cfg, vb)?))
}
