//! The UNet backbone (2D and 3D) after PyMIC's `pymic.net.cnn.unet`, with the
//! attention gates of AttentionUNet as an option of the decoder, and the
//! networks built from one encoder and several decoders: dual decoder
//! (CPS/DMSPS-style), MCNet, CCT and URPC.
//!
//! Parameter names equal PyMIC's (`encoder.in_conv.conv_conv.0.weight`,
//! `decoder.up1.conv1x1.weight`, ...), so PyMIC state dicts load by name.

use candle_core::{Result, Tensor, Var};

use crate::config::{AuxDecoderType, UNetConfig, UpMode};
use crate::layers::{
    bernoulli_mask, cat_channels, channel_mean, fit_to, l2_normalize_per_sample,
    log_softmax_channels, resize_linear, softmax_channels, spatial, uniform_noise, Act, Conv,
    ConvTranspose, Ctx, Dropout, Linear, Norm, Pool,
};
use crate::{fold_depth, unfold_depth, NetOutput, ParamInfo, SegNetwork};

/// The metadata methods of [`SegNetwork`] for structs with `cfg` and `params`.
macro_rules! unet_meta {
    () => {
        unet_meta!(custom_input_size);
        fn input_size(&self) -> $crate::InputSize {
            $crate::InputSize::pooled(self.cfg.dimension, self.cfg.feature_chns.len() - 1)
        }
    };
    (custom_input_size) => {
        fn config(&self) -> serde_json::Value {
            serde_json::to_value(&self.cfg).unwrap_or(serde_json::Value::Null)
        }
        fn dimension(&self) -> usize {
            self.cfg.dimension
        }
        fn in_chns(&self) -> usize {
            self.cfg.in_chns
        }
        fn class_num(&self) -> usize {
            self.cfg.class_num
        }
        fn parameters(&self) -> &[ParamInfo] {
            &self.params
        }
    };
}
pub(crate) use unet_meta;

macro_rules! unet_encoder {
    () => {
        fn encode(&self, x: &Tensor, train: bool) -> Result<Option<Vec<Tensor>>> {
            check_dims(&self.cfg, x)?;
            if self.cfg.dimension == 2 && x.rank() == 5 {
                let (x4, _, _) = fold_depth(x)?;
                return Ok(Some(self.encoder.forward(&x4, train)?));
            }
            Ok(Some(self.encoder.forward(x, train)?))
        }
        fn encoder_prefixes(&self) -> Vec<String> {
            vec!["encoder.".to_string()]
        }
    };
}

/// Two 3x3 convolutions, each followed by normalisation and LeakyReLU, with
/// dropout between them (PyMIC `ConvBlock`, module `conv_conv`).
pub(crate) struct ConvBlock {
    conv1: Conv,
    norm1: Norm,
    drop: Dropout,
    conv2: Conv,
    norm2: Norm,
    act1: Act,
    act2: Act,
    scse: Option<ScSE>,
}

impl ConvBlock {
    pub fn new(
        ctx: &Ctx,
        cfg: &UNetConfig,
        nd: usize,
        cin: usize,
        cout: usize,
        p: f64,
    ) -> Result<Self> {
        Self::with_act(ctx, cfg, nd, cin, cout, p, false)
    }

    /// `prelu`: PReLU activations (parameters `conv_conv.2.weight` and
    /// `conv_conv.6.weight`, as PyMIC's `ConvBlockND`) instead of LeakyReLU.
    pub fn with_act(
        ctx: &Ctx,
        cfg: &UNetConfig,
        nd: usize,
        cin: usize,
        cout: usize,
        p: f64,
        prelu: bool,
    ) -> Result<Self> {
        let c = ctx.pp("conv_conv");
        let conv1 = Conv::k3(&c.pp(0), nd, cin, cout)?;
        let norm1 = Norm::new(&c.pp(1), cfg.norm_type, cout, cfg.group_num)?;
        let act1 = if prelu {
            Act::prelu(&c.pp(2))?
        } else {
            Act::leaky()
        };
        let conv2 = Conv::k3(&c.pp(4), nd, cout, cout)?;
        let norm2 = Norm::new(&c.pp(5), cfg.norm_type, cout, cfg.group_num)?;
        let act2 = if prelu {
            Act::prelu(&c.pp(6))?
        } else {
            Act::leaky()
        };
        Ok(Self {
            conv1,
            norm1,
            drop: Dropout::new(&c, p),
            conv2,
            norm2,
            act1,
            act2,
            scse: if ctx.scse {
                Some(ScSE::new(&ctx.pp("scse"), nd, cout)?)
            } else {
                None
            },
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv1.forward(x)?;
        let y = self.norm1.forward_act(&y, train, Some(&self.act1))?;
        let y = self.drop.forward(&y, train)?;
        let y = self.conv2.forward(&y)?;
        let y = self.norm2.forward_act(&y, train, Some(&self.act2))?;
        match &self.scse {
            Some(s) => s.forward(&y),
            None => Ok(y),
        }
    }
}

/// Concurrent spatial and channel squeeze & excitation (Roy et al. 2018,
/// PyMIC `ChannelSpatialSELayer`): `max(x * cSE(x), x * sSE(x))`, with
/// `cSE` = sigmoid(fc2(relu(fc1(spatial mean)))) (reduction 2) and `sSE` =
/// sigmoid(1x1 convolution to one channel).
pub(crate) struct ScSE {
    fc1: Linear,
    fc2: Linear,
    sconv: Conv,
}

impl ScSE {
    pub fn new(ctx: &Ctx, nd: usize, c: usize) -> Result<Self> {
        if c < 2 {
            candle_core::bail!("scSE needs at least 2 channels, got {c}")
        }
        Ok(Self {
            fc1: Linear::new(&ctx.pp("cSE").pp("fc1"), c, c / 2)?,
            fc2: Linear::new(&ctx.pp("cSE").pp("fc2"), c / 2, c)?,
            sconv: Conv::pointwise(&ctx.pp("sSE").pp("conv"), nd, c, 1)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c) = (x.dim(0)?, x.dim(1)?);
        let squeeze = x.reshape((n, c, ()))?.mean(2)?;
        let s = self.fc1.forward(&squeeze)?.relu()?;
        let s = Act::Sigmoid.forward(&self.fc2.forward(&s)?)?;
        let mut shape = vec![n, c];
        shape.extend(std::iter::repeat_n(1, x.rank() - 2));
        let cse = x.broadcast_mul(&s.reshape(shape)?)?;
        let sse = x.broadcast_mul(&Act::Sigmoid.forward(&self.sconv.forward(x)?)?)?;
        cse.maximum(&sse)
    }
}

/// Max pooling then a [`ConvBlock`] (PyMIC `DownBlock`, module `maxpool_conv`).
/// With scSE (PyMIC `DownScSEBlock`) the recalibration `scse` follows the
/// convolutions.
struct DownBlock {
    pool: Pool,
    conv: ConvBlock,
    scse: Option<ScSE>,
}

impl DownBlock {
    fn new(ctx: &Ctx, cfg: &UNetConfig, cin: usize, cout: usize, p: f64) -> Result<Self> {
        let c = ctx.pp("maxpool_conv").with_scse(false);
        Ok(Self {
            pool: Pool::new(&c.pp(0), cfg.dimension),
            conv: ConvBlock::new(&c.pp(1), cfg, cfg.dimension, cin, cout, p)?,
            scse: if ctx.scse {
                Some(ScSE::new(&ctx.pp("scse"), cfg.dimension, cout)?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv.forward(&self.pool.forward(x)?, train)?;
        match &self.scse {
            Some(s) => s.forward(&y),
            None => Ok(y),
        }
    }
}

/// Additive attention gate of Attention U-Net (PyMIC `AttentionGateBlock`):
/// the skip feature is resized to the gating feature, both are projected by
/// 1x1 convolutions, summed, passed through ReLU, a 1x1 convolution to one
/// channel and a sigmoid; the map is resized back and multiplies the skip.
struct AttentionGate {
    conv1_l: Conv,
    conv1_h: Conv,
    conv2: Conv,
}

impl AttentionGate {
    fn new(ctx: &Ctx, nd: usize, chns_l: usize, chns_h: usize) -> Result<Self> {
        let mid = chns_l.min(chns_h) / 2;
        if mid == 0 {
            candle_core::bail!(
                "attention gate needs at least 2 channels per level, got {chns_l} and {chns_h}"
            )
        }
        Ok(Self {
            conv1_l: Conv::pointwise(&ctx.pp("conv1_l"), nd, chns_l, mid)?,
            conv1_h: Conv::pointwise(&ctx.pp("conv1_h"), nd, chns_h, mid)?,
            conv2: Conv::pointwise(&ctx.pp("conv2"), nd, mid, 1)?,
        })
    }

    fn forward(&self, x_l: &Tensor, x_h: &Tensor) -> Result<Tensor> {
        // PyTorch `interpolate(..., mode='bilinear')`, align_corners = False.
        let xl = resize_linear(x_l, &spatial(x_h), false)?;
        let f = (self.conv1_l.forward(&xl)? + self.conv1_h.forward(x_h)?)?.relu()?;
        let att = Act::Sigmoid.forward(&self.conv2.forward(&f)?)?;
        let att = resize_linear(&att, &spatial(x_l), false)?;
        x_l.broadcast_mul(&att)
    }
}

enum Up {
    Trans(ConvTranspose),
    Interp(Conv, crate::layers::Upsample),
}

/// Up-sampling, concatenation with the skip feature and a [`ConvBlock`]
/// (PyMIC `UpBlock` / `UpBlockWithAttention`).
pub(crate) struct UpBlock {
    up: Up,
    conv: ConvBlock,
    ag: Option<AttentionGate>,
}

impl UpBlock {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ctx: &Ctx,
        cfg: &UNetConfig,
        up_mode: UpMode,
        c1: usize,
        c2: usize,
        cout: usize,
        p: f64,
        attention: bool,
    ) -> Result<Self> {
        Self::general(
            ctx,
            cfg,
            cfg.dimension,
            up_mode,
            c1,
            c2,
            cout,
            p,
            attention,
            false,
        )
    }

    /// Any spatial dimension and activation (UNet2D5 mixes 2D and 3D).
    #[allow(clippy::too_many_arguments)]
    pub fn general(
        ctx: &Ctx,
        cfg: &UNetConfig,
        nd: usize,
        up_mode: UpMode,
        c1: usize,
        c2: usize,
        cout: usize,
        p: f64,
        attention: bool,
        prelu: bool,
    ) -> Result<Self> {
        let up = match up_mode {
            UpMode::TransConv => Up::Trans(ConvTranspose::new(&ctx.pp("up"), nd, c1, c2, 2)?),
            m => Up::Interp(
                Conv::pointwise(&ctx.pp("conv1x1"), nd, c1, c2)?,
                crate::layers::Upsample::new(&ctx.pp("up"), m),
            ),
        };
        let ag = if attention {
            Some(AttentionGate::new(&ctx.pp("ag"), nd, c2, c1)?)
        } else {
            None
        };
        Ok(Self {
            up,
            conv: ConvBlock::with_act(&ctx.pp("conv"), cfg, nd, c2 * 2, cout, p, prelu)?,
            ag,
        })
    }

    /// `x1`: coarse decoder feature; `x2`: skip feature from the encoder.
    pub fn forward(&self, x1: &Tensor, x2: &Tensor, train: bool) -> Result<Tensor> {
        let size = spatial(x2);
        let skip = match &self.ag {
            Some(ag) => ag.forward(x2, x1)?,
            None => x2.clone(),
        };
        let up = match &self.up {
            // kernel-2 stride-2 transposed convolution doubles the size; odd
            // skip sizes get one zero row/column/slice at the end.
            Up::Trans(t) => fit_to(&t.forward(x1)?, &size)?,
            Up::Interp(c, u) => u.forward(&c.forward(x1)?, &size)?,
        };
        self.conv.forward(&cat_channels(&[&skip, &up])?, train)
    }
}

/// UNet encoder: `in_conv` then `down1..down{L-1}`.
pub(crate) struct Encoder {
    in_conv: ConvBlock,
    downs: Vec<DownBlock>,
}

impl Encoder {
    pub fn new(ctx: &Ctx, cfg: &UNetConfig) -> Result<Self> {
        let ft = &cfg.feature_chns;
        let in_conv = ConvBlock::new(
            &ctx.pp("in_conv"),
            cfg,
            cfg.dimension,
            cfg.in_chns,
            ft[0],
            cfg.dropout[0],
        )?;
        let downs = (1..ft.len())
            .map(|i| {
                DownBlock::new(
                    &ctx.pp(format!("down{i}")),
                    cfg,
                    ft[i - 1],
                    ft[i],
                    cfg.dropout[i],
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { in_conv, downs })
    }

    /// Feature maps of every level, finest first.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let mut feats = vec![self.in_conv.forward(x, train)?];
        for d in &self.downs {
            let next = d.forward(feats.last().expect("non-empty"), train)?;
            feats.push(next);
        }
        Ok(feats)
    }
}

/// What a decoder returns.
pub(crate) struct DecoderOut {
    pub logits: Tensor,
    /// Deep-supervision logits for levels 1.. (own resolution), if enabled.
    pub deep: Vec<Tensor>,
    /// Decoder features per level, index = level (the deepest level holds
    /// the encoder's bottleneck feature).
    pub levels: Vec<Tensor>,
}

/// UNet decoder: `up{4-l}` for each level `l` below the bottleneck (PyMIC's
/// names for 5 levels: up1 .. up4), `out_conv`, and with deep supervision
/// `out_conv{l}` for levels 1 ..= L-2.
pub(crate) struct Decoder {
    ups: Vec<UpBlock>, // ordered from the deepest to the finest
    out_conv: Conv,
    deep_convs: Vec<Conv>, // level 1, 2, ...
}

impl Decoder {
    pub fn new(
        ctx: &Ctx,
        cfg: &UNetConfig,
        up_mode: UpMode,
        attention: bool,
        heads: bool,
    ) -> Result<Self> {
        let ft = &cfg.feature_chns;
        let l = ft.len();
        let mut ups = Vec::new();
        for lev in (0..l - 1).rev() {
            ups.push(UpBlock::new(
                &ctx.pp(format!("up{}", 4 - lev)),
                cfg,
                up_mode,
                ft[lev + 1],
                ft[lev],
                ft[lev],
                cfg.dropout[lev],
                attention,
            )?);
        }
        let nd = cfg.dimension;
        let out_conv = Conv::pointwise(&ctx.pp("out_conv"), nd, ft[0], cfg.class_num)?;
        let deep_convs = if heads {
            (1..l.saturating_sub(1))
                .map(|lev| {
                    Conv::pointwise(
                        &ctx.pp(format!("out_conv{lev}")),
                        nd,
                        ft[lev],
                        cfg.class_num,
                    )
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        Ok(Self {
            ups,
            out_conv,
            deep_convs,
        })
    }

    pub fn forward(&self, feats: &[Tensor], train: bool) -> Result<DecoderOut> {
        let l = feats.len();
        let mut levels: Vec<Option<Tensor>> = vec![None; l];
        levels[l - 1] = Some(feats[l - 1].clone());
        let mut x = feats[l - 1].clone();
        for (k, up) in self.ups.iter().enumerate() {
            let lev = l - 2 - k;
            x = up.forward(&x, &feats[lev], train)?;
            levels[lev] = Some(x.clone());
        }
        let levels: Vec<Tensor> = levels.into_iter().flatten().collect();
        let logits = self.out_conv.forward(&levels[0])?;
        let deep = self
            .deep_convs
            .iter()
            .enumerate()
            .map(|(i, c)| c.forward(&levels[i + 1]))
            .collect::<Result<Vec<_>>>()?;
        Ok(DecoderOut {
            logits,
            deep,
            levels,
        })
    }

    /// Applies the deep-supervision heads to given decoder features.
    pub fn heads(&self) -> &[Conv] {
        &self.deep_convs
    }
}

fn check_dims(cfg: &UNetConfig, x: &Tensor) -> Result<()> {
    let r = x.rank();
    let ok = match cfg.dimension {
        2 => r == 4 || r == 5,
        _ => r == 5,
    };
    if !ok {
        candle_core::bail!(
            "{}: a {}D network takes [N, C, H, W]{} input, got shape {:?}",
            cfg.name,
            cfg.dimension,
            if cfg.dimension == 2 {
                " or [N, C, D, H, W]"
            } else {
                ""
            },
            x.dims()
        )
    }
    if x.dim(1)? != cfg.in_chns {
        candle_core::bail!(
            "{}: expected {} input channels, got shape {:?}",
            cfg.name,
            cfg.in_chns,
            x.dims()
        )
    }
    Ok(())
}

/// Runs `f` on the input with depth folded into the batch for 2D networks
/// given 5D tensors, and unfolds every output.
pub(crate) fn with_folding(
    cfg: &UNetConfig,
    x: &Tensor,
    f: impl FnOnce(&Tensor) -> Result<NetOutput>,
) -> Result<NetOutput> {
    check_dims(cfg, x)?;
    if cfg.dimension == 2 && x.rank() == 5 {
        let (x4, n, d) = fold_depth(x)?;
        let out = f(&x4)?;
        let un = |t: &Tensor| unfold_depth(t, n, d);
        Ok(NetOutput {
            logits: un(&out.logits)?,
            deep: out.deep.iter().map(un).collect::<Result<_>>()?,
            aux: out.aux.iter().map(un).collect::<Result<_>>()?,
        })
    } else {
        f(x)
    }
}

/// The output of a network with logits only (no deep or auxiliary outputs):
/// `f` runs on `x`, or, when `fold` is set and `x` is `[N, C, D, H, W]`, on
/// `x` with depth folded into the batch, its logits unfolded again.
pub(crate) fn logits_only(
    x: &Tensor,
    fold: bool,
    f: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<NetOutput> {
    let logits = if fold && x.rank() == 5 {
        let (x4, n, d) = fold_depth(x)?;
        unfold_depth(&f(&x4)?, n, d)?
    } else {
        f(x)?
    };
    Ok(NetOutput {
        logits,
        deep: Vec::new(),
        aux: Vec::new(),
    })
}

/// [`logits_only`] for a 2D-only network named `name`: `x` must be
/// `[N, in_chns, H, W]` or `[N, in_chns, D, H, W]` (the error for another
/// rank says that `what` takes those), and a 5D `x` is folded.
pub(crate) fn logits_only_2d(
    name: &str,
    what: &str,
    in_chns: usize,
    x: &Tensor,
    f: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<NetOutput> {
    if !matches!(x.rank(), 4 | 5) {
        candle_core::bail!(
            "{name}: {what} takes [N, C, H, W] or [N, C, D, H, W] input, got shape {:?}",
            x.dims()
        )
    }
    if x.dim(1)? != in_chns {
        candle_core::bail!(
            "{name}: expected {in_chns} input channels, got shape {:?}",
            x.dims()
        )
    }
    logits_only(x, true, f)
}

/// For a 2D network's encoder: a 5D `[N, C, D, H, W]` input with its depth
/// folded into the batch, a 4D one as it is.
pub(crate) fn fold_5d(x: &Tensor) -> Result<Tensor> {
    if x.rank() == 5 {
        Ok(crate::fold_depth(x)?.0)
    } else {
        Ok(x.clone())
    }
}

/// UNet (2D or 3D) and AttentionUNet: PyMIC's `UNet` / `AttentionUNet`.
pub struct UNet {
    cfg: UNetConfig,
    params: Vec<ParamInfo>,
    encoder: Encoder,
    decoder: Decoder,
}

impl UNet {
    /// Builds the network; `attention` adds attention gates on the skips;
    /// a context with `scse` set gives PyMIC's UNet_ScSE.
    pub(crate) fn build(ctx: &Ctx, cfg: UNetConfig, attention: bool) -> Result<Self> {
        let encoder = Encoder::new(&ctx.pp("encoder"), &cfg)?;
        let decoder = Decoder::new(
            &ctx.pp("decoder"),
            &cfg,
            cfg.up_mode,
            attention,
            cfg.multiscale_pred,
        )?;
        let mut net = Self {
            params: Vec::new(),
            cfg,
            encoder,
            decoder,
        };
        net.params = ctx.params_snapshot();
        Ok(net)
    }
}

impl SegNetwork for UNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<NetOutput> {
        with_folding(&self.cfg, x, |x| {
            let f = self.encoder.forward(x, train)?;
            let d = self.decoder.forward(&f, train)?;
            Ok(NetOutput {
                logits: d.logits,
                deep: d.deep,
                aux: Vec::new(),
            })
        })
    }

    unet_meta!();
    unet_encoder!();
}

/// Encoder with two decoders (PyMIC `DBNet`, used by DMSPS and
/// cross-pseudo-supervision style learners): `main_decoder` decodes the
/// features, `aux_decoder` decodes them after channel dropout (p = 0.5,
/// training only). `aux[0]` holds the auxiliary prediction (also in eval).
pub struct DualDecoderUNet {
    cfg: UNetConfig,
    params: Vec<ParamInfo>,
    encoder: Encoder,
    main_decoder: Decoder,
    aux_decoder: Decoder,
    drop_rng: std::sync::Arc<std::sync::Mutex<rand_chacha::ChaCha8Rng>>,
}

impl DualDecoderUNet {
    pub(crate) fn build(ctx: &Ctx, cfg: UNetConfig) -> Result<Self> {
        let mut net = Self {
            params: Vec::new(),
            encoder: Encoder::new(&ctx.pp("encoder"), &cfg)?,
            main_decoder: Decoder::new(
                &ctx.pp("main_decoder"),
                &cfg,
                cfg.up_mode,
                false,
                cfg.multiscale_pred,
            )?,
            aux_decoder: Decoder::new(
                &ctx.pp("aux_decoder"),
                &cfg,
                cfg.up_mode,
                false,
                cfg.multiscale_pred,
            )?,
            drop_rng: ctx.drop_rng.clone(),
            cfg,
        };
        net.params = ctx.params_snapshot();
        Ok(net)
    }
}

/// Channel-wise dropout (`dropout2d`/`dropout3d`): whole feature maps are
/// zeroed with probability `p`, the rest scaled by `1 / (1 - p)`.
fn channel_dropout(
    rng: &std::sync::Mutex<rand_chacha::ChaCha8Rng>,
    x: &Tensor,
    p: f64,
) -> Result<Tensor> {
    let mut shape = x.dims()[..2].to_vec();
    shape.extend(std::iter::repeat_n(1, x.rank() - 2));
    let m = bernoulli_mask(rng, &shape, 1.0 - p, x.device())?;
    x.broadcast_mul(&m)
}

impl SegNetwork for DualDecoderUNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<NetOutput> {
        with_folding(&self.cfg, x, |x| {
            let f = self.encoder.forward(x, train)?;
            let main = self.main_decoder.forward(&f, train)?;
            let aux_in = if train {
                f.iter()
                    .map(|t| channel_dropout(&self.drop_rng, t, 0.5))
                    .collect::<Result<Vec<_>>>()?
            } else {
                f
            };
            let aux = self.aux_decoder.forward(&aux_in, train)?;
            Ok(NetOutput {
                logits: main.logits,
                deep: main.deep,
                aux: vec![aux.logits],
            })
        })
    }

    unet_meta!();
    unet_encoder!();
}

/// MCNet (mutual consistency): one encoder and three decoders that differ
/// only in up-sampling (`decoder1` transposed convolution, `decoder2`
/// nearest, `decoder3` bilinear). Eval returns `decoder1` alone; training
/// also returns the other two in `aux`.
pub struct MCNet {
    cfg: UNetConfig,
    params: Vec<ParamInfo>,
    encoder: Encoder,
    decoders: [Decoder; 3],
}

impl MCNet {
    pub(crate) fn build(ctx: &Ctx, cfg: UNetConfig) -> Result<Self> {
        let mk = |i: usize, m: UpMode| {
            Decoder::new(&ctx.pp(format!("decoder{i}")), &cfg, m, false, false)
        };
        let mut net = Self {
            params: Vec::new(),
            encoder: Encoder::new(&ctx.pp("encoder"), &cfg)?,
            decoders: [
                mk(1, UpMode::TransConv)?,
                mk(2, UpMode::Nearest)?,
                mk(3, UpMode::Linear)?,
            ],
            cfg,
        };
        net.params = ctx.params_snapshot();
        Ok(net)
    }
}

impl SegNetwork for MCNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<NetOutput> {
        with_folding(&self.cfg, x, |x| {
            let f = self.encoder.forward(x, train)?;
            let main = self.decoders[0].forward(&f, train)?;
            let aux = if train {
                vec![
                    self.decoders[1].forward(&f, train)?.logits,
                    self.decoders[2].forward(&f, train)?.logits,
                ]
            } else {
                Vec::new()
            };
            Ok(NetOutput {
                logits: main.logits,
                deep: Vec::new(),
                aux,
            })
        })
    }

    unet_meta!();
    unet_encoder!();
}

/// Feature drop of CCT: zero the region whose channel-mean activation is
/// above `u * max` (u uniform in [0.7, 0.9], one draw per call).
fn feature_drop(rng: &std::sync::Mutex<rand_chacha::ChaCha8Rng>, x: &Tensor) -> Result<Tensor> {
    use rand::Rng;
    let u = {
        let mut r = rng
            .lock()
            .map_err(|_| candle_core::Error::Msg("generator poisoned".into()))?;
        r.random_range(0.7..0.9)
    };
    let att = channel_mean(x)?; // [N, 1, ...]
    let n = x.dim(0)?;
    let maxv = att.reshape((n, ()))?.max_keepdim(1)?; // [N, 1]
    let mut shape = vec![n];
    shape.extend(std::iter::repeat_n(1, x.rank() - 1));
    let thr = (maxv.reshape(shape)? * u)?;
    let mask = att.broadcast_lt(&thr)?.to_dtype(x.dtype())?;
    x.broadcast_mul(&mask)
}

/// CCT (cross-consistency training): a UNet whose encoder feeds the main
/// `decoder` and auxiliary decoders `aux_decoders.{i}.decoder`, each seeing
/// a perturbed bottleneck feature (channel dropout, feature drop,
/// multiplicative uniform noise, or a virtual adversarial perturbation
/// found by `vat_it` power iterations). Auxiliary outputs are returned in
/// `aux` in training mode only.
pub struct CCTNet {
    cfg: UNetConfig,
    params: Vec<ParamInfo>,
    encoder: Encoder,
    decoder: Decoder,
    aux: Vec<(AuxDecoderType, Decoder)>,
    rng: std::sync::Arc<std::sync::Mutex<rand_chacha::ChaCha8Rng>>,
}

impl CCTNet {
    pub(crate) fn build(ctx: &Ctx, cfg: UNetConfig) -> Result<Self> {
        let aux = cfg
            .aux_decoders()
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let c = ctx.pp("aux_decoders").pp(i).pp("decoder");
                Ok((t, Decoder::new(&c, &cfg, cfg.up_mode, false, false)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut net = Self {
            params: Vec::new(),
            encoder: Encoder::new(&ctx.pp("encoder"), &cfg)?,
            decoder: Decoder::new(&ctx.pp("decoder"), &cfg, cfg.up_mode, false, false)?,
            aux,
            rng: ctx.drop_rng.clone(),
            cfg,
        };
        net.params = ctx.params_snapshot();
        Ok(net)
    }

    fn vat(&self, dec: &Decoder, f: &[Tensor], train: bool) -> Result<Tensor> {
        let (it, xi, eps) = self.cfg.vat_params();
        let last = f.len() - 1;
        let det: Vec<Tensor> = f.iter().map(|t| t.detach()).collect();
        let xe = det[last].clone();
        let pred = softmax_channels(&dec.forward(&det, train)?.logits)?.detach();
        let n = xe.dim(0)? as f64;
        let mut d =
            l2_normalize_per_sample(&(uniform_noise(&self.rng, xe.dims(), 0.5, xe.device())?))?;
        for _ in 0..it {
            let dv = Var::from_tensor(&d.detach())?;
            let mut inp = det.clone();
            inp[last] = (&xe + (dv.as_tensor() * xi)?)?;
            let logp_hat = log_softmax_channels(&dec.forward(&inp, train)?.logits)?;
            // KL(pred || softmax(pred_hat)), batch mean
            let kl = ((&pred * (pred.clamp(1e-12, 1.0)?.log()? - logp_hat)?)?.sum_all()? / n)?;
            let grads = kl.backward()?;
            let g = match grads.get(dv.as_tensor()) {
                Some(g) => g.clone(),
                None => dv.as_tensor().zeros_like()?,
            };
            // In f32 a tiny `xi` can make the gradient vanish exactly; keep
            // the previous (random) direction then.
            if g.abs()?.max_all()?.to_scalar::<f32>()? > 0.0 {
                d = l2_normalize_per_sample(&g)?;
            }
        }
        &f[last] + (d * eps)?
    }
}

impl SegNetwork for CCTNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<NetOutput> {
        with_folding(&self.cfg, x, |x| {
            let f = self.encoder.forward(x, train)?;
            let main = self.decoder.forward(&f, train)?;
            let mut aux = Vec::new();
            if train {
                let last = f.len() - 1;
                for (t, dec) in &self.aux {
                    let mut g = f.clone();
                    g[last] = match t {
                        AuxDecoderType::DropOut => channel_dropout(&self.rng, &f[last], 0.5)?,
                        AuxDecoderType::FeatureDrop => feature_drop(&self.rng, &f[last])?,
                        AuxDecoderType::FeatureNoise => {
                            let mut shape = f[last].dims().to_vec();
                            shape[0] = 1;
                            let noise = uniform_noise(
                                &self.rng,
                                &shape,
                                self.cfg.uniform_range(),
                                f[last].device(),
                            )?;
                            (&f[last] + f[last].broadcast_mul(&noise)?)?
                        }
                        AuxDecoderType::Vat => self.vat(dec, &f, train)?,
                    };
                    aux.push(dec.forward(&g, train)?.logits);
                }
            }
            Ok(NetOutput {
                logits: main.logits,
                deep: Vec::new(),
                aux,
            })
        })
    }

    unet_meta!();
    unet_encoder!();
}

/// URPC (uncertainty rectified pyramid consistency): a UNet whose decoder
/// has output heads `decoder.out_conv{l}` on levels 1 ..= L-2; their logits,
/// resized (bi/tri-linearly) to the input size, are returned in `aux`
/// (finest first), in eval mode too. In training the features entering the
/// heads are perturbed as in the URPC paper: the deepest head sees dropout
/// (p = 0.5), the next feature drop, the others uniform feature noise
/// (range 0.3).
pub struct URPCNet {
    cfg: UNetConfig,
    params: Vec<ParamInfo>,
    encoder: Encoder,
    decoder: Decoder,
    rng: std::sync::Arc<std::sync::Mutex<rand_chacha::ChaCha8Rng>>,
}

impl URPCNet {
    pub(crate) fn build(ctx: &Ctx, cfg: UNetConfig) -> Result<Self> {
        let mut net = Self {
            params: Vec::new(),
            encoder: Encoder::new(&ctx.pp("encoder"), &cfg)?,
            decoder: Decoder::new(&ctx.pp("decoder"), &cfg, cfg.up_mode, false, true)?,
            rng: ctx.drop_rng.clone(),
            cfg,
        };
        net.params = ctx.params_snapshot();
        Ok(net)
    }
}

impl SegNetwork for URPCNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<NetOutput> {
        with_folding(&self.cfg, x, |x| {
            let size = spatial(x);
            let f = self.encoder.forward(x, train)?;
            let d = self.decoder.forward(&f, train)?;
            let heads = self.decoder.heads();
            let nh = heads.len();
            let mut aux = Vec::with_capacity(nh);
            for (i, head) in heads.iter().enumerate() {
                let feat = &d.levels[i + 1];
                let feat = if train {
                    if i + 1 == nh {
                        let m = bernoulli_mask(&self.rng, feat.dims(), 0.5, feat.device())?;
                        feat.broadcast_mul(&m)?
                    } else if i + 2 == nh {
                        feature_drop(&self.rng, feat)?
                    } else {
                        let mut shape = feat.dims().to_vec();
                        shape[0] = 1;
                        let noise = uniform_noise(&self.rng, &shape, 0.3, feat.device())?;
                        (feat + feat.broadcast_mul(&noise)?)?
                    }
                } else {
                    feat.clone()
                };
                let y = head.forward(&feat)?;
                aux.push(resize_linear(&y, &size, false)?);
            }
            Ok(NetOutput {
                logits: d.logits,
                deep: Vec::new(),
                aux,
            })
        })
    }

    unet_meta!();
    unet_encoder!();
}
