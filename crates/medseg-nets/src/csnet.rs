//! CS-Net, the channel and spatial attention network (Mou et al., MICCAI
//! 2019), as JMedSeg's `model/CSNet.py` ports the authors' code
//! (github.com/iMED-Lab/CS-Net, `model/csnet.py`); see [`CSNet`].

use candle_core::{Result as CandleResult, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::config::{parse_net_config, KeyKind, NormType};
use crate::error::{NetError, Result};
use crate::layers::{cat_channels, record, Act, Conv, ConvTranspose, Ctx, Norm, ParamInit, Pool};
use crate::unet::{fold_5d, logits_only_2d, unet_meta};
use crate::{NetOutput, ParamInfo, SegNetwork};

fn d_dimension() -> usize {
    2
}
fn d_features() -> Vec<usize> {
    vec![32, 64, 128, 256, 512]
}

/// Configuration of [`CSNet`] (registry name `CSNet`, alias `CS-Net`).
///
/// The default widths are the reference's, `feature_chns = [32, 64, 128,
/// 256, 512]`. The reference takes `classes` and `channels` without
/// defaults (JMedSeg builds `CSNet(2, 3)`); here `in_chns` and `class_num`
/// are required.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CSNetConfig {
    /// Registry name (`net_type` in PyMIC files is accepted).
    #[serde(alias = "net_type")]
    pub name: String,
    /// Spatial dimensions; CS-Net is 2D only, so only 2 is accepted (a 5D
    /// input is folded into the batch).
    #[serde(default = "d_dimension")]
    pub dimension: usize,
    /// Input channels.
    pub in_chns: usize,
    /// Output classes (logit channels).
    pub class_num: usize,
    /// Widths of `enc_input`, `encoder1..encoder4` (five positive values;
    /// the last at least 8: the spatial attention's query and key have
    /// `feature_chns[4] / 8` channels).
    #[serde(default = "d_features")]
    pub feature_chns: Vec<usize>,
    /// Seed of the initial weights.
    #[serde(default)]
    pub seed: u64,
}

impl CSNetConfig {
    /// The reference's layout with `in_chns` inputs and `class_num` classes.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "CSNet".to_string(),
            dimension: d_dimension(),
            in_chns,
            class_num,
            feature_chns: d_features(),
            seed: 0,
        }
    }

    /// Checks the values and names the first bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.dimension != 2 {
            return Err(format!(
                "dimension must be 2 (CS-Net is a 2D network), got {}",
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
                "feature_chns must be 5 positive values (enc_input, encoder1..encoder4), got {:?}",
                self.feature_chns
            ));
        }
        if self.feature_chns[4] < 8 {
            return Err(format!(
                "feature_chns[4] must be at least 8 (the spatial attention divides it by 8), got {}",
                self.feature_chns[4]
            ));
        }
        Ok(())
    }
}

fn relu() -> Act {
    Act::LeakyRelu(0.0)
}

/// 2D convolution with a `kh x kw` kernel and `(ph, pw)` zero padding, with
/// bias (PyTorch `nn.Conv2d(cin, cout, (kh, kw), padding=(ph, pw))`), for
/// the spatial attention's 1x3 and 3x1 convolutions.
struct RectConv {
    w: Tensor,
    b: Tensor,
    pad: [usize; 2],
    name: String,
}

impl RectConv {
    fn new(
        ctx: &Ctx,
        cin: usize,
        cout: usize,
        k: [usize; 2],
        pad: [usize; 2],
    ) -> CandleResult<Self> {
        let bound = 1.0 / ((cin * k[0] * k[1]) as f32).sqrt();
        Ok(Self {
            w: ctx.param(
                &[cout, cin, k[0], k[1]],
                "weight",
                ParamInit::Uniform(bound),
            )?,
            b: ctx.param(&[cout], "bias", ParamInit::Uniform(bound))?,
            pad,
            name: ctx.prefix(),
        })
    }

    fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        let y = medseg_ops::conv2d(
            x,
            &self.w,
            Some(&self.b),
            &medseg_ops::Conv2dParams {
                stride: [1, 1],
                padding: self.pad,
                dilation: [1, 1],
                groups: 1,
            },
        )?;
        let (_, cin, kh, kw) = self.w.dims4()?;
        record(
            &self.name,
            "Conv2d",
            &y,
            self.w.elem_count() + self.b.elem_count(),
            y.elem_count() as u64 * (cin * kh * kw) as u64,
        );
        Ok(y)
    }
}

/// `ResEncoder`: `relu(bn2(conv2(relu(bn1(conv1(x))))) + conv1x1(x))`.
struct ResEncoder {
    conv1: Conv,
    bn1: Norm,
    conv2: Conv,
    bn2: Norm,
    conv1x1: Conv,
}

impl ResEncoder {
    fn new(ctx: &Ctx, cin: usize, cout: usize) -> CandleResult<Self> {
        Ok(Self {
            conv1: Conv::k3(&ctx.pp("conv1"), 2, cin, cout)?,
            bn1: Norm::new(&ctx.pp("bn1"), NormType::BatchNorm, cout, 1)?,
            conv2: Conv::k3(&ctx.pp("conv2"), 2, cout, cout)?,
            bn2: Norm::new(&ctx.pp("bn2"), NormType::BatchNorm, cout, 1)?,
            conv1x1: Conv::pointwise(&ctx.pp("conv1x1"), 2, cin, cout)?,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let residual = self.conv1x1.forward(x)?;
        let r = relu();
        let y = self
            .bn1
            .forward_act(&self.conv1.forward(x)?, train, Some(&r))?;
        let y = self
            .bn2
            .forward_act(&self.conv2.forward(&y)?, train, Some(&r))?;
        (y + residual)?.relu()
    }
}

/// `Decoder`: two 3x3 convolution + BatchNorm + ReLU units (`conv.0`,
/// `conv.1`, `conv.3`, `conv.4`).
struct DecoderBlock {
    conv1: Conv,
    bn1: Norm,
    conv2: Conv,
    bn2: Norm,
}

impl DecoderBlock {
    fn new(ctx: &Ctx, cin: usize, cout: usize) -> CandleResult<Self> {
        let c = ctx.pp("conv");
        Ok(Self {
            conv1: Conv::k3(&c.pp(0), 2, cin, cout)?,
            bn1: Norm::new(&c.pp(1), NormType::BatchNorm, cout, 1)?,
            conv2: Conv::k3(&c.pp(3), 2, cout, cout)?,
            bn2: Norm::new(&c.pp(4), NormType::BatchNorm, cout, 1)?,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let r = relu();
        let y = self
            .bn1
            .forward_act(&self.conv1.forward(x)?, train, Some(&r))?;
        self.bn2
            .forward_act(&self.conv2.forward(&y)?, train, Some(&r))
    }
}

/// The affinity attention (`affinity_attention`): the spatial attention
/// block `sab` plus the channel attention block `cab`.
struct AffinityAttention {
    query: RectConv,
    query_bn: Norm,
    key: RectConv,
    key_bn: Norm,
    value: Conv,
    sab_gamma: Tensor,
    cab_gamma: Tensor,
}

impl AffinityAttention {
    fn new(ctx: &Ctx, c: usize) -> CandleResult<Self> {
        let sab = ctx.pp("sab");
        let q = c / 8;
        Ok(Self {
            query: RectConv::new(&sab.pp("query").pp(0), c, q, [1, 3], [0, 1])?,
            query_bn: Norm::new(&sab.pp("query").pp(1), NormType::BatchNorm, q, 1)?,
            key: RectConv::new(&sab.pp("key").pp(0), c, q, [3, 1], [1, 0])?,
            key_bn: Norm::new(&sab.pp("key").pp(1), NormType::BatchNorm, q, 1)?,
            value: Conv::pointwise(&sab.pp("value"), 2, c, c)?,
            sab_gamma: sab.param(&[1], "gamma", ParamInit::Const(0.0))?,
            cab_gamma: ctx.pp("cab").param(&[1], "gamma", ParamInit::Const(0.0))?,
        })
    }

    /// `sab(x) + cab(x)`.
    fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let r = relu();
        // spatial: softmax over positions of query^T key, values weighted by it
        let q = self
            .query_bn
            .forward_act(&self.query.forward(x)?, train, Some(&r))?
            .reshape((b, (), h * w))?
            .transpose(1, 2)?
            .contiguous()?; // [B, HW, C/8]
        let k = self
            .key_bn
            .forward_act(&self.key.forward(x)?, train, Some(&r))?
            .reshape((b, (), h * w))?; // [B, C/8, HW]
        let affinity = candle_nn::ops::softmax(&q.matmul(&k)?, D::Minus1)?; // [B, HW, HW]
        let v = self.value.forward(x)?.reshape((b, c, h * w))?;
        let sab = v
            .matmul(&affinity.transpose(1, 2)?.contiguous()?)?
            .reshape((b, c, h, w))?;
        let sab = (sab.broadcast_mul(&self.sab_gamma)? + x)?;
        // channel: softmax over channels of (rowmax - x x^T)
        let xf = x.reshape((b, c, h * w))?;
        let aff = xf.matmul(&xf.transpose(1, 2)?.contiguous()?)?; // [B, C, C]
        let aff = aff.max_keepdim(D::Minus1)?.broadcast_sub(&aff)?;
        let aff = candle_nn::ops::softmax(&aff, D::Minus1)?;
        let cab = aff.matmul(&xf)?.reshape((b, c, h, w))?;
        let cab = (cab.broadcast_mul(&self.cab_gamma)? + x)?;
        sab + cab
    }
}

/// CS-Net (Mou, Zhao, Chen, Cheng, Gu, Liu & Liu, "CS-Net: Channel and
/// Spatial Attention Network for Curvilinear Structure Segmentation",
/// MICCAI 2019) as JMedSeg's `model/CSNet.py` ports the authors' code
/// (github.com/iMED-Lab/CS-Net, `model/csnet.py`, class `CSNet`), module
/// names kept so that its state dicts load by name:
///
/// * `enc_input`, `encoder1..encoder4`: residual encoders (`conv1`, `bn1`,
///   `conv2`, `bn2`: 3x3 convolution + BatchNorm + ReLU twice, plus a 1x1
///   convolution `conv1x1` of the input, then ReLU) of `[32, 64, 128, 256,
///   512]` channels, a 2x2 max pooling before each of `encoder1..4`;
/// * `affinity_attention`: the spatial attention block `sab` (1x3 `query`
///   and 3x1 `key` convolutions + BatchNorm + ReLU to a width of 1/8, a
///   softmax over the positions of their product, a 1x1 `value`
///   convolution weighted by it, scaled by `gamma` and added to the input)
///   plus the channel attention block `cab` (a softmax over channels of
///   `max - X X^T`, applied to `X`, scaled by its `gamma` and added to the
///   input);
/// * `attention_fuse`: a 1x1 convolution on the concatenation of the
///   bottleneck and the attention (JMedSeg; the authors' forward adds the
///   two and leaves this layer unused, holding its parameters all the same);
/// * `deconv4..deconv1` (2x2 transposed convolutions, stride 2) and
///   `decoder4..decoder1` (`conv.0/1`, `conv.3/4`: two 3x3 convolution +
///   BatchNorm + ReLU units) on the concatenation of the skip and the
///   upsampled map; `final`, a 1x1 convolution to `class_num` logits.
///
/// Differences from the reference: logits are returned (the reference
/// applies a sigmoid), weights start with PyTorch's default initialisation
/// (the reference draws Kaiming-normal weights, zero biases, and starts
/// both `gamma`s at zero as here), widths are configurable.
///
/// Input sizes: height and width must be multiples of 16 (four halvings
/// whose skips are concatenated back; [`SegNetwork::input_size`]). The
/// spatial attention builds an `(HW/256) x (HW/256)` matrix per image. The
/// network is 2D; a `[N, C, D, H, W]` input has its depth folded into the
/// batch.
///
/// The default configuration has 8,925,636 trainable parameters for
/// JMedSeg's `CSNet(2, 3)` (2 classes, 3 input channels); in general
/// 8,925,636 + 320 * (`in_chns` - 3) + 33 * (`class_num` - 2).
/// tests/csnet.rs checks the count, outputs (eval and train mode) and
/// BatchNorm running statistics against a PyTorch transcription
/// (tools/make_u2net_csnet_fixtures.py).
pub struct CSNet {
    cfg: CSNetConfig,
    params: Vec<ParamInfo>,
    /// `enc_input`, `encoder1..encoder4`.
    encoders: Vec<ResEncoder>,
    pool: Pool,
    attention: AffinityAttention,
    attention_fuse: Conv,
    /// `decoder4..decoder1`.
    decoders: Vec<DecoderBlock>,
    /// `deconv4..deconv1`.
    deconvs: Vec<ConvTranspose>,
    head: Conv,
}

impl CSNet {
    /// Input height and width must be multiples of this (four halvings).
    pub const SIZE_MULTIPLE: usize = 16;

    /// Builds the network, creating (or reading) its parameters in `vb`
    /// under the reference's names (`enc_input.conv1.weight`,
    /// `affinity_attention.sab.query.0.weight`,
    /// `affinity_attention.cab.gamma`, `decoder4.conv.4.running_var`,
    /// `deconv1.bias`, `final.weight`, ...).
    pub fn new(cfg: CSNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: CSNetConfig) -> CandleResult<Self> {
        let f = cfg.feature_chns.clone();
        let mut encoders = Vec::with_capacity(5);
        let mut cin = cfg.in_chns;
        for (i, &w) in f.iter().enumerate() {
            let name = if i == 0 {
                "enc_input".to_string()
            } else {
                format!("encoder{i}")
            };
            encoders.push(ResEncoder::new(&ctx.pp(name), cin, w)?);
            cin = w;
        }
        let pool = Pool::new(&ctx.pp("downsample"), 2);
        let attention = AffinityAttention::new(&ctx.pp("affinity_attention"), f[4])?;
        let attention_fuse = Conv::pointwise(&ctx.pp("attention_fuse"), 2, 2 * f[4], f[4])?;
        let mut decoders = Vec::with_capacity(4);
        for k in (1..=4).rev() {
            decoders.push(DecoderBlock::new(
                &ctx.pp(format!("decoder{k}")),
                2 * f[k - 1],
                f[k - 1],
            )?);
        }
        let mut deconvs = Vec::with_capacity(4);
        for k in (1..=4).rev() {
            deconvs.push(ConvTranspose::new(
                &ctx.pp(format!("deconv{k}")),
                2,
                f[k],
                f[k - 1],
                2,
            )?);
        }
        let head = Conv::pointwise(&ctx.pp("final"), 2, f[0], cfg.class_num)?;
        Ok(Self {
            cfg,
            params: ctx.params_snapshot(),
            encoders,
            pool,
            attention,
            attention_fuse,
            decoders,
            deconvs,
            head,
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &CSNetConfig {
        &self.cfg
    }

    fn check_input(&self, x: &Tensor) -> CandleResult<()> {
        let (_, _, h, w) = x.dims4()?;
        let m = Self::SIZE_MULTIPLE;
        if h % m != 0 || w % m != 0 || h == 0 || w == 0 {
            candle_core::bail!(
                "{}: CS-Net needs height and width that are multiples of {m} (four 2x2 \
                 poolings whose skips are concatenated back), got {h}x{w}; pad or crop the input",
                self.cfg.name
            )
        }
        Ok(())
    }

    /// `enc_input`, `encoder1..encoder4` outputs, finest first.
    fn encoder4(&self, x: &Tensor, train: bool) -> CandleResult<Vec<Tensor>> {
        self.check_input(x)?;
        let mut feats: Vec<Tensor> = Vec::with_capacity(5);
        for (i, e) in self.encoders.iter().enumerate() {
            let inp = match feats.last() {
                None => x.clone(),
                Some(prev) => self.pool.forward(prev)?,
            };
            debug_assert_eq!(feats.len(), i);
            feats.push(e.forward(&inp, train)?);
        }
        Ok(feats)
    }

    fn forward4(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let enc = self.encoder4(x, train)?;
        let bottom = &enc[4];
        let att = self.attention.forward(bottom, train)?;
        let mut y = self
            .attention_fuse
            .forward(&cat_channels(&[bottom, &att])?)?;
        for (j, (deconv, dec)) in self.deconvs.iter().zip(&self.decoders).enumerate() {
            let up = deconv.forward(&y)?;
            y = dec.forward(&cat_channels(&[&enc[3 - j], &up])?, train)?;
        }
        self.head.forward(&y)
    }
}

impl SegNetwork for CSNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput> {
        logits_only_2d(&self.cfg.name, "CS-Net", self.cfg.in_chns, x, |x| {
            self.forward4(x, train)
        })
    }

    /// The five encoders' outputs (1, 1/2, ... 1/16 of the input size),
    /// finest first; the last is the bottleneck before the attention.
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
        Ok(Some(self.encoder4(&fold_5d(x)?, train)?))
    }

    fn encoder_prefixes(&self) -> Vec<String> {
        [
            "enc_input.",
            "encoder1.",
            "encoder2.",
            "encoder3.",
            "encoder4.",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    // `dimension` is 2 (checked by `CSNetConfig::validate`)
    unet_meta!(custom_input_size);

    fn input_size(&self) -> crate::InputSize {
        crate::InputSize::pooled(2, 4)
    }
}

/// Builds a CS-Net from its JSON configuration (registry entries `CSNet`
/// and `CS-Net`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    let cfg: CSNetConfig = parse_net_config(config, &[("feature_chns", KeyKind::UsizeList)])?;
    Ok(Box::new(CSNet::new(cfg, vb)?))
}
