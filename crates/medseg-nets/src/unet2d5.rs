//! UNet2D5 after PyMIC's `pymic.net.cnn.unet2d5.UNet2D5`: a 3D network for
//! anisotropic volumes whose high-resolution levels use 2D convolutions and
//! 2D pooling (depth kept, folded into the batch) and whose low-resolution
//! levels use 3D ones. `conv_dims` gives the dimension per level (default
//! `[2, 2, 3, 3, 3]`). Blocks use PReLU, as PyMIC's `ConvBlockND`.
//!
//! Names: `encoder.block{l}.conv.conv_conv.*`, `decoder.up{4-l}.*`,
//! `decoder.out_conv` (a 1x1x1 3D convolution) and, with deep supervision,
//! `decoder.out_conv{l}`.

use candle_core::{Result, Tensor};

use crate::config::UNetConfig;
use crate::layers::{Conv, Ctx, Pool};
use crate::unet::{unet_meta, with_folding, ConvBlock, UpBlock};
use crate::{fold_depth, unfold_depth, NetOutput, ParamInfo, SegNetwork};

/// Applies `f` to `x` with depth folded into the batch when `nd == 2`.
fn in_dim(x: &Tensor, nd: usize, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    if nd == 2 {
        let (x4, n, d) = fold_depth(x)?;
        unfold_depth(&f(&x4)?, n, d)
    } else {
        f(x)
    }
}

/// UNet2D5 (input and output `[N, C, D, H, W]`).
pub struct UNet2D5 {
    cfg: UNetConfig,
    params: Vec<ParamInfo>,
    dims: Vec<usize>,
    blocks: Vec<(ConvBlock, Option<Pool>)>,
    ups: Vec<UpBlock>, // deepest first
    out_conv: Conv,
    deep: Vec<Conv>,
}

impl UNet2D5 {
    pub(crate) fn build(ctx: &Ctx, cfg: UNetConfig) -> Result<Self> {
        let ft = &cfg.feature_chns;
        let l = ft.len();
        let dims = cfg
            .conv_dims
            .clone()
            .unwrap_or_else(|| [2, 2, 3, 3, 3][5 - l.min(5)..].to_vec());
        if dims.len() != l || dims.iter().any(|d| *d != 2 && *d != 3) {
            candle_core::bail!(
                "UNet2D5: conv_dims {dims:?} must give 2 or 3 for each of the {l} levels"
            )
        }
        let enc = ctx.pp("encoder");
        let mut blocks = Vec::with_capacity(l);
        for i in 0..l {
            let b = enc.pp(format!("block{i}"));
            let cin = if i == 0 { cfg.in_chns } else { ft[i - 1] };
            let conv = ConvBlock::with_act(
                &b.pp("conv"),
                &cfg,
                dims[i],
                cin,
                ft[i],
                cfg.dropout[i],
                true,
            )?;
            let pool = (i + 1 < l).then(|| Pool::new(&b.pp("down_layer"), dims[i]));
            blocks.push((conv, pool));
        }
        let dec = ctx.pp("decoder");
        let mut ups = Vec::new();
        for lev in (0..l - 1).rev() {
            ups.push(UpBlock::general(
                &dec.pp(format!("up{}", 4 - lev)),
                &cfg,
                dims[lev],
                cfg.up_mode,
                ft[lev + 1],
                ft[lev],
                ft[lev],
                cfg.dropout[lev],
                false,
                true,
            )?);
        }
        let out_conv = Conv::pointwise(&dec.pp("out_conv"), 3, ft[0], cfg.class_num)?;
        let deep = if cfg.multiscale_pred {
            (1..l.saturating_sub(1))
                .map(|lev| {
                    Conv::pointwise(&dec.pp(format!("out_conv{lev}")), 3, ft[lev], cfg.class_num)
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let mut net = Self {
            cfg,
            params: Vec::new(),
            dims,
            blocks,
            ups,
            out_conv,
            deep,
        };
        net.params = ctx.params_snapshot();
        Ok(net)
    }
}

impl SegNetwork for UNet2D5 {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<NetOutput> {
        with_folding(&self.cfg, x, |x| {
            let l = self.blocks.len();
            let mut feats = Vec::with_capacity(l);
            let mut cur = x.clone();
            for (i, (conv, pool)) in self.blocks.iter().enumerate() {
                let f = in_dim(&cur, self.dims[i], |t| conv.forward(t, train))?;
                if let Some(p) = pool {
                    cur = in_dim(&f, self.dims[i], |t| p.forward(t))?;
                }
                feats.push(f);
            }
            let mut levels = vec![feats[l - 1].clone(); l];
            let mut y = feats[l - 1].clone();
            for (k, up) in self.ups.iter().enumerate() {
                let lev = l - 2 - k;
                y = if self.dims[lev] == 2 {
                    let (a, n, d) = fold_depth(&y)?;
                    let (b, _, _) = fold_depth(&feats[lev])?;
                    unfold_depth(&up.forward(&a, &b, train)?, n, d)?
                } else {
                    up.forward(&y, &feats[lev], train)?
                };
                levels[lev] = y.clone();
            }
            let logits = self.out_conv.forward(&levels[0])?;
            let deep = self
                .deep
                .iter()
                .enumerate()
                .map(|(i, c)| c.forward(&levels[i + 1]))
                .collect::<Result<Vec<_>>>()?;
            Ok(NetOutput {
                logits,
                deep,
                aux: Vec::new(),
            })
        })
    }

    unet_meta!(custom_input_size);

    /// In-plane axes are halved at every level; depth only at the levels
    /// with 3D convolutions.
    fn input_size(&self) -> crate::InputSize {
        let l = self.dims.len();
        let pools = l.saturating_sub(1);
        let depth_pools = self.dims[..pools].iter().filter(|d| **d == 3).count();
        let (hw, d) = (1usize << pools, 1usize << depth_pools);
        crate::InputSize {
            multiple: vec![d, hw, hw],
            minimum: vec![d, hw, hw],
            maximum: None,
        }
    }
}
