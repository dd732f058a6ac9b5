//! U^2-Net and U^2-Net-small (Qin et al., Pattern Recognition 2020) after
//! the authors' code (github.com/xuebinqin/U-2-Net, `model/u2net.py`,
//! `U2NET` and `U2NETP`, as JMedSeg's `model/U2Net.py` ports them); see
//! [`U2Net`]. The residual U-blocks are one type, `Rsu`, parameterised
//! by height.

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::config::{parse_net_config, KeyKind, NormType};
use crate::error::{NetError, Result};
use crate::layers::{cat_channels, resize_linear, spatial, Act, Conv, Ctx, Norm, Pool};
use crate::unet::{fold_5d, unet_meta};
use crate::{fold_depth, unfold_depth, NetOutput, ParamInfo, SegNetwork};

fn d_dimension() -> usize {
    2
}

/// `U2NET`'s widths: encoder stages 1..6 (mid, out), decoder stages
/// 1d..5d (mid, out).
const U2NET_WIDTHS: [&[usize]; 4] = [
    &[32, 32, 64, 128, 256, 256],
    &[64, 128, 256, 512, 512, 512],
    &[16, 32, 64, 128, 256],
    &[64, 64, 128, 256, 512],
];
/// `U2NETP`'s widths (same order).
const U2NETP_WIDTHS: [&[usize]; 4] = [&[16; 6], &[64; 6], &[16; 5], &[64; 5]];

/// Heights of the RSU blocks of stages 1..6 (and of the decoder stages
/// 1d..5d); stages 5, 6 and 5d are the dilated RSU-4F.
const HEIGHTS: [usize; 6] = [7, 6, 5, 4, 4, 4];

fn d_true() -> bool {
    true
}

/// Configuration of [`U2Net`] (registry names `U2Net`, and `U2NetP` /
/// `U2Net-small` for the small variant).
///
/// The width lists default to the variant the registry name selects (an
/// empty or absent list means "the variant's"): `U2NET`'s
/// `encoder_mid_chns = [32, 32, 64, 128, 256, 256]`, `encoder_out_chns =
/// [64, 128, 256, 512, 512, 512]`, `decoder_mid_chns = [16, 32, 64, 128,
/// 256]`, `decoder_out_chns = [64, 64, 128, 256, 512]`; `U2NETP`'s 16
/// (mid) and 64 (out) everywhere. The reference's defaults are `in_ch = 3`
/// and (JMedSeg) `n_classes = 2`; here both are required.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct U2NetConfig {
    /// Registry name (`net_type` in PyMIC files is accepted).
    #[serde(alias = "net_type")]
    pub name: String,
    /// Spatial dimensions; U^2-Net is 2D only, so only 2 is accepted (a 5D
    /// input is folded into the batch).
    #[serde(default = "d_dimension")]
    pub dimension: usize,
    /// Input channels.
    pub in_chns: usize,
    /// Output classes (logit channels of the fused and of the side outputs).
    pub class_num: usize,
    /// Middle widths of the encoder stages `stage1..stage6` (six values).
    #[serde(default)]
    pub encoder_mid_chns: Vec<usize>,
    /// Output widths of the encoder stages `stage1..stage6` (six values).
    #[serde(default)]
    pub encoder_out_chns: Vec<usize>,
    /// Middle widths of the decoder stages `stage1d..stage5d` (five values,
    /// finest first).
    #[serde(default)]
    pub decoder_mid_chns: Vec<usize>,
    /// Output widths of the decoder stages `stage1d..stage5d` (five values,
    /// finest first).
    #[serde(default)]
    pub decoder_out_chns: Vec<usize>,
    /// Return the six side outputs in [`crate::NetOutput::deep`] for deep
    /// supervision (true, as the authors train: the configured loss must
    /// then take several predictions, e.g. `DeepSuperviseLoss`); false
    /// returns the fused logits alone, for a plain loss. The fused output
    /// is computed from the side outputs either way.
    #[serde(default = "d_true", alias = "deep_supervise")]
    pub multiscale_pred: bool,
    /// Seed of the initial weights.
    #[serde(default)]
    pub seed: u64,
}

impl U2NetConfig {
    /// `U2NET`'s layout (`small = false`) or `U2NETP`'s (`small = true`)
    /// with `in_chns` inputs and `class_num` classes.
    pub fn new(in_chns: usize, class_num: usize, small: bool) -> Self {
        let mut c = Self {
            name: if small { "U2NetP" } else { "U2Net" }.to_string(),
            dimension: d_dimension(),
            in_chns,
            class_num,
            encoder_mid_chns: Vec::new(),
            encoder_out_chns: Vec::new(),
            decoder_mid_chns: Vec::new(),
            decoder_out_chns: Vec::new(),
            multiscale_pred: true,
            seed: 0,
        };
        c.fill_defaults(small);
        c
    }

    /// Replaces empty width lists by those of `U2NET` (`small = false`) or
    /// `U2NETP` (`small = true`).
    pub fn fill_defaults(&mut self, small: bool) {
        let w = if small { U2NETP_WIDTHS } else { U2NET_WIDTHS };
        for (v, d) in [
            &mut self.encoder_mid_chns,
            &mut self.encoder_out_chns,
            &mut self.decoder_mid_chns,
            &mut self.decoder_out_chns,
        ]
        .into_iter()
        .zip(w)
        {
            if v.is_empty() {
                *v = d.to_vec();
            }
        }
    }

    /// Checks the values and names the first bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.dimension != 2 {
            return Err(format!(
                "dimension must be 2 (U^2-Net is a 2D network), got {}",
                self.dimension
            ));
        }
        if self.in_chns == 0 {
            return Err("in_chns must be positive".into());
        }
        if self.class_num == 0 {
            return Err("class_num must be positive".into());
        }
        for (key, v, n) in [
            ("encoder_mid_chns", &self.encoder_mid_chns, 6),
            ("encoder_out_chns", &self.encoder_out_chns, 6),
            ("decoder_mid_chns", &self.decoder_mid_chns, 5),
            ("decoder_out_chns", &self.decoder_out_chns, 5),
        ] {
            if v.len() != n || v.contains(&0) {
                return Err(format!(
                    "{key} must be {n} positive values (one per stage), got {v:?}"
                ));
            }
        }
        Ok(())
    }
}

/// `REBNCONV`: 3x3 convolution (dilation `d`, padding `d`, with bias) +
/// BatchNorm + ReLU, modules `conv_s1` and `bn_s1`.
struct ReBnConv {
    conv: Conv,
    bn: Norm,
}

impl ReBnConv {
    fn new(ctx: &Ctx, cin: usize, cout: usize, dil: usize) -> CandleResult<Self> {
        Ok(Self {
            conv: Conv::dilated(&ctx.pp("conv_s1"), 2, cin, cout, 3, dil)?,
            bn: Norm::new(&ctx.pp("bn_s1"), NormType::BatchNorm, cout, 1)?,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        self.bn
            .forward_act(&self.conv.forward(x)?, train, Some(&Act::LeakyRelu(0.0)))
    }
}

/// 2x2 stride-2 max pooling with PyTorch's `ceil_mode = True`: an odd size
/// keeps its last row (column) as a window of its own (done by repeating
/// it, which leaves every window's maximum unchanged).
fn pool_ceil(pool: &Pool, x: &Tensor) -> CandleResult<Tensor> {
    let mut y = x.clone();
    for axis in [2, 3] {
        if y.dim(axis)? % 2 == 1 {
            y = y.pad_with_same(axis, 0, 1)?;
        }
    }
    pool.forward(&y)
}

/// Bilinear resize of `x` to the spatial size of `like` (the reference's
/// `_upsample_like`: `F.upsample(mode='bilinear')`, `align_corners = False`).
fn upsample_like(x: &Tensor, like: &Tensor) -> CandleResult<Tensor> {
    resize_linear(x, &spatial(like), false)
}

/// Residual U-block of height `L` (the reference's `RSU7`, `RSU6`, `RSU5`,
/// `RSU4`, and with `dilated` the pooling-free `RSU4F`), written once:
///
/// * `rebnconvin`: `in -> out`, the residual branch's input;
/// * `rebnconv1..L`: `rebnconv1` `out -> mid`, the others `mid -> mid`;
///   plain: a ceil-mode 2x2 max pooling before each of `rebnconv2..L-1`,
///   `rebnconvL` dilated 2; dilated: no pooling, `rebnconvI` dilated
///   `2^(I-1)`;
/// * `rebnconv{L-1}d..1d`: on the concatenation of the level below
///   (bilinearly upsampled to the level's size when plain) and the level's
///   encoder feature, `2 mid -> mid` (`rebnconv1d`: `2 mid -> out`);
///   dilated: `rebnconvId` dilated `2^(I-1)`;
///
/// and the output is `rebnconv1d + rebnconvin`.
pub(crate) struct Rsu {
    height: usize,
    dilated: bool,
    conv_in: ReBnConv,
    /// `rebnconv1..L`.
    enc: Vec<ReBnConv>,
    /// `rebnconv1d..{L-1}d`.
    dec: Vec<ReBnConv>,
    /// `pool1..L-2` (plain blocks).
    pools: Vec<Pool>,
}

impl Rsu {
    /// An RSU of `height` (at least 2) with `cin` inputs, `mid` inner and
    /// `cout` output channels, its modules created in the reference's order.
    pub(crate) fn new(
        ctx: &Ctx,
        height: usize,
        dilated: bool,
        cin: usize,
        mid: usize,
        cout: usize,
    ) -> CandleResult<Self> {
        let dil_enc = |i: usize| {
            if dilated {
                1 << (i - 1)
            } else if i == height {
                2
            } else {
                1
            }
        };
        let conv_in = ReBnConv::new(&ctx.pp("rebnconvin"), cin, cout, 1)?;
        let mut enc = Vec::with_capacity(height);
        let mut pools = Vec::new();
        for i in 1..=height {
            let c = if i == 1 { cout } else { mid };
            enc.push(ReBnConv::new(
                &ctx.pp(format!("rebnconv{i}")),
                c,
                mid,
                dil_enc(i),
            )?);
            if !dilated && i <= height - 2 {
                pools.push(Pool::new(&ctx.pp(format!("pool{i}")), 2));
            }
        }
        let mut dec: Vec<Option<ReBnConv>> = (1..height).map(|_| None).collect();
        for i in (1..height).rev() {
            let c = if i == 1 { cout } else { mid };
            let dil = if dilated { 1 << (i - 1) } else { 1 };
            dec[i - 1] = Some(ReBnConv::new(
                &ctx.pp(format!("rebnconv{i}d")),
                2 * mid,
                c,
                dil,
            )?);
        }
        Ok(Self {
            height,
            dilated,
            conv_in,
            enc,
            dec: dec.into_iter().flatten().collect(),
            pools,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let l = self.height;
        let hxin = self.conv_in.forward(x, train)?;
        let mut hs = vec![self.enc[0].forward(&hxin, train)?];
        for i in 2..l {
            let prev = &hs[i - 2];
            let inp = if self.dilated {
                prev.clone()
            } else {
                pool_ceil(&self.pools[i - 2], prev)?
            };
            hs.push(self.enc[i - 1].forward(&inp, train)?);
        }
        let top = self.enc[l - 1].forward(&hs[l - 2], train)?;
        let mut d = self.dec[l - 2].forward(&cat_channels(&[&top, &hs[l - 2]])?, train)?;
        for i in (1..=l - 2).rev() {
            let skip = &hs[i - 1];
            let up = if self.dilated {
                d
            } else {
                upsample_like(&d, skip)?
            };
            d = self.dec[i - 1].forward(&cat_channels(&[&up, skip])?, train)?;
        }
        d + hxin
    }
}

/// U^2-Net (Qin, Zhang, Huang, Dehghan, Zaiane & Jagersand, "U^2-Net:
/// Going Deeper with Nested U-Structure for Salient Object Detection",
/// Pattern Recognition 106, 2020) in the layout of the authors' code
/// (github.com/xuebinqin/U-2-Net, `model/u2net.py`, classes `U2NET` and,
/// with the small widths, `U2NETP`; JMedSeg's `model/U2Net.py` is a port
/// of it), module names kept so that its state dicts load by name:
///
/// * `stage1..stage6`: residual U-blocks (`Rsu`) of heights 7, 6, 5, 4 and the
///   dilated RSU-4F twice, a ceil-mode 2x2 max pooling between stages;
/// * `stage5d..stage1d`: RSU-4F, RSU-4, RSU-5, RSU-6, RSU-7 on the
///   concatenation of the stage below (bilinearly upsampled,
///   `align_corners = False`) and the encoder stage of the same level;
/// * `side1..side6`: 3x3 convolutions to `class_num` channels on
///   `stage1d..stage5d` and `stage6`, bilinearly upsampled to the input
///   size, and `outconv`, a 1x1 convolution fusing their concatenation.
///
/// The fused output is the logits; the six side outputs (full resolution,
/// `side1` first) are returned in [`NetOutput::deep`] for deep supervision,
/// which the supervised loss then applies to all seven (the reference's
/// `muti_bce_loss_fusion`). Differences from the reference: logits are
/// returned (the authors' code applies a sigmoid to all seven outputs;
/// JMedSeg returns the fused output alone), weights start with PyTorch's
/// default initialisation, the input has `in_chns` channels and the widths
/// are configurable ([`U2NetConfig`]).
///
/// Input sizes: any. The poolings round odd sizes up and every upsampling
/// goes to the exact size of its skip, so the output always has the
/// input's size. The network is 2D; a `[N, C, D, H, W]` input has its
/// depth folded into the batch.
///
/// Parameter counts: `U2NET` has 43,996,032 + 64 * 9 * (`in_chns` - 3) +
/// 13,831 * `class_num` + 6 * `class_num`^2 trainable parameters:
/// 44,009,869 for the authors' default (`in_ch = 3, out_ch = 1`),
/// 44,023,718 for JMedSeg's (`in_ch = 3, n_classes = 2`). `U2NETP` has
/// 1,127,712 + 64 * 9 * (`in_chns` - 3) + 3,463 * `class_num` + 6 *
/// `class_num`^2: 1,131,181 for `(3, 1)` and 1,134,662 for `(3, 2)`. tests/u2net.rs checks these counts, and the
/// fused and side outputs (eval and train mode) and BatchNorm running
/// statistics of a tiny configuration against a PyTorch transcription
/// (tools/make_u2net_csnet_fixtures.py, itself checked against the
/// authors' file).
pub struct U2Net {
    cfg: U2NetConfig,
    params: Vec<ParamInfo>,
    /// `stage1..stage6`.
    stages: Vec<Rsu>,
    /// `pool12..pool56`.
    pools: Vec<Pool>,
    /// `stage1d..stage5d`.
    dec: Vec<Rsu>,
    /// `side1..side6`.
    sides: Vec<Conv>,
    outconv: Conv,
}

impl U2Net {
    /// Builds the network, creating (or reading) its parameters in `vb`
    /// under the reference's names (`stage1.rebnconvin.conv_s1.weight`,
    /// `stage5d.rebnconv3d.bn_s1.running_mean`, `side6.bias`,
    /// `outconv.weight`, ...). Empty width lists take `U2NET`'s widths
    /// (use [`U2NetConfig::new`] or [`U2NetConfig::fill_defaults`] for
    /// `U2NETP`'s).
    pub fn new(mut cfg: U2NetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.fill_defaults(false);
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: U2NetConfig) -> CandleResult<Self> {
        let (em, eo) = (&cfg.encoder_mid_chns, &cfg.encoder_out_chns);
        let (dm, dout) = (&cfg.decoder_mid_chns, &cfg.decoder_out_chns);
        let mut stages = Vec::with_capacity(6);
        let mut pools = Vec::with_capacity(5);
        let mut cin = cfg.in_chns;
        for s in 0..6 {
            stages.push(Rsu::new(
                &ctx.pp(format!("stage{}", s + 1)),
                HEIGHTS[s],
                s >= 4,
                cin,
                em[s],
                eo[s],
            )?);
            if s < 5 {
                pools.push(Pool::new(&ctx.pp(format!("pool{}{}", s + 1, s + 2)), 2));
            }
            cin = eo[s];
        }
        let mut dec: Vec<Option<Rsu>> = (0..5).map(|_| None).collect();
        let mut below = eo[5];
        for s in (0..5).rev() {
            dec[s] = Some(Rsu::new(
                &ctx.pp(format!("stage{}d", s + 1)),
                HEIGHTS[s],
                s == 4,
                below + eo[s],
                dm[s],
                dout[s],
            )?);
            below = dout[s];
        }
        let mut sides = Vec::with_capacity(6);
        // side1..side5 on stage1d..stage5d, side6 on stage6
        for (s, &c) in dout.iter().chain(std::iter::once(&eo[5])).enumerate() {
            sides.push(Conv::k3(
                &ctx.pp(format!("side{}", s + 1)),
                2,
                c,
                cfg.class_num,
            )?);
        }
        let outconv = Conv::pointwise(&ctx.pp("outconv"), 2, 6 * cfg.class_num, cfg.class_num)?;
        Ok(Self {
            cfg,
            params: ctx.params_snapshot(),
            stages,
            pools,
            dec: dec.into_iter().flatten().collect(),
            sides,
            outconv,
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &U2NetConfig {
        &self.cfg
    }

    fn check_input(&self, x: &Tensor) -> CandleResult<()> {
        if !matches!(x.rank(), 4 | 5) || x.dim(1)? != self.cfg.in_chns {
            candle_core::bail!(
                "{}: expected [N, {}, H, W] or [N, {}, D, H, W] input (input channels {}), got shape {:?}",
                self.cfg.name,
                self.cfg.in_chns,
                self.cfg.in_chns,
                self.cfg.in_chns,
                x.dims()
            )
        }
        Ok(())
    }

    /// `stage1..stage6` outputs, finest first.
    fn encoder4(&self, x: &Tensor, train: bool) -> CandleResult<Vec<Tensor>> {
        let mut feats: Vec<Tensor> = Vec::with_capacity(6);
        let mut hx = x.clone();
        for (s, stage) in self.stages.iter().enumerate() {
            let h = stage.forward(&hx, train)?;
            if s < 5 {
                hx = pool_ceil(&self.pools[s], &h)?;
            }
            feats.push(h);
        }
        Ok(feats)
    }

    /// The fused logits and the six side outputs of a 4D input.
    fn forward4(&self, x: &Tensor, train: bool) -> CandleResult<(Tensor, Vec<Tensor>)> {
        let enc = self.encoder4(x, train)?;
        let mut d = enc[5].clone();
        let mut dec: Vec<Tensor> = Vec::with_capacity(5);
        for s in (0..5).rev() {
            let up = upsample_like(&d, &enc[s])?;
            d = self.dec[s].forward(&cat_channels(&[&up, &enc[s]])?, train)?;
            dec.push(d.clone());
        }
        dec.reverse(); // stage1d first
        let d1 = self.sides[0].forward(&dec[0])?;
        let mut sides = vec![d1.clone()];
        // side2..side5 on stage2d..stage5d, side6 on stage6
        let srcs = dec[1..].iter().chain(std::iter::once(&enc[5]));
        for (side, src) in self.sides[1..].iter().zip(srcs) {
            sides.push(upsample_like(&side.forward(src)?, &d1)?);
        }
        let refs: Vec<&Tensor> = sides.iter().collect();
        let d0 = self.outconv.forward(&cat_channels(&refs)?)?;
        Ok((d0, sides))
    }
}

impl SegNetwork for U2Net {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput> {
        self.check_input(x)?;
        if x.rank() == 5 {
            let (x4, n, d) = fold_depth(x)?;
            let (d0, sides) = self.forward4(&x4, train)?;
            let sides = if self.cfg.multiscale_pred {
                sides
            } else {
                Vec::new()
            };
            return Ok(NetOutput {
                logits: unfold_depth(&d0, n, d)?,
                deep: sides
                    .iter()
                    .map(|s| unfold_depth(s, n, d))
                    .collect::<CandleResult<_>>()?,
                aux: Vec::new(),
            });
        }
        let (logits, deep) = self.forward4(x, train)?;
        Ok(NetOutput {
            logits,
            deep: if self.cfg.multiscale_pred {
                deep
            } else {
                Vec::new()
            },
            aux: Vec::new(),
        })
    }

    /// The six encoder stages' outputs (1, 1/2, ... 1/32 of the input size,
    /// rounded up), finest first.
    fn encode(&self, x: &Tensor, train: bool) -> CandleResult<Option<Vec<Tensor>>> {
        self.check_input(x)?;
        Ok(Some(self.encoder4(&fold_5d(x)?, train)?))
    }

    fn encoder_prefixes(&self) -> Vec<String> {
        (1..=6).map(|s| format!("stage{s}.")).collect()
    }

    // `dimension` is 2 (checked by `U2NetConfig::validate`)
    unet_meta!(custom_input_size);

    fn input_size(&self) -> crate::InputSize {
        crate::InputSize::any(2)
    }
}

/// Builds a U^2-Net from its JSON configuration (registry entries `U2Net`
/// with `small = false`; `U2NetP` and `U2Net-small` with `small = true`,
/// whose width lists default to `U2NETP`'s).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
    small: bool,
) -> Result<Box<dyn SegNetwork>> {
    let mut cfg: U2NetConfig = parse_net_config(
        config,
        &[
            ("encoder_mid_chns", KeyKind::UsizeList),
            ("encoder_out_chns", KeyKind::UsizeList),
            ("decoder_mid_chns", KeyKind::UsizeList),
            ("decoder_out_chns", KeyKind::UsizeList),
            ("multiscale_pred", KeyKind::Bool),
        ],
    )?;
    cfg.fill_defaults(small);
    Ok(Box::new(U2Net::new(cfg, vb)?))
}
