//! COPLENet (Wang et al., IEEE TMI 2020) after PyMIC's
//! `pymic.net.cnn.coplenet2d.COPLENet`: a 2D UNet whose blocks end in a
//! squeeze-and-excitation style spatial attention (`f * x + x`), whose
//! down-sampling concatenates max and average pooling, with residual
//! connections around every down and up block, 1x1 "bridge" layers halving
//! the skip channels, and an ASPP block (dilations 1, 2, 4, 6) at the
//! bottleneck. Needs 5 levels with `feature_chns[i] = 2 * feature_chns[i-1]`
//! and `feature_chns[4]` divisible by 4 (the residual sums need it).

use candle_core::{Result, Tensor};

use crate::config::{UNetConfig, UpMode};
use crate::layers::{
    cat_channels, fit_to, spatial, Act, Conv, ConvTranspose, Ctx, Dropout, Norm, Pool, Upsample,
};
use crate::unet::{unet_meta, with_folding};
use crate::{NetOutput, ParamInfo, SegNetwork};

/// Modified squeeze-and-excitation: `x * relu(conv(leaky(conv(mean(x))))) + x`.
struct SEBlock {
    c1: Conv,
    c2: Conv,
}

impl SEBlock {
    fn new(ctx: &Ctx, c: usize) -> Result<Self> {
        let s = ctx.pp("se_layers");
        Ok(Self {
            c1: Conv::pointwise(&s.pp(1), 2, c, c / 2)?,
            c2: Conv::pointwise(&s.pp(3), 2, c / 2, c)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let m = x.mean_keepdim(2)?.mean_keepdim(3)?;
        let f = Act::leaky().forward(&self.c1.forward(&m)?)?;
        let f = self.c2.forward(&f)?.relu()?;
        x.broadcast_mul(&f)? + x
    }
}

/// Conv-BN-LeakyReLU, dropout, Conv-BN-LeakyReLU, SE (`conv_conv.0..7`).
struct ConvBNActBlock {
    conv1: Conv,
    norm1: Norm,
    drop: Dropout,
    conv2: Conv,
    norm2: Norm,
    se: SEBlock,
}

impl ConvBNActBlock {
    fn new(ctx: &Ctx, cfg: &UNetConfig, cin: usize, cout: usize, p: f64) -> Result<Self> {
        let c = ctx.pp("conv_conv");
        Ok(Self {
            conv1: Conv::k3(&c.pp(0), 2, cin, cout)?,
            norm1: Norm::new(&c.pp(1), cfg.norm_type, cout, cfg.group_num)?,
            drop: Dropout::new(&c, p),
            conv2: Conv::k3(&c.pp(4), 2, cout, cout)?,
            norm2: Norm::new(&c.pp(5), cfg.norm_type, cout, cfg.group_num)?,
            se: SEBlock::new(&c.pp(7), cout)?,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let a = Act::leaky();
        let y = a.forward(&self.norm1.forward(&self.conv1.forward(x)?, train)?)?;
        let y = self.drop.forward(&y, train)?;
        let y = a.forward(&self.norm2.forward(&self.conv2.forward(&y)?, train)?)?;
        self.se.forward(&y)
    }
}

/// Conv(k)-BN-LeakyReLU (`conv.0`, `conv.1`).
struct ConvLayer {
    conv: Conv,
    norm: Norm,
}

impl ConvLayer {
    fn new(ctx: &Ctx, cfg: &UNetConfig, cin: usize, cout: usize) -> Result<Self> {
        let c = ctx.pp("conv");
        Ok(Self {
            conv: Conv::pointwise(&c.pp(0), 2, cin, cout)?,
            norm: Norm::new(&c.pp(1), cfg.norm_type, cout, cfg.group_num)?,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Act::leaky().forward(&self.norm.forward(&self.conv.forward(x)?, train)?)
    }
}

struct Aspp {
    convs: Vec<Conv>,
    fuse: ConvLayer,
}

impl Aspp {
    fn new(ctx: &Ctx, cfg: &UNetConfig, c: usize) -> Result<Self> {
        let q = c / 4;
        let convs = [(1, 1), (3, 2), (3, 4), (3, 6)]
            .iter()
            .enumerate()
            .map(|(i, &(k, d))| Conv::dilated(&ctx.pp(format!("conv_{}", i + 1)), 2, c, q, k, d))
            .collect::<Result<Vec<_>>>()?;
        let f = ctx.pp("conv_1x1");
        let fuse = ConvLayer {
            conv: Conv::pointwise(&f.pp(0), 2, 4 * q, 4 * q)?,
            norm: Norm::new(&f.pp(1), cfg.norm_type, 4 * q, cfg.group_num)?,
        };
        Ok(Self { convs, fuse })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let ys = self
            .convs
            .iter()
            .map(|c| c.forward(x))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Tensor> = ys.iter().collect();
        self.fuse.forward(&cat_channels(&refs)?, train)
    }
}

struct Down {
    pool: Pool,
    conv: ConvBNActBlock,
}

impl Down {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let xm = self.pool.forward(x)?;
        let xa = x.avg_pool2d(2)?;
        let xc = cat_channels(&[&xm, &xa])?;
        self.conv.forward(&xc, train)? + xc
    }
}

enum UpKind {
    Trans(ConvTranspose),
    Interp(Conv, Upsample),
}

struct Up {
    up: UpKind,
    conv: ConvBNActBlock,
}

impl Up {
    fn forward(&self, x1: &Tensor, x2: &Tensor, train: bool) -> Result<Tensor> {
        let size = spatial(x2);
        let u = match &self.up {
            UpKind::Trans(t) => fit_to(&t.forward(x1)?, &size)?,
            UpKind::Interp(c, u) => u.forward(&c.forward(x1)?, &size)?,
        };
        let xc = cat_channels(&[x2, &u])?;
        self.conv.forward(&xc, train)? + xc
    }
}

/// COPLENet (2D; a 5D input is folded).
pub struct COPLENet {
    cfg: UNetConfig,
    params: Vec<ParamInfo>,
    in_conv: ConvBNActBlock,
    downs: Vec<Down>,
    bridges: Vec<ConvLayer>,
    aspp: Aspp,
    ups: Vec<Up>, // up1 (deepest) .. up4
    out_conv: Conv,
}

impl COPLENet {
    pub(crate) fn build(ctx: &Ctx, cfg: UNetConfig) -> Result<Self> {
        let ft = cfg.feature_chns.clone();
        if ft.len() != 5
            || (1..5).any(|i| ft[i] != 2 * ft[i - 1])
            || ft[0] % 2 != 0
            || ft[4] % 4 != 0
        {
            candle_core::bail!(
                "COPLENet needs 5 even feature levels, each twice the previous, got {ft:?}"
            )
        }
        let in_conv =
            ConvBNActBlock::new(&ctx.pp("in_conv"), &cfg, cfg.in_chns, ft[0], cfg.dropout[0])?;
        let mut downs = Vec::new();
        for i in 1..5 {
            let c = ctx.pp(format!("down{i}"));
            downs.push(Down {
                pool: Pool::new(&c.pp("maxpool"), 2),
                conv: ConvBNActBlock::new(
                    &c.pp("conv"),
                    &cfg,
                    2 * ft[i - 1],
                    ft[i],
                    cfg.dropout[i],
                )?,
            });
        }
        let bridges = (0..4)
            .map(|i| ConvLayer::new(&ctx.pp(format!("bridge{i}")), &cfg, ft[i], ft[i] / 2))
            .collect::<Result<Vec<_>>>()?;
        let mut ups = Vec::new();
        for k in 1..=4 {
            let lev = 4 - k;
            let c = ctx.pp(format!("up{k}"));
            let (c1, c2) = (ft[lev + 1], ft[lev] / 2);
            let up = match cfg.up_mode {
                UpMode::TransConv => UpKind::Trans(ConvTranspose::new(&c.pp("up"), 2, c1, c2, 2)?),
                m => UpKind::Interp(
                    Conv::pointwise(&c.pp("conv1x1"), 2, c1, c2)?,
                    Upsample::new(&c.pp("up"), m),
                ),
            };
            ups.push(Up {
                up,
                conv: ConvBNActBlock::new(&c.pp("conv"), &cfg, 2 * c2, ft[lev], cfg.dropout[lev])?,
            });
        }
        let aspp = Aspp::new(&ctx.pp("aspp"), &cfg, ft[4])?;
        let out_conv = Conv::k3(&ctx.pp("out_conv"), 2, ft[0], cfg.class_num)?;
        let mut net = Self {
            cfg,
            params: Vec::new(),
            in_conv,
            downs,
            bridges,
            aspp,
            ups,
            out_conv,
        };
        net.params = ctx.params_snapshot();
        Ok(net)
    }
}

impl SegNetwork for COPLENet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<NetOutput> {
        with_folding(&self.cfg, x, |x| {
            let mut feats = vec![self.in_conv.forward(x, train)?];
            for d in &self.downs {
                let next = d.forward(feats.last().expect("non-empty"), train)?;
                feats.push(next);
            }
            let skips = (0..4)
                .map(|i| self.bridges[i].forward(&feats[i], train))
                .collect::<Result<Vec<_>>>()?;
            let mut y = self.aspp.forward(&feats[4], train)?;
            for (k, up) in self.ups.iter().enumerate() {
                y = up.forward(&y, &skips[3 - k], train)?;
            }
            Ok(NetOutput {
                logits: self.out_conv.forward(&y)?,
                deep: Vec::new(),
                aux: Vec::new(),
            })
        })
    }

    unet_meta!();
}
