//! Recurrent residual UNets and the residual UNet.
//!
//! * **R2UNet** and **R2AttentionUNet** (Alom et al. 2018; Oktay et al.
//!   2018 for the gates), with the module names of the widely used
//!   reference implementation (LeeJunHyun/Image_Segmentation): `RRCNN{l}`,
//!   `Up{l}`, `Att{l}`, `Up_RRCNN{l}`, `Conv_1x1`. A recurrent block applies
//!   one Conv-BN-ReLU `t + 1 = 3` times (`x1 = f(x)`, then `x1 = f(x + x1)`
//!   twice); an RRCNN block is a 1x1 projection followed by two recurrent
//!   blocks with a residual sum. Up-sampling is nearest then Conv-BN-ReLU.
//!   The attention gate is `x * sigmoid(BN(conv(relu(BN(W_g g) + BN(W_x x)))))`.
//! * **ResUNet** (Zhang et al. 2018, road extraction), with pre-activation
//!   residual units, strided 3x3 convolutions for down-sampling and
//!   transposed convolutions for up-sampling, named like the common
//!   implementation: `input_layer`, `input_skip`, `residual_conv_{l}`,
//!   `bridge`, `upsample_{l}`, `up_residual_conv{l}`, `output_layer`.
//!
//! All are 2D or 3D (`dimension`), take `feature_chns` (reference:
//! `[64, 128, 256, 512, 1024]` for R2UNet, `[64, 128, 256, 512]` for
//! ResUNet) and apply `dropout[l]` after each block of level `l` in
//! training (0 everywhere reproduces the references).

use candle_core::{Result, Tensor};

use crate::config::UNetConfig;
use crate::layers::{
    cat_channels, fit_to, resize_nearest, spatial, Act, Conv, ConvTranspose, Ctx, Dropout, Norm,
    Pool,
};
use crate::unet::{unet_meta, with_folding};
use crate::{NetOutput, ParamInfo, SegNetwork};

/// Conv(k, stride)-Norm(-ReLU) as a reusable unit (`{conv}` and `{norm}`
/// named by the caller).
struct ConvNorm {
    conv: Conv,
    norm: Norm,
}

impl ConvNorm {
    #[allow(clippy::too_many_arguments)]
    fn new(
        conv_ctx: &Ctx,
        norm_ctx: &Ctx,
        cfg: &UNetConfig,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
    ) -> Result<Self> {
        let nd = cfg.dimension;
        Ok(Self {
            conv: Conv::new(conv_ctx, nd, cin, cout, k, stride, k / 2, true)?,
            norm: Norm::new(norm_ctx, cfg.norm_type, cout, cfg.group_num)?,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.norm.forward(&self.conv.forward(x)?, train)
    }
}

struct Recurrent {
    f: ConvNorm,
    t: usize,
}

impl Recurrent {
    fn new(ctx: &Ctx, cfg: &UNetConfig, c: usize) -> Result<Self> {
        let s = ctx.pp("conv");
        Ok(Self {
            f: ConvNorm::new(&s.pp(0), &s.pp(1), cfg, c, c, 3, 1)?,
            t: 2,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x1 = self.f.forward(x, train)?.relu()?;
        for _ in 0..self.t {
            x1 = self.f.forward(&(x + &x1)?, train)?.relu()?;
        }
        Ok(x1)
    }
}

struct Rrcnn {
    proj: Conv,
    r1: Recurrent,
    r2: Recurrent,
    drop: Dropout,
}

impl Rrcnn {
    fn new(ctx: &Ctx, cfg: &UNetConfig, cin: usize, cout: usize, p: f64) -> Result<Self> {
        Ok(Self {
            proj: Conv::pointwise(&ctx.pp("Conv_1x1"), cfg.dimension, cin, cout)?,
            r1: Recurrent::new(&ctx.pp("RCNN").pp(0), cfg, cout)?,
            r2: Recurrent::new(&ctx.pp("RCNN").pp(1), cfg, cout)?,
            drop: Dropout::new(ctx, p),
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.proj.forward(x)?;
        let y = self.r2.forward(&self.r1.forward(&x, train)?, train)?;
        self.drop.forward(&(x + y)?, train)
    }
}

struct AttBlock {
    wg: ConvNorm,
    wx: ConvNorm,
    psi: ConvNorm,
}

impl AttBlock {
    fn new(ctx: &Ctx, cfg: &UNetConfig, fg: usize, fl: usize, fint: usize) -> Result<Self> {
        let (g, x, p) = (ctx.pp("W_g"), ctx.pp("W_x"), ctx.pp("psi"));
        Ok(Self {
            wg: ConvNorm::new(&g.pp(0), &g.pp(1), cfg, fg, fint, 1, 1)?,
            wx: ConvNorm::new(&x.pp(0), &x.pp(1), cfg, fl, fint, 1, 1)?,
            psi: ConvNorm::new(&p.pp(0), &p.pp(1), cfg, fint, 1, 1, 1)?,
        })
    }

    fn forward(&self, g: &Tensor, x: &Tensor, train: bool) -> Result<Tensor> {
        let s = (self.wg.forward(g, train)? + self.wx.forward(x, train)?)?.relu()?;
        let psi = Act::Sigmoid.forward(&self.psi.forward(&s, train)?)?;
        x.broadcast_mul(&psi)
    }
}

struct R2Level {
    up: ConvNorm,
    att: Option<AttBlock>,
    block: Rrcnn,
}

/// R2UNet and R2AttentionUNet.
pub struct R2UNet {
    cfg: UNetConfig,
    params: Vec<ParamInfo>,
    pool: Pool,
    enc: Vec<Rrcnn>,
    dec: Vec<R2Level>, // deepest first
    out: Conv,
}

impl R2UNet {
    pub(crate) fn build(ctx: &Ctx, cfg: UNetConfig, attention: bool) -> Result<Self> {
        let ft = cfg.feature_chns.clone();
        let l = ft.len();
        let enc = (0..l)
            .map(|i| {
                let cin = if i == 0 { cfg.in_chns } else { ft[i - 1] };
                Rrcnn::new(
                    &ctx.pp(format!("RRCNN{}", i + 1)),
                    &cfg,
                    cin,
                    ft[i],
                    cfg.dropout[i],
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let mut dec = Vec::new();
        for lev in (0..l - 1).rev() {
            let k = lev + 2; // reference numbering: Up5 goes into level 4 (index 3)
            let u = ctx.pp(format!("Up{k}")).pp("up");
            let up = ConvNorm::new(&u.pp(1), &u.pp(2), &cfg, ft[lev + 1], ft[lev], 3, 1)?;
            let att = if attention {
                if ft[lev] < 2 {
                    candle_core::bail!("R2AttentionUNet needs at least 2 channels per level")
                }
                Some(AttBlock::new(
                    &ctx.pp(format!("Att{k}")),
                    &cfg,
                    ft[lev],
                    ft[lev],
                    ft[lev] / 2,
                )?)
            } else {
                None
            };
            let block = Rrcnn::new(
                &ctx.pp(format!("Up_RRCNN{k}")),
                &cfg,
                2 * ft[lev],
                ft[lev],
                cfg.dropout[lev],
            )?;
            dec.push(R2Level { up, att, block });
        }
        let out = Conv::pointwise(&ctx.pp("Conv_1x1"), cfg.dimension, ft[0], cfg.class_num)?;
        let mut net = Self {
            pool: Pool::new(&ctx.pp("Maxpool"), cfg.dimension),
            cfg,
            params: Vec::new(),
            enc,
            dec,
            out,
        };
        net.params = ctx.params_snapshot();
        Ok(net)
    }
}

impl SegNetwork for R2UNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<NetOutput> {
        with_folding(&self.cfg, x, |x| {
            let mut feats: Vec<Tensor> = Vec::with_capacity(self.enc.len());
            for (i, b) in self.enc.iter().enumerate() {
                let inp = if i == 0 {
                    x.clone()
                } else {
                    self.pool.forward(&feats[i - 1])?
                };
                feats.push(b.forward(&inp, train)?);
            }
            let l = feats.len();
            let mut d = feats[l - 1].clone();
            for (k, lvl) in self.dec.iter().enumerate() {
                let lev = l - 2 - k;
                let skip = &feats[lev];
                let u = resize_nearest(&d, &spatial(skip))?;
                let u = lvl.up.forward(&u, train)?.relu()?;
                let s = match &lvl.att {
                    Some(a) => a.forward(&u, skip, train)?,
                    None => skip.clone(),
                };
                d = lvl.block.forward(&cat_channels(&[&s, &u])?, train)?;
            }
            Ok(NetOutput {
                logits: self.out.forward(&d)?,
                deep: Vec::new(),
                aux: Vec::new(),
            })
        })
    }

    unet_meta!();
}

/// Pre-activation residual unit: `BN-ReLU-Conv(stride)-BN-ReLU-Conv` plus a
/// `Conv(stride)-BN` shortcut.
struct ResidualConv {
    bn1: Norm,
    conv1: Conv,
    bn2: Norm,
    conv2: Conv,
    skip: ConvNorm,
    drop: Dropout,
}

impl ResidualConv {
    fn new(
        ctx: &Ctx,
        cfg: &UNetConfig,
        cin: usize,
        cout: usize,
        stride: usize,
        p: f64,
    ) -> Result<Self> {
        let nd = cfg.dimension;
        let b = ctx.pp("conv_block");
        let s = ctx.pp("conv_skip");
        Ok(Self {
            bn1: Norm::new(&b.pp(0), cfg.norm_type, cin, cfg.group_num)?,
            conv1: Conv::new(&b.pp(2), nd, cin, cout, 3, stride, 1, true)?,
            bn2: Norm::new(&b.pp(3), cfg.norm_type, cout, cfg.group_num)?,
            conv2: Conv::k3(&b.pp(5), nd, cout, cout)?,
            skip: ConvNorm::new(&s.pp(0), &s.pp(1), cfg, cin, cout, 3, stride)?,
            drop: Dropout::new(ctx, p),
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv1.forward(&self.bn1.forward(x, train)?.relu()?)?;
        let y = self.conv2.forward(&self.bn2.forward(&y, train)?.relu()?)?;
        self.drop
            .forward(&(y + self.skip.forward(x, train)?)?, train)
    }
}

/// ResUNet (deep residual UNet).
pub struct ResUNet {
    cfg: UNetConfig,
    params: Vec<ParamInfo>,
    in_conv1: ConvNorm,
    in_conv2: Conv,
    in_skip: Conv,
    in_drop: Dropout,
    down: Vec<ResidualConv>,                 // residual_conv_1.., bridge last
    ups: Vec<(ConvTranspose, ResidualConv)>, // deepest first
    out: Conv,
}

impl ResUNet {
    pub(crate) fn build(ctx: &Ctx, cfg: UNetConfig) -> Result<Self> {
        let ft = cfg.feature_chns.clone();
        let l = ft.len();
        let nd = cfg.dimension;
        let il = ctx.pp("input_layer");
        let in_conv1 = ConvNorm::new(&il.pp(0), &il.pp(1), &cfg, cfg.in_chns, ft[0], 3, 1)?;
        let in_conv2 = Conv::k3(&il.pp(3), nd, ft[0], ft[0])?;
        let in_skip = Conv::k3(&ctx.pp("input_skip").pp(0), nd, cfg.in_chns, ft[0])?;
        let down = (1..l)
            .map(|i| {
                let name = if i == l - 1 {
                    "bridge".to_string()
                } else {
                    format!("residual_conv_{i}")
                };
                ResidualConv::new(&ctx.pp(name), &cfg, ft[i - 1], ft[i], 2, cfg.dropout[i])
            })
            .collect::<Result<Vec<_>>>()?;
        let mut ups = Vec::new();
        for k in 1..l {
            let lev = l - 1 - k; // target level
            let up = ConvTranspose::new(
                &ctx.pp(format!("upsample_{k}")).pp("upsample"),
                nd,
                ft[lev + 1],
                ft[lev + 1],
                2,
            )?;
            let block = ResidualConv::new(
                &ctx.pp(format!("up_residual_conv{k}")),
                &cfg,
                ft[lev + 1] + ft[lev],
                ft[lev],
                1,
                cfg.dropout[lev],
            )?;
            ups.push((up, block));
        }
        let out = Conv::pointwise(&ctx.pp("output_layer").pp(0), nd, ft[0], cfg.class_num)?;
        let mut net = Self {
            in_drop: Dropout::new(ctx, cfg.dropout[0]),
            cfg,
            params: Vec::new(),
            in_conv1,
            in_conv2,
            in_skip,
            down,
            ups,
            out,
        };
        net.params = ctx.params_snapshot();
        Ok(net)
    }
}

impl SegNetwork for ResUNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<NetOutput> {
        with_folding(&self.cfg, x, |x| {
            let y = self.in_conv1.forward(x, train)?.relu()?;
            let y = (self.in_conv2.forward(&y)? + self.in_skip.forward(x)?)?;
            let mut feats = vec![self.in_drop.forward(&y, train)?];
            for d in &self.down {
                let next = d.forward(feats.last().expect("non-empty"), train)?;
                feats.push(next);
            }
            let l = feats.len();
            let mut d = feats[l - 1].clone();
            for (k, (up, block)) in self.ups.iter().enumerate() {
                let lev = l - 2 - k;
                let skip = &feats[lev];
                let u = fit_to(&up.forward(&d)?, &spatial(skip))?;
                d = block.forward(&cat_channels(&[&u, skip])?, train)?;
            }
            Ok(NetOutput {
                logits: self.out.forward(&d)?,
                deep: Vec::new(),
                aux: Vec::new(),
            })
        })
    }

    unet_meta!();
}
