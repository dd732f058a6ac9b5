//! OneNet, JMedSeg's very small network (github.com/THU-CVlab/JMedSeg,
//! `model/OneNet.py`), and the shifted group convolution it shares with
//! LightNet; see [`OneNet`].

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::backbones::resnet::relu;
use crate::config::{parse_net_config, KeyKind, NormType};
use crate::error::{NetError, Result};
use crate::layers::{cat_channels, Conv, ConvTranspose, Ctx, Dropout, Norm};
use crate::unet::{fold_5d, logits_only_2d, unet_meta};
use crate::{NetOutput, ParamInfo, SegNetwork};

fn d_dimension() -> usize {
    2
}
fn d_group_width() -> usize {
    16
}
fn d_dropout() -> f64 {
    0.1
}

/// Rolls the channels of `[N, C, ...]` by `shift` (PyTorch and Jittor
/// `x.roll(shifts=shift, dims=1)`): output channel `i` is input channel
/// `(i - shift) mod C`.
pub(crate) fn roll_channels(x: &Tensor, shift: usize) -> CandleResult<Tensor> {
    let c = x.dim(1)?;
    let s = shift % c;
    if s == 0 {
        return Ok(x.clone());
    }
    Tensor::cat(&[x.narrow(1, c - s, s)?, x.narrow(1, 0, c - s)?], 1)
}

/// JMedSeg's `ShiftGroupConv`: a grouped convolution without bias
/// (`conv`, kernel `k`, dilation `d`, "same" padding), GroupNorm with one
/// group per convolution group (`norm.norm`), ReLU, then the channels rolled
/// by `shift` so that the next grouped convolution mixes neighbouring groups.
pub(crate) struct ShiftGroupConv {
    conv: Conv,
    norm: Norm,
    shift: usize,
}

impl ShiftGroupConv {
    /// `groups` groups of `in_group` inputs and `out_group` outputs each.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &Ctx,
        in_group: usize,
        out_group: usize,
        groups: usize,
        shift: usize,
        dilation: usize,
        k: usize,
    ) -> CandleResult<Self> {
        let (cin, cout) = (in_group * groups, out_group * groups);
        Ok(Self {
            conv: Conv::conv2d(
                &ctx.pp("conv"),
                cin,
                cout,
                k,
                1,
                dilation * (k / 2),
                dilation,
                groups,
                false,
            )?,
            norm: Norm::new(
                &ctx.pp("norm").pp("norm"),
                NormType::GroupNorm,
                cout,
                groups,
            )?,
            shift,
        })
    }

    pub fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        let y = self
            .norm
            .forward_act(&self.conv.forward(x)?, false, Some(&relu()))?;
        roll_channels(&y, self.shift)
    }
}

/// Dilations of the 16 `layers` of OneNet and LightNet.
pub(crate) const DILATIONS: [usize; 16] = [1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 4, 4, 4, 8, 16, 32];

/// Indices of the `layers` outputs that OneNet concatenates and LightNet
/// fuses (`x_list[2:3] + x_list[6:7] + x_list[11:13] + x_list[-4:]`; layer
/// 12 appears twice).
pub(crate) const FUSED: [usize; 8] = [2, 6, 11, 12, 12, 13, 14, 15];

/// The 16 `layers` (`ShiftGroupConv(w, w, 64, shift, dilation)`), each fed
/// the previous one's output; returns the [`FUSED`] outputs.
pub(crate) fn run_layers(layers: &[ShiftGroupConv], x: &Tensor) -> CandleResult<Vec<Tensor>> {
    let mut outs: Vec<Tensor> = Vec::with_capacity(layers.len());
    for l in layers {
        let y = l.forward(outs.last().unwrap_or(x))?;
        outs.push(y);
    }
    Ok(FUSED.iter().map(|&i| outs[i].clone()).collect())
}

/// Configuration of [`OneNet`] (registry name `OneNet`).
///
/// `group_width = 16` and `dropout = 0.1` are the reference's layout. The
/// reference's own defaults are `n_channels = 3`, `n_classes = 2`; here
/// both are required.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneNetConfig {
    /// Registry name (`net_type` in PyMIC files is accepted).
    #[serde(alias = "net_type")]
    pub name: String,
    /// Spatial dimensions; OneNet is 2D only, so only 2 is accepted (a 5D
    /// input is folded into the batch).
    #[serde(default = "d_dimension")]
    pub dimension: usize,
    /// Input channels (`n_channels`).
    pub in_chns: usize,
    /// Output classes (`n_classes`, logit channels).
    pub class_num: usize,
    /// Channels per convolution group (16 in the reference); every channel
    /// count scales with it: the embedding has `8 w`, the `layers` `64 w`
    /// channels. Even, at least 2.
    #[serde(default = "d_group_width")]
    pub group_width: usize,
    /// Dropout rate before the output transposed convolution (0.1).
    #[serde(default = "d_dropout")]
    pub dropout: f64,
    /// Seed of the initial weights and of the dropout masks.
    #[serde(default)]
    pub seed: u64,
}

impl OneNetConfig {
    /// The reference's layout with `in_chns` inputs and `class_num` classes.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "OneNet".to_string(),
            dimension: d_dimension(),
            in_chns,
            class_num,
            group_width: d_group_width(),
            dropout: d_dropout(),
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
        )?;
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        Ok(())
    }
}

/// Checks shared by OneNet and LightNet.
pub(crate) fn common_checks(
    dimension: usize,
    in_chns: usize,
    class_num: usize,
    group_width: usize,
) -> std::result::Result<(), String> {
    if dimension != 2 {
        return Err(format!(
            "dimension must be 2 (a 2D network), got {dimension}"
        ));
    }
    if in_chns == 0 {
        return Err("in_chns must be positive".into());
    }
    if class_num == 0 {
        return Err("class_num must be positive".into());
    }
    if group_width < 2 || group_width % 2 != 0 {
        return Err(format!(
            "group_width must be even and at least 2 (the layers roll channels by half a group), got {group_width}"
        ));
    }
    Ok(())
}

/// Input height and width of OneNet and LightNet must be multiples of 4
/// (the 4x4 stride-4 embedding and output transposed convolution).
pub(crate) fn check_multiple_of_4(name: &str, what: &str, x: &Tensor) -> CandleResult<()> {
    let (_, _, h, w) = x.dims4()?;
    if h % 4 != 0 || w % 4 != 0 || h == 0 || w == 0 {
        candle_core::bail!(
            "{name}: {what} needs height and width that are multiples of 4 (its 4x4 stride-4 \
             embedding), got {h}x{w}; pad or crop the input"
        )
    }
    Ok(())
}

/// OneNet, the "very small network of similar accuracy" proposed with
/// JMedSeg (github.com/THU-CVlab/JMedSeg, `model/OneNet.py`, class
/// `OneNet`), with its module and parameter names:
///
/// * `embed.conv`: 4x4 convolution of stride 4 (with bias) to `8 w`
///   channels (`w = group_width`, 16: 128 channels);
/// * `map.0..2`: shifted group convolutions `ShiftGroupConv(w, 2w, g)` for
///   `g = 8, 16, 32` (3x3 grouped convolution without bias, GroupNorm of `g`
///   groups, ReLU, channels rolled by `w`), to `64 w` channels;
/// * `layers.0..15`: `ShiftGroupConv(w, w, 64)` of dilations 1, 1, 1, 2, 2,
///   2, 2, 4 (x6), 8, 16, 32, channels rolled by `w / 2`, chained;
/// * `fuse`: the outputs of layers 2, 6, 11, 12, 12, 13, 14, 15
///   concatenated (`512 w` channels), a 1x1 convolution without bias to
///   `16 w` channels (`fuse.0`), GroupNorm of 16 groups (`fuse.1.norm`),
///   ReLU, dropout (0.1) and a 4x4 stride-4 transposed convolution to
///   `class_num` logits (`fuse.4.conv`).
///
/// Differences from the reference: `group_width` and `dropout` are
/// configurable (defaults equal the reference). Weights start from PyTorch's
/// default initialisation.
///
/// Input sizes: height and width must be multiples of 4; others are
/// rejected with an error that says so. The network is 2D; a `[N, C, D, H,
/// W]` input has its depth folded into the batch.
///
/// The default configuration (3 inputs, 2 classes) has 4,765,826 trainable
/// parameters, as the reference states. tests/onenet.rs checks outputs
/// against a PyTorch transcription (tools/make_light_hrnet_dlink_fixtures.py).
/// [`SegNetwork::encode`] returns the eight `layers` outputs the head
/// fuses (all at 1/4 resolution); the encoder is `embed`, `map`, `layers`.
pub struct OneNet {
    cfg: OneNetConfig,
    params: Vec<ParamInfo>,
    embed: Conv,
    map: Vec<ShiftGroupConv>,
    layers: Vec<ShiftGroupConv>,
    fuse_conv: Conv,
    fuse_norm: Norm,
    dropout: Dropout,
    out: ConvTranspose,
}

impl OneNet {
    /// Input height and width must be multiples of this.
    pub const SIZE_MULTIPLE: usize = 4;

    /// Builds the network, creating (or reading) its parameters in `vb`
    /// under the reference's names (`embed.conv.weight`,
    /// `layers.3.norm.norm.weight`, `fuse.4.conv.bias`, ...).
    pub fn new(cfg: OneNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: OneNetConfig) -> CandleResult<Self> {
        let w = cfg.group_width;
        let embed = Conv::conv2d(
            &ctx.pp("embed").pp("conv"),
            cfg.in_chns,
            8 * w,
            4,
            4,
            0,
            1,
            1,
            true,
        )?;
        let mut map = Vec::with_capacity(3);
        for (i, g) in [8, 16, 32].into_iter().enumerate() {
            map.push(ShiftGroupConv::new(
                &ctx.pp("map").pp(i),
                w,
                2 * w,
                g,
                w,
                1,
                3,
            )?);
        }
        let mut layers = Vec::with_capacity(16);
        for (i, d) in DILATIONS.into_iter().enumerate() {
            layers.push(ShiftGroupConv::new(
                &ctx.pp("layers").pp(i),
                w,
                w,
                64,
                w / 2,
                d,
                3,
            )?);
        }
        let fuse = ctx.pp("fuse");
        let fuse_conv = Conv::conv2d(&fuse.pp(0), 8 * 64 * w, 16 * w, 1, 1, 0, 1, 1, false)?;
        let fuse_norm = Norm::new(&fuse.pp(1).pp("norm"), NormType::GroupNorm, 16 * w, 16)?;
        let dropout = Dropout::new(ctx, cfg.dropout);
        let out = ConvTranspose::new(&fuse.pp(4).pp("conv"), 2, 16 * w, cfg.class_num, 4)?;
        Ok(Self {
            cfg,
            params: ctx.params_snapshot(),
            embed,
            map,
            layers,
            fuse_conv,
            fuse_norm,
            dropout,
            out,
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &OneNetConfig {
        &self.cfg
    }

    fn features(&self, x: &Tensor) -> CandleResult<Vec<Tensor>> {
        check_multiple_of_4(&self.cfg.name, "OneNet", x)?;
        let mut y = self.embed.forward(x)?;
        for m in &self.map {
            y = m.forward(&y)?;
        }
        run_layers(&self.layers, &y)
    }

    fn forward4(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let feats = self.features(x)?;
        let refs: Vec<&Tensor> = feats.iter().collect();
        let y = self.fuse_conv.forward(&cat_channels(&refs)?)?;
        let y = self.fuse_norm.forward_act(&y, train, Some(&relu()))?;
        let y = self.dropout.forward(&y, train)?;
        self.out.forward(&y)
    }
}

impl SegNetwork for OneNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput> {
        logits_only_2d(&self.cfg.name, "OneNet", self.cfg.in_chns, x, |x| {
            self.forward4(x, train)
        })
    }

    // `dimension` is 2 (checked by `OneNetConfig::validate`)
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
        vec!["embed.".into(), "map.".into(), "layers.".into()]
    }
}

/// Builds a OneNet from its JSON configuration (registry entry `OneNet`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    let cfg: OneNetConfig = parse_net_config(
        config,
        &[("group_width", KeyKind::Usize), ("dropout", KeyKind::F64)],
    )?;
    Ok(Box::new(OneNet::new(cfg, vb)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn roll_channels_matches_torch_roll() {
        // torch.arange(10.).view(1, 5, 2).roll(2, dims=1)
        let x = Tensor::arange(0f32, 10.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 5, 2))
            .unwrap();
        let y = roll_channels(&x, 2).unwrap().flatten_all().unwrap();
        assert_eq!(
            y.to_vec1::<f32>().unwrap(),
            vec![6., 7., 8., 9., 0., 1., 2., 3., 4., 5.]
        );
        // shifts beyond C wrap around; 0 and C are the identity
        let y7 = roll_channels(&x, 7).unwrap();
        assert_eq!(
            y7.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            y.to_vec1::<f32>().unwrap()
        );
        for s in [0, 5] {
            let z = roll_channels(&x, s).unwrap();
            assert_eq!(
                z.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
    }
}
