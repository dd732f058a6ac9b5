//! HRNet for segmentation as in JMedSeg (github.com/THU-CVlab/JMedSeg,
//! `model/hrnet.py`); see [`HRNet`].

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::backbones::hrnet::{HRNetBackbone, HRNetSpec};
use crate::config::{parse_net_config, KeyKind};
use crate::error::{NetError, Result};
use crate::layers::{Conv, Ctx};
use crate::unet::{fold_5d, logits_only_2d, unet_meta};
use crate::{NetOutput, ParamInfo, SegNetwork};

fn d_dimension() -> usize {
    2
}
fn d_width() -> usize {
    16
}
fn d_stem() -> usize {
    64
}

/// Configuration of [`HRNet`] (registry name `HRNet`).
///
/// `width = 16` (JMedSeg's `c`) and `stem_chns = 64` are the reference's
/// defaults; the reference's `in_ch = 3`, `out_ch = 2` are required here as
/// `in_chns` and `class_num`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HRNetConfig {
    /// Registry name (`net_type` in PyMIC files is accepted).
    #[serde(alias = "net_type")]
    pub name: String,
    /// Spatial dimensions; HRNet is 2D only, so only 2 is accepted (a 5D
    /// input is folded into the batch).
    #[serde(default = "d_dimension")]
    pub dimension: usize,
    /// Input channels (`in_ch`).
    pub in_chns: usize,
    /// Output classes (`out_ch`, logit channels).
    pub class_num: usize,
    /// Width of the highest-resolution branch (JMedSeg's `c`, 16); the
    /// branches have `c`, `2c`, `4c`, `8c` channels.
    #[serde(default = "d_width")]
    pub width: usize,
    /// Channels of the stem and planes of the `layer1` bottlenecks (64).
    #[serde(default = "d_stem")]
    pub stem_chns: usize,
    /// Seed of the initial weights.
    #[serde(default)]
    pub seed: u64,
}

impl HRNetConfig {
    /// The reference's layout with `in_chns` inputs and `class_num` classes.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "HRNet".to_string(),
            dimension: d_dimension(),
            in_chns,
            class_num,
            width: d_width(),
            stem_chns: d_stem(),
            seed: 0,
        }
    }

    /// Checks the values and names the first bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.dimension != 2 {
            return Err(format!(
                "dimension must be 2 (HRNet is a 2D network), got {}",
                self.dimension
            ));
        }
        for (key, v) in [
            ("in_chns", self.in_chns),
            ("class_num", self.class_num),
            ("width", self.width),
            ("stem_chns", self.stem_chns),
        ] {
            if v == 0 {
                return Err(format!("{key} must be positive"));
            }
        }
        Ok(())
    }
}

/// HRNet (Wang et al., "Deep High-Resolution Representation Learning for
/// Visual Recognition", TPAMI 2020) as JMedSeg builds it for segmentation
/// (github.com/THU-CVlab/JMedSeg, `model/hrnet.py`, class `HRNet`), with its
/// module and parameter names: the [`HRNetBackbone`] (full-resolution stem,
/// `layer1` bottlenecks, transitions and stages 2 to 4 of `StageModule`s,
/// the last one fusing every branch into the highest-resolution one) and
/// `final_layer`, a 1x1 convolution with bias from `width` channels to
/// `class_num` logits at the input resolution.
///
/// Differences from the reference: the stem width (`stem_chns`) is
/// configurable (default equal to the reference); weights start from
/// PyTorch's default initialisation; BatchNorms follow PyTorch (momentum
/// 0.1, unbiased running variance).
///
/// Input sizes: height and width must be multiples of 8 (three stride-2
/// branches up-sampled back); others are rejected with an error that says
/// so. The network is 2D; a `[N, C, D, H, W]` input has its depth folded
/// into the batch.
///
/// The default configuration (3 inputs, 2 classes, `c = 16`) has 7,445,634
/// trainable parameters, as the reference built in PyTorch. tests/hrnet.rs
/// checks outputs (eval and train mode) and BatchNorm running statistics
/// against a PyTorch transcription (tools/make_light_hrnet_dlink_fixtures.py).
/// [`SegNetwork::encode`] returns the backbone's fused highest-resolution
/// map; the encoder is everything but `final_layer`.
pub struct HRNet {
    cfg: HRNetConfig,
    params: Vec<ParamInfo>,
    backbone: HRNetBackbone,
    final_layer: Conv,
}

impl HRNet {
    /// Builds the network, creating (or reading) its parameters in `vb`
    /// under the reference's names (`conv1.weight`,
    /// `stage3.2.fuse_layers.2.0.1.0.weight`, `final_layer.bias`, ...).
    pub fn new(cfg: HRNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: HRNetConfig) -> CandleResult<Self> {
        let backbone = HRNetBackbone::build(
            ctx,
            HRNetSpec {
                in_chns: cfg.in_chns,
                stem_chns: cfg.stem_chns,
                width: cfg.width,
                final_branches: 1,
            },
        )?;
        let final_layer = Conv::pointwise(&ctx.pp("final_layer"), 2, cfg.width, cfg.class_num)?;
        Ok(Self {
            cfg,
            params: ctx.params_snapshot(),
            backbone,
            final_layer,
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &HRNetConfig {
        &self.cfg
    }

    fn forward4(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let feats = self.backbone.features(x, train)?;
        self.final_layer.forward(&feats[0])
    }
}

impl SegNetwork for HRNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput> {
        logits_only_2d(&self.cfg.name, "HRNet", self.cfg.in_chns, x, |x| {
            self.forward4(x, train)
        })
    }

    // `dimension` is 2 (checked by `HRNetConfig::validate`)
    unet_meta!(custom_input_size);

    fn input_size(&self) -> crate::InputSize {
        crate::InputSize::pooled(2, 3)
    }

    fn encode(&self, x: &Tensor, train: bool) -> CandleResult<Option<Vec<Tensor>>> {
        let x = fold_5d(x)?;
        Ok(Some(self.backbone.features(&x, train)?))
    }

    fn encoder_prefixes(&self) -> Vec<String> {
        [
            "conv1.",
            "bn1.",
            "conv2.",
            "bn2.",
            "layer1.",
            "transition",
            "stage",
        ]
        .map(String::from)
        .to_vec()
    }
}

/// Builds an HRNet from its JSON configuration (registry entry `HRNet`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    let cfg: HRNetConfig = parse_net_config(
        config,
        &[("width", KeyKind::Usize), ("stem_chns", KeyKind::Usize)],
    )?;
    Ok(Box::new(HRNet::new(cfg, vb)?))
}
