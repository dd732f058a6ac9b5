//! LightNet, JMedSeg's light network (github.com/THU-CVlab/JMedSeg,
//! `model/LightNet.py`); see [`LightNet`].

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::config::{parse_net_config, KeyKind};
use crate::error::{NetError, Result};
use crate::layers::{ConvTranspose, Ctx};
use crate::onenet::{check_multiple_of_4, common_checks, run_layers, ShiftGroupConv, DILATIONS};
use crate::unet::{fold_5d, logits_only_2d, unet_meta};
use crate::{NetOutput, ParamInfo, SegNetwork};

fn d_dimension() -> usize {
    2
}
fn d_group_width() -> usize {
    16
}

/// Configuration of [`LightNet`] (registry name `LightNet`).
///
/// `group_width = 16` is the reference's layout. The reference's own
/// default is `n_classes = 2` (and any number of input channels, summed to
/// one); here both `in_chns` and `class_num` are required.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LightNetConfig {
    /// Registry name (`net_type` in PyMIC files is accepted).
    #[serde(alias = "net_type")]
    pub name: String,
    /// Spatial dimensions; LightNet is 2D only, so only 2 is accepted (a 5D
    /// input is folded into the batch).
    #[serde(default = "d_dimension")]
    pub dimension: usize,
    /// Input channels; they are summed to one grey channel, as the
    /// reference does, so the parameter count does not depend on it.
    pub in_chns: usize,
    /// Output classes (`n_classes`, logit channels).
    pub class_num: usize,
    /// Channels per convolution group (16 in the reference); every channel
    /// count scales with it (the embedding has `4 w`, the `layers` `64 w`
    /// channels). Even, at least 2.
    #[serde(default = "d_group_width")]
    pub group_width: usize,
    /// Seed of the initial weights.
    #[serde(default)]
    pub seed: u64,
}

impl LightNetConfig {
    /// The reference's layout with `in_chns` inputs and `class_num` classes.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "LightNet".to_string(),
            dimension: d_dimension(),
            in_chns,
            class_num,
            group_width: d_group_width(),
            seed: 0,
        }
    }

    /// Checks the values and names the first bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        common_checks(
            self.dimension,
            self.in_chns,
            self.class_num,
            self.group_width,
        )
    }
}

/// LightNet from JMedSeg (github.com/THU-CVlab/JMedSeg,
/// `model/LightNet.py`, class `LightNet`), with its module and parameter
/// names; `w = group_width` (16), every shift `w / 2` (8):
///
/// * the input channels summed to one grey channel;
/// * `embed.0.conv`: 4x4 convolution of stride 4 (with bias) to `4 w`
///   channels; `embed.1..4`: shifted group convolutions
///   `ShiftGroupConv(w, 2w, g)` for `g = 4, 8, 16, 32` (3x3 grouped
///   convolution without bias, GroupNorm of `g` groups, ReLU, channels
///   rolled), to `64 w` channels;
/// * `layers.0..15`: `ShiftGroupConv(w, w, 64)` of dilations 1, 1, 1, 2, 2,
///   2, 2, 4 (x6), 8, 16, 32, chained;
/// * `fuse.0..6`: 1x1 shifted group convolutions; starting from the last
///   layer's output, `fused = fuse[i](fused * f[i])` for `i = 6 .. 0`, where
///   `f` are the outputs of layers 2, 6, 11, 12, 12, 13, 14 (a
///   multiplicative fusion);
/// * `decode.0`, `decode.1`: 1x1 shifted group convolutions to `32 w` and
///   `16 w` channels, `decode.2.conv`: a 4x4 stride-4 transposed
///   convolution to `class_num` logits.
///
/// Differences from the reference: `group_width` is configurable (default
/// equal to the reference). Weights start from PyTorch's default
/// initialisation.
///
/// Input sizes: height and width must be multiples of 4; others are
/// rejected with an error that says so. The network is 2D; a `[N, C, D, H,
/// W]` input has its depth folded into the batch.
///
/// The default configuration (2 classes) has 2,836,802 trainable
/// parameters, as the reference states. tests/lightnet.rs checks outputs
/// against a PyTorch transcription (tools/make_light_hrnet_dlink_fixtures.py).
/// [`SegNetwork::encode`] returns the eight `layers` outputs the head fuses
/// (layers 2, 6, 11, 12, 12, 13, 14, 15, all at 1/4 resolution); the
/// encoder is `embed` and `layers`.
pub struct LightNet {
    cfg: LightNetConfig,
    params: Vec<ParamInfo>,
    embed_conv: crate::layers::Conv,
    embed: Vec<ShiftGroupConv>,
    layers: Vec<ShiftGroupConv>,
    fuse: Vec<ShiftGroupConv>,
    decode: Vec<ShiftGroupConv>,
    out: ConvTranspose,
}

impl LightNet {
    /// Input height and width must be multiples of this.
    pub const SIZE_MULTIPLE: usize = 4;

    /// Builds the network, creating (or reading) its parameters in `vb`
    /// under the reference's names (`embed.0.conv.weight`,
    /// `layers.3.norm.norm.weight`, `decode.2.conv.bias`, ...).
    pub fn new(cfg: LightNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: LightNetConfig) -> CandleResult<Self> {
        let w = cfg.group_width;
        let s = w / 2;
        let e = ctx.pp("embed");
        let embed_conv =
            crate::layers::Conv::conv2d(&e.pp(0).pp("conv"), 1, 4 * w, 4, 4, 0, 1, 1, true)?;
        let mut embed = Vec::with_capacity(4);
        for (i, g) in [4, 8, 16, 32].into_iter().enumerate() {
            embed.push(ShiftGroupConv::new(&e.pp(i + 1), w, 2 * w, g, s, 1, 3)?);
        }
        let mut layers = Vec::with_capacity(16);
        for (i, d) in DILATIONS.into_iter().enumerate() {
            layers.push(ShiftGroupConv::new(
                &ctx.pp("layers").pp(i),
                w,
                w,
                64,
                s,
                d,
                3,
            )?);
        }
        let mut fuse = Vec::with_capacity(7);
        for i in 0..7 {
            fuse.push(ShiftGroupConv::new(
                &ctx.pp("fuse").pp(i),
                w,
                w,
                64,
                s,
                1,
                1,
            )?);
        }
        let d = ctx.pp("decode");
        let decode = vec![
            ShiftGroupConv::new(&d.pp(0), 2 * w, w, 32, s, 1, 1)?,
            ShiftGroupConv::new(&d.pp(1), 2 * w, w, 16, s, 1, 1)?,
        ];
        let out = ConvTranspose::new(&d.pp(2).pp("conv"), 2, 16 * w, cfg.class_num, 4)?;
        Ok(Self {
            cfg,
            params: ctx.params_snapshot(),
            embed_conv,
            embed,
            layers,
            fuse,
            decode,
            out,
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &LightNetConfig {
        &self.cfg
    }

    fn features(&self, x: &Tensor) -> CandleResult<Vec<Tensor>> {
        check_multiple_of_4(&self.cfg.name, "LightNet", x)?;
        let grey = x.sum_keepdim(1)?;
        let mut y = self.embed_conv.forward(&grey)?;
        for m in &self.embed {
            y = m.forward(&y)?;
        }
        run_layers(&self.layers, &y)
    }

    fn forward4(&self, x: &Tensor) -> CandleResult<Tensor> {
        let f = self.features(x)?;
        let mut fused = f[7].clone();
        for i in (0..7).rev() {
            fused = self.fuse[i].forward(&(fused * &f[i])?)?;
        }
        for d in &self.decode {
            fused = d.forward(&fused)?;
        }
        self.out.forward(&fused)
    }
}

impl SegNetwork for LightNet {
    fn forward_t(&self, x: &Tensor, _train: bool) -> CandleResult<NetOutput> {
        // no batch norm and no dropout: train and eval mode are the same
        logits_only_2d(&self.cfg.name, "LightNet", self.cfg.in_chns, x, |x| {
            self.forward4(x)
        })
    }

    // `dimension` is 2 (checked by `LightNetConfig::validate`)
    unet_meta!(custom_input_size);

    fn input_size(&self) -> crate::InputSize {
        crate::InputSize {
            multiple: vec![Self::SIZE_MULTIPLE; 2],
            minimum: vec![Self::SIZE_MULTIPLE; 2],
            maximum: None,
        }
    }

    fn encode(&self, x: &Tensor, _train: bool) -> CandleResult<Option<Vec<Tensor>>> {
        let x = fold_5d(x)?;
        Ok(Some(self.features(&x)?))
    }

    fn encoder_prefixes(&self) -> Vec<String> {
        vec!["embed.".into(), "layers.".into()]
    }
}

/// Builds a LightNet from its JSON configuration (registry entry
/// `LightNet`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    let cfg: LightNetConfig = parse_net_config(config, &[("group_width", KeyKind::Usize)])?;
    Ok(Box::new(LightNet::new(cfg, vb)?))
}
