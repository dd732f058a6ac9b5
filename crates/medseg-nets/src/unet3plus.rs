//! UNet 3+ (Huang et al., ICASSP 2020) with full-scale skip connections,
//! named like the reference implementation (ZJUGiveLab/UNet-Version,
//! `UNet_3Plus`): encoder blocks `conv{l}` (two Conv-BN-ReLU, `conv1`/`conv2`
//! with `.0` conv and `.1` norm), and for decoder level `d` one 3x3
//! Conv-BN-ReLU per source level: `h{i}_PT_hd{d}` (encoder level above,
//! max-pooled down), `h{d}_Cat_hd{d}` (same level), `hd{j}_UT_hd{d}`
//! (decoder level or bottleneck below, bilinearly up-sampled,
//! `align_corners = false`), each to `feature_chns[0]` channels, then the
//! fusion `conv{d}d_1`/`bn{d}d_1`; the output is the 3x3 `outconv1`. With
//! deep supervision, heads `outconv{d}` (3x3) on the coarser decoder levels
//! and the bottleneck are returned in `deep` at their own resolution.
//! Pooling and up-sampling go to the exact size of the target level, so
//! odd sizes work. Dropout `dropout[l]` follows each encoder block in
//! training (0 reproduces the reference).

use candle_core::{Result, Tensor};

use crate::config::UNetConfig;
use crate::layers::{cat_channels, resize_linear, spatial, Conv, Ctx, Dropout, Norm, Pool};
use crate::unet::{unet_meta, with_folding};
use crate::{NetOutput, ParamInfo, SegNetwork};

/// 3x3 Conv + norm + ReLU with the reference's flat names
/// (`{prefix}_conv`, `{prefix}_bn`) or nested ones (`.0`, `.1`).
struct Cbr {
    conv: Conv,
    norm: Norm,
}

impl Cbr {
    fn new(cc: &Ctx, nc: &Ctx, cfg: &UNetConfig, cin: usize, cout: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv::k3(cc, cfg.dimension, cin, cout)?,
            norm: Norm::new(nc, cfg.norm_type, cout, cfg.group_num)?,
        })
    }

    fn flat(ctx: &Ctx, name: &str, cfg: &UNetConfig, cin: usize, cout: usize) -> Result<Self> {
        Self::new(
            &ctx.pp(format!("{name}_conv")),
            &ctx.pp(format!("{name}_bn")),
            cfg,
            cin,
            cout,
        )
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.norm.forward(&self.conv.forward(x)?, train)?.relu()
    }
}

struct EncBlock {
    a: Cbr,
    b: Cbr,
    drop: Dropout,
}

enum Source {
    /// Encoder level `i` above the target: pooled `k` times.
    Pooled(usize),
    /// Encoder level equal to the target.
    Same(usize),
    /// Decoder level (or bottleneck) below the target: up-sampled.
    Up(usize),
}

struct Stage {
    inputs: Vec<(Source, Cbr)>,
    fuse: Cbr,
}

/// UNet 3+ (2D or 3D).
pub struct UNet3Plus {
    cfg: UNetConfig,
    params: Vec<ParamInfo>,
    pool: Pool,
    enc: Vec<EncBlock>,
    stages: Vec<Stage>, // decoder level L-2 first, down to 0
    out: Conv,
    deep: Vec<Conv>, // heads for levels 1 ..= L-1
}

impl UNet3Plus {
    pub(crate) fn build(ctx: &Ctx, cfg: UNetConfig) -> Result<Self> {
        let ft = cfg.feature_chns.clone();
        let l = ft.len();
        let nd = cfg.dimension;
        let cat = ft[0];
        let upc = cat * l;
        let mut enc = Vec::with_capacity(l);
        for i in 0..l {
            let c = ctx.pp(format!("conv{}", i + 1));
            let cin = if i == 0 { cfg.in_chns } else { ft[i - 1] };
            let (c1, c2) = (c.pp("conv1"), c.pp("conv2"));
            enc.push(EncBlock {
                a: Cbr::new(&c1.pp(0), &c1.pp(1), &cfg, cin, ft[i])?,
                b: Cbr::new(&c2.pp(0), &c2.pp(1), &cfg, ft[i], ft[i])?,
                drop: Dropout::new(&c, cfg.dropout[i]),
            });
        }
        let mut stages = Vec::new();
        for d in (0..l - 1).rev() {
            let dn = d + 1; // reference numbering
            let mut inputs = Vec::new();
            for i in 0..l {
                let (src, name, cin) = if i < d {
                    (Source::Pooled(i), format!("h{}_PT_hd{dn}", i + 1), ft[i])
                } else if i == d {
                    (Source::Same(i), format!("h{dn}_Cat_hd{dn}"), ft[i])
                } else {
                    let cin = if i == l - 1 { ft[l - 1] } else { upc };
                    (Source::Up(i), format!("hd{}_UT_hd{dn}", i + 1), cin)
                };
                inputs.push((src, Cbr::flat(ctx, &name, &cfg, cin, cat)?));
            }
            let fuse = Cbr::new(
                &ctx.pp(format!("conv{dn}d_1")),
                &ctx.pp(format!("bn{dn}d_1")),
                &cfg,
                upc,
                upc,
            )?;
            stages.push(Stage { inputs, fuse });
        }
        let out = Conv::k3(&ctx.pp("outconv1"), nd, upc, cfg.class_num)?;
        let deep = if cfg.multiscale_pred {
            (1..l)
                .map(|lev| {
                    let cin = if lev == l - 1 { ft[l - 1] } else { upc };
                    Conv::k3(
                        &ctx.pp(format!("outconv{}", lev + 1)),
                        nd,
                        cin,
                        cfg.class_num,
                    )
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let mut net = Self {
            pool: Pool::new(&ctx.pp("maxpool"), nd),
            cfg,
            params: Vec::new(),
            enc,
            stages,
            out,
            deep,
        };
        net.params = ctx.params_snapshot();
        Ok(net)
    }
}

impl SegNetwork for UNet3Plus {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<NetOutput> {
        with_folding(&self.cfg, x, |x| {
            let l = self.enc.len();
            let mut h: Vec<Tensor> = Vec::with_capacity(l);
            for (i, b) in self.enc.iter().enumerate() {
                let inp = if i == 0 {
                    x.clone()
                } else {
                    self.pool.forward(&h[i - 1])?
                };
                let y = b.b.forward(&b.a.forward(&inp, train)?, train)?;
                h.push(b.drop.forward(&y, train)?);
            }
            // hd[l-1] is the bottleneck; hd[d] for d < l-1 are decoder outputs
            let mut hd: Vec<Option<Tensor>> = vec![None; l];
            hd[l - 1] = Some(h[l - 1].clone());
            for (k, st) in self.stages.iter().enumerate() {
                let d = l - 2 - k;
                let size = spatial(&h[d]);
                let mut parts = Vec::with_capacity(st.inputs.len());
                for (src, cbr) in &st.inputs {
                    let t = match src {
                        Source::Pooled(i) => {
                            let mut t = h[*i].clone();
                            for _ in *i..d {
                                t = self.pool.forward(&t)?;
                            }
                            t
                        }
                        Source::Same(i) => h[*i].clone(),
                        Source::Up(j) => {
                            let t = hd[*j].as_ref().expect("deeper levels first");
                            resize_linear(t, &size, false)?
                        }
                    };
                    parts.push(cbr.forward(&t, train)?);
                }
                let refs: Vec<&Tensor> = parts.iter().collect();
                hd[d] = Some(st.fuse.forward(&cat_channels(&refs)?, train)?);
            }
            let hd: Vec<Tensor> = hd.into_iter().flatten().collect();
            let deep = self
                .deep
                .iter()
                .enumerate()
                .map(|(i, c)| c.forward(&hd[i + 1]))
                .collect::<Result<Vec<_>>>()?;
            Ok(NetOutput {
                logits: self.out.forward(&hd[0])?,
                deep,
                aux: Vec::new(),
            })
        })
    }

    unet_meta!();
}
