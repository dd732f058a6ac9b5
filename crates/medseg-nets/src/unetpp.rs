//! UNet++ (nested UNet) after PyMIC's `pymic.net.cnn.unet_pp.UNetpp`.
//!
//! Nodes `X[i][j]` (level `i`, column `j`) are [`ConvBlock`]s named
//! `conv{i}_{j}`; `X[i][0]` is the encoder (max pooling between levels), and
//! `X[i][j] = conv(cat(X[i][0..j], up(X[i+1][j-1])))`. The output `final`
//! is a 1x1 convolution on `X[0][L-1]`. With deep supervision
//! (`multiscale_pred`) heads `final_{j}` on `X[0][j]`, `j = 1 ..= L-2`,
//! are added and returned in `deep` (all at full resolution).

use candle_core::{Result, Tensor};

use crate::config::{UNetConfig, UpMode};
use crate::layers::{cat_channels, spatial, Conv, Ctx, Pool, Upsample};
use crate::unet::{unet_meta, with_folding, ConvBlock};
use crate::{NetOutput, ParamInfo, SegNetwork};

/// UNet++ (2D or 3D).
pub struct UNetPlusPlus {
    cfg: UNetConfig,
    params: Vec<ParamInfo>,
    pool: Pool,
    up: Upsample,
    /// nodes[i][j] for i + j <= L - 1
    nodes: Vec<Vec<ConvBlock>>,
    final_conv: Conv,
    deep: Vec<Conv>,
}

impl UNetPlusPlus {
    pub(crate) fn build(ctx: &Ctx, cfg: UNetConfig) -> Result<Self> {
        if cfg.up_mode == UpMode::TransConv {
            candle_core::bail!(
                "UNet++ up-samples by interpolation; up_mode transconv is not supported"
            )
        }
        let ft = &cfg.feature_chns;
        let l = ft.len();
        let nd = cfg.dimension;
        let mut nodes = Vec::with_capacity(l);
        for i in 0..l {
            let mut row = Vec::new();
            for j in 0..(l - i) {
                let name = format!("conv{i}_{j}");
                let block = if j == 0 {
                    let cin = if i == 0 { cfg.in_chns } else { ft[i - 1] };
                    ConvBlock::new(&ctx.pp(name), &cfg, nd, cin, ft[i], cfg.dropout[i])?
                } else {
                    ConvBlock::new(&ctx.pp(name), &cfg, nd, ft[i] * j + ft[i + 1], ft[i], 0.0)?
                };
                row.push(block);
            }
            nodes.push(row);
        }
        let final_conv = Conv::pointwise(&ctx.pp("final"), nd, ft[0], cfg.class_num)?;
        let deep = if cfg.multiscale_pred {
            (1..l.saturating_sub(1))
                .map(|j| Conv::pointwise(&ctx.pp(format!("final_{j}")), nd, ft[0], cfg.class_num))
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let mut net = Self {
            params: Vec::new(),
            pool: Pool::new(&ctx.pp("pool"), nd),
            up: Upsample::new(&ctx.pp("Up"), cfg.up_mode),
            nodes,
            final_conv,
            deep,
            cfg,
        };
        net.params = ctx.params_snapshot();
        Ok(net)
    }
}

impl SegNetwork for UNetPlusPlus {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<NetOutput> {
        with_folding(&self.cfg, x, |x| {
            let l = self.nodes.len();
            let mut xs: Vec<Vec<Tensor>> = vec![Vec::new(); l];
            // Column-by-column along the anti-diagonals, like PyMIC: new
            // encoder level i, then the nodes it enables.
            for i in 0..l {
                let inp = if i == 0 {
                    x.clone()
                } else {
                    self.pool.forward(&xs[i - 1][0])?
                };
                xs[i].push(self.nodes[i][0].forward(&inp, train)?);
                for j in 1..=i {
                    let r = i - j; // node (r, j)
                    let below = &xs[r + 1][j - 1];
                    let up = self.up.forward(below, &spatial(&xs[r][0]))?;
                    let mut parts: Vec<&Tensor> = xs[r].iter().collect();
                    parts.push(&up);
                    let y = self.nodes[r][j].forward(&cat_channels(&parts)?, train)?;
                    xs[r].push(y);
                }
            }
            let logits = self.final_conv.forward(&xs[0][l - 1])?;
            let deep = self
                .deep
                .iter()
                .enumerate()
                .map(|(k, c)| c.forward(&xs[0][k + 1]))
                .collect::<Result<Vec<_>>>()?;
            Ok(NetOutput {
                logits,
                deep,
                aux: Vec::new(),
            })
        })
    }

    unet_meta!();
}
