//! HarDNet-MSEG (Huang et al., 2021) in JMedSeg's layout (`HarDMSEG`); see
//! [`HarDNetMSEG`].

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::backbones::hardnet::{HarDNet, HarDNetSpec};
use crate::backbones::resnet::bn;
use crate::config::{parse_net_config, KeyKind};
use crate::error::{NetError, Result};
use crate::layers::{cat_channels, record, resize_linear, Ctx, Norm, ParamInit};
use crate::unet::{fold_5d, logits_only_2d, unet_meta};
use crate::{NetOutput, ParamInfo, SegNetwork};

fn d_dimension() -> usize {
    2
}
fn d_channel() -> usize {
    32
}
fn d_first() -> Vec<usize> {
    vec![32, 64]
}
fn d_block_chns() -> Vec<usize> {
    HarDNetSpec::hardnet68(1).block_chns
}
fn d_growth() -> Vec<usize> {
    HarDNetSpec::hardnet68(1).growth_rates
}
fn d_layers() -> Vec<usize> {
    HarDNetSpec::hardnet68(1).block_layers
}
fn d_grmul() -> f64 {
    1.7
}

/// Configuration of [`HarDNetMSEG`] (registry names `HarDNetMSEG`,
/// `HarDNet-MSEG`, `HarDMSEG`).
///
/// Defaults are JMedSeg's `HarDMSEG(channel=32)` with its HarDNet-68
/// backbone (`first_chns`, `block_chns`, `growth_rates`, `block_layers`,
/// `grmul` are HarDNet-68's table, configurable for small test networks;
/// the five blocks and their poolings after blocks 1, 3 and 4 are fixed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HarDNetMSEGConfig {
    /// Registry name (`net_type` in PyMIC files is accepted).
    #[serde(alias = "net_type")]
    pub name: String,
    /// Spatial dimensions; 2 only (a 5D input is folded into the batch).
    #[serde(default = "d_dimension")]
    pub dimension: usize,
    /// Input channels (the reference: 3).
    pub in_chns: usize,
    /// Output classes (the reference's `n_classes`, default 2).
    pub class_num: usize,
    /// Channels of the receptive-field blocks and the aggregation decoder.
    #[serde(default = "d_channel")]
    pub channel: usize,
    /// Channels of HarDNet's two stem convolutions.
    #[serde(default = "d_first")]
    pub first_chns: Vec<usize>,
    /// Channels of HarDNet's five transitions (the decoder taps the last
    /// three).
    #[serde(default = "d_block_chns")]
    pub block_chns: Vec<usize>,
    /// Growth rates of HarDNet's five blocks.
    #[serde(default = "d_growth")]
    pub growth_rates: Vec<usize>,
    /// Layers of HarDNet's five blocks.
    #[serde(default = "d_layers")]
    pub block_layers: Vec<usize>,
    /// Width multiplier of HarDNet's harmonic links.
    #[serde(default = "d_grmul")]
    pub grmul: f64,
    /// Seed of the initial weights.
    #[serde(default)]
    pub seed: u64,
}

impl HarDNetMSEGConfig {
    /// JMedSeg's default layout with `in_chns` inputs and `class_num` classes.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "HarDNetMSEG".to_string(),
            dimension: 2,
            in_chns,
            class_num,
            channel: d_channel(),
            first_chns: d_first(),
            block_chns: d_block_chns(),
            growth_rates: d_growth(),
            block_layers: d_layers(),
            grmul: d_grmul(),
            seed: 0,
        }
    }

    /// Checks the values and names the first bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.dimension != 2 {
            return Err(format!(
                "dimension must be 2 (HarDNet-MSEG is a 2D network), got {}",
                self.dimension
            ));
        }
        if self.in_chns == 0 {
            return Err("in_chns must be positive".into());
        }
        if self.class_num == 0 {
            return Err("class_num must be positive".into());
        }
        if self.channel == 0 {
            return Err("channel must be positive".into());
        }
        if self.first_chns.len() != 2 || self.first_chns.contains(&0) {
            return Err(format!(
                "first_chns must have 2 positive values, got {:?}",
                self.first_chns
            ));
        }
        for (key, v) in [
            ("block_chns", &self.block_chns),
            ("growth_rates", &self.growth_rates),
            ("block_layers", &self.block_layers),
        ] {
            if v.len() != 5 || v.contains(&0) {
                return Err(format!("{key} must have 5 positive values, got {v:?}"));
            }
        }
        if !(self.grmul.is_finite() && self.grmul > 0.0) {
            return Err(format!("grmul must be positive, got {}", self.grmul));
        }
        Ok(())
    }

    /// The backbone's shape.
    pub fn backbone(&self) -> HarDNetSpec {
        HarDNetSpec {
            in_chns: self.in_chns,
            first_chns: [self.first_chns[0], self.first_chns[1]],
            second_kernel: 3,
            block_chns: self.block_chns.clone(),
            growth_rates: self.growth_rates.clone(),
            block_layers: self.block_layers.clone(),
            grmul: self.grmul,
            downsample: vec![true, false, true, true, false],
            final_dropout: 0.0,
        }
    }
}

/// The reference's `BasicConv2d`: convolution without bias (`conv`; any
/// kernel `kh x kw`, padding and dilation) and BatchNorm (`bn`), no
/// activation (the reference creates a ReLU it never applies).
struct BasicConv2d {
    w: Tensor,
    pad: [usize; 2],
    dil: usize,
    name: String,
    bn: Norm,
}

impl BasicConv2d {
    fn new(
        ctx: &Ctx,
        cin: usize,
        cout: usize,
        k: [usize; 2],
        pad: [usize; 2],
        dil: usize,
    ) -> CandleResult<Self> {
        let c = ctx.pp("conv");
        let bound = 1.0 / ((cin * k[0] * k[1]) as f32).sqrt();
        let w = c.param(
            &[cout, cin, k[0], k[1]],
            "weight",
            ParamInit::Uniform(bound),
        )?;
        Ok(Self {
            w,
            pad,
            dil,
            name: c.prefix(),
            bn: bn(&ctx.pp("bn"), cout)?,
        })
    }

    /// Square kernel `k`, "same" padding `(k - 1) / 2 * dil`.
    fn square(ctx: &Ctx, cin: usize, cout: usize, k: usize, dil: usize) -> CandleResult<Self> {
        let p = (k - 1) / 2 * dil;
        Self::new(ctx, cin, cout, [k, k], [p, p], dil)
    }

    fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let y = medseg_ops::conv2d(
            x,
            &self.w,
            None,
            &medseg_ops::Conv2dParams {
                stride: [1, 1],
                padding: self.pad,
                dilation: [self.dil; 2],
                groups: 1,
            },
        )?;
        let (_, cin, kh, kw) = self.w.dims4()?;
        record(
            &self.name,
            "Conv2d",
            &y,
            self.w.elem_count(),
            (y.elem_count() * cin * kh * kw) as u64,
        );
        self.bn.forward(&y, train)
    }
}

/// A sequence of [`BasicConv2d`] (a reference `nn.Sequential`).
fn run(seq: &[BasicConv2d], x: &Tensor, train: bool) -> CandleResult<Tensor> {
    let mut y = x.clone();
    for c in seq {
        y = c.forward(&y, train)?;
    }
    Ok(y)
}

/// The reference's `RFB_modified`: four branches (`branch0`: 1x1;
/// `branch1..3`: 1x1, 1xk, kx1 and a 3x3 of dilation k for k = 3, 5, 7),
/// concatenated and fused by the 3x3 `conv_cat`, plus the 1x1 `conv_res`
/// shortcut, then ReLU.
struct Rfb {
    branches: Vec<Vec<BasicConv2d>>,
    conv_cat: BasicConv2d,
    conv_res: BasicConv2d,
}

impl Rfb {
    fn new(ctx: &Ctx, cin: usize, c: usize) -> CandleResult<Self> {
        let mut branches = vec![vec![BasicConv2d::square(
            &ctx.pp("branch0").pp(0),
            cin,
            c,
            1,
            1,
        )?]];
        for (i, k) in [3usize, 5, 7].into_iter().enumerate() {
            let b = ctx.pp(format!("branch{}", i + 1));
            branches.push(vec![
                BasicConv2d::square(&b.pp(0), cin, c, 1, 1)?,
                BasicConv2d::new(&b.pp(1), c, c, [1, k], [0, k / 2], 1)?,
                BasicConv2d::new(&b.pp(2), c, c, [k, 1], [k / 2, 0], 1)?,
                BasicConv2d::square(&b.pp(3), c, c, 3, k)?,
            ]);
        }
        Ok(Self {
            branches,
            conv_cat: BasicConv2d::square(&ctx.pp("conv_cat"), 4 * c, c, 3, 1)?,
            conv_res: BasicConv2d::square(&ctx.pp("conv_res"), cin, c, 1, 1)?,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let ys = self
            .branches
            .iter()
            .map(|b| run(b, x, train))
            .collect::<CandleResult<Vec<_>>>()?;
        let refs: Vec<&Tensor> = ys.iter().collect();
        let y = self.conv_cat.forward(&cat_channels(&refs)?, train)?;
        (y + self.conv_res.forward(x, train)?)?.relu()
    }
}

/// Bilinear x2 up-sampling (PyTorch `nn.Upsample(scale_factor=2,
/// mode="bilinear")`, align_corners False).
fn up2(x: &Tensor) -> CandleResult<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    resize_linear(x, &[2 * h, 2 * w], false)
}

/// The reference's `aggregation` (the partial decoder of PraNet / CPD).
struct Aggregation {
    up: Vec<BasicConv2d>,
    conv_concat2: BasicConv2d,
    conv_concat3: BasicConv2d,
    conv4: BasicConv2d,
    conv5_w: Tensor,
    conv5_b: Tensor,
    conv5_name: String,
}

impl Aggregation {
    fn new(ctx: &Ctx, c: usize, classes: usize) -> CandleResult<Self> {
        let mut up = Vec::with_capacity(5);
        for i in 1..=4 {
            up.push(BasicConv2d::square(
                &ctx.pp(format!("conv_upsample{i}")),
                c,
                c,
                3,
                1,
            )?);
        }
        up.push(BasicConv2d::square(
            &ctx.pp("conv_upsample5"),
            2 * c,
            2 * c,
            3,
            1,
        )?);
        let conv_concat2 = BasicConv2d::square(&ctx.pp("conv_concat2"), 2 * c, 2 * c, 3, 1)?;
        let conv_concat3 = BasicConv2d::square(&ctx.pp("conv_concat3"), 3 * c, 3 * c, 3, 1)?;
        let conv4 = BasicConv2d::square(&ctx.pp("conv4"), 3 * c, 3 * c, 3, 1)?;
        let p = ctx.pp("conv5");
        let bound = 1.0 / ((3 * c) as f32).sqrt();
        let conv5_w = p.param(&[classes, 3 * c, 1, 1], "weight", ParamInit::Uniform(bound))?;
        let conv5_b = p.param(&[classes], "bias", ParamInit::Uniform(bound))?;
        Ok(Self {
            up,
            conv_concat2,
            conv_concat3,
            conv4,
            conv5_w,
            conv5_b,
            conv5_name: p.prefix(),
        })
    }

    /// `x1` the coarsest (stride 32), `x3` the finest (stride 8) map.
    fn forward(&self, x1: &Tensor, x2: &Tensor, x3: &Tensor, t: bool) -> CandleResult<Tensor> {
        let u1 = up2(x1)?;
        let x2_1 = self.up[0].forward(&u1, t)?.mul(x2)?;
        let x3_1 = self.up[1]
            .forward(&up2(&u1)?, t)?
            .mul(&self.up[2].forward(&up2(x2)?, t)?)?
            .mul(x3)?;
        let x2_2 = cat_channels(&[&x2_1, &self.up[3].forward(&u1, t)?])?;
        let x2_2 = self.conv_concat2.forward(&x2_2, t)?;
        let x3_2 = cat_channels(&[&x3_1, &self.up[4].forward(&up2(&x2_2)?, t)?])?;
        let x3_2 = self.conv_concat3.forward(&x3_2, t)?;
        let y = self.conv4.forward(&x3_2, t)?;
        let out = medseg_ops::conv2d(
            &y,
            &self.conv5_w,
            Some(&self.conv5_b),
            &medseg_ops::Conv2dParams::default(),
        )?;
        let cin = self.conv5_w.dim(1)?;
        record(
            &self.conv5_name,
            "Conv2d",
            &out,
            self.conv5_w.elem_count() + self.conv5_b.elem_count(),
            (out.elem_count() * cin) as u64,
        );
        Ok(out)
    }
}

/// HarDNet-MSEG (Huang, Wu, Lin, "HarDNet-MSEG: A Simple Encoder-Decoder
/// Polyp Segmentation Neural Network that Achieves over 0.9 Mean Dice and 86
/// FPS", 2021) in JMedSeg's layout (github.com/THU-CVlab/JMedSeg,
/// model/HarDNet.py, class `HarDMSEG`, a port of the authors'
/// github.com/james128333/HarDNet-MSEG lib/HarD_MSEG.py), with its
/// parameter names:
///
/// * `hardnet.base.*`: a HarDNet-68 encoder ([`HarDNet`]);
/// * `rfb2_1`, `rfb3_1`, `rfb4_1`: modified receptive-field blocks on the
///   stride-8, 16 and 32 transitions (320, 640 and 1024 channels), each to
///   `channel` (32) channels;
/// * `agg1`: the dense aggregation decoder (bilinear x2 up-samplings,
///   3x3 convolutions with BatchNorm, element-wise products and
///   concatenations) ending in the 1x1 convolution `agg1.conv5` to
///   `class_num`, at stride 8;
/// * bilinear x8 up-sampling to the input size (align_corners False).
///
/// Differences from JMedSeg: `in_chns` inputs (JMedSeg: 3); the running
/// variance of BatchNorm is updated with the unbiased batch variance
/// (PyTorch; Jittor uses the biased one); the backbone's widths are
/// configurable; weights start random (no ImageNet weights). JMedSeg leaves
/// out the authors' unused reverse-attention layers, so does this network.
///
/// Input sizes: multiples of 32. The default configuration (3 inputs, 2
/// classes) has 17,423,934 trainable parameters (HarDNet-68 16,540,348),
/// as the PyTorch transcription of JMedSeg's model in
/// tools/make_hardnet_setr_fixtures.py; tests/hardnet_mseg.rs checks the
/// outputs and running statistics against it.
pub struct HarDNetMSEG {
    cfg: HarDNetMSEGConfig,
    params: Vec<ParamInfo>,
    hardnet: HarDNet,
    rfb: Vec<Rfb>,
    agg: Aggregation,
}

impl HarDNetMSEG {
    /// Builds the network, creating (or reading) its parameters in `vb`
    /// under JMedSeg's names (`hardnet.base.3.layers.0.conv.weight`,
    /// `rfb2_1.branch1.1.conv.weight`, `agg1.conv5.bias`, ...).
    pub fn new(cfg: HarDNetMSEGConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: HarDNetMSEGConfig) -> CandleResult<Self> {
        let c = cfg.channel;
        let ch = &cfg.block_chns;
        let rfb = vec![
            Rfb::new(&ctx.pp("rfb2_1"), ch[2], c)?,
            Rfb::new(&ctx.pp("rfb3_1"), ch[3], c)?,
            Rfb::new(&ctx.pp("rfb4_1"), ch[4], c)?,
        ];
        let agg = Aggregation::new(&ctx.pp("agg1"), c, cfg.class_num)?;
        let hardnet = HarDNet::build(&ctx.pp("hardnet"), cfg.backbone())?;
        Ok(Self {
            cfg,
            params: ctx.params_snapshot(),
            hardnet,
            rfb,
            agg,
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &HarDNetMSEGConfig {
        &self.cfg
    }

    fn check_input(&self, x: &Tensor) -> CandleResult<()> {
        let (_, _, h, w) = x.dims4()?;
        if h % 32 != 0 || w % 32 != 0 || h == 0 || w == 0 {
            candle_core::bail!(
                "{}: HarDNet-MSEG needs height and width that are multiples of 32, got {h}x{w}; \
                 pad or crop the input",
                self.cfg.name
            )
        }
        Ok(())
    }

    fn forward4(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        self.check_input(x)?;
        let (_, _, h, w) = x.dims4()?;
        let f = self.hardnet.features(x, train)?;
        let x2 = self.rfb[0].forward(&f[2], train)?;
        let x3 = self.rfb[1].forward(&f[3], train)?;
        let x4 = self.rfb[2].forward(&f[4], train)?;
        let y = self.agg.forward(&x4, &x3, &x2, train)?;
        resize_linear(&y, &[h, w], false)
    }
}

impl SegNetwork for HarDNetMSEG {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput> {
        logits_only_2d(&self.cfg.name, "HarDNet-MSEG", self.cfg.in_chns, x, |x| {
            self.forward4(x, train)
        })
    }

    unet_meta!(custom_input_size);

    fn input_size(&self) -> crate::InputSize {
        crate::InputSize::pooled(2, 5)
    }

    /// HarDNet's five transition outputs (strides 4, 8, 8, 16, 32). A 5D
    /// input is folded into the batch.
    fn encode(&self, x: &Tensor, train: bool) -> CandleResult<Option<Vec<Tensor>>> {
        let x = fold_5d(x)?;
        self.check_input(&x)?;
        Ok(Some(self.hardnet.features(&x, train)?))
    }

    fn encoder_prefixes(&self) -> Vec<String> {
        vec!["hardnet.".to_string()]
    }
}

/// Builds a HarDNet-MSEG from its JSON configuration (registry entry
/// `HarDNetMSEG`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    let cfg: HarDNetMSEGConfig = parse_net_config(config, KEYS)?;
    Ok(Box::new(HarDNetMSEG::new(cfg, vb)?))
}

const KEYS: &[(&str, KeyKind)] = &[
    ("channel", KeyKind::Usize),
    ("first_chns", KeyKind::UsizeList),
    ("block_chns", KeyKind::UsizeList),
    ("growth_rates", KeyKind::UsizeList),
    ("block_layers", KeyKind::UsizeList),
    ("grmul", KeyKind::F64),
];
