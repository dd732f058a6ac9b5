//! MultiResUNet (Ibtehaz & Rahman, "MultiResUNet: Rethinking the U-Net
//! architecture for multimodal biomedical image segmentation", Neural
//! Networks 121, 2020), following the authors' PyTorch reference
//! implementation (github.com/nibtehaz/MultiResUNet, `pytorch/MultiResUNet.py`
//! and `pytorch/MultiResUNet3D.py`) layer for layer, with its module names:
//!
//! * `Conv{2,3}d_batchnorm`: `conv1` (bias, "same" padding) then `batchnorm`,
//!   then ReLU or nothing.
//! * `Multiresblock` of nominal width `U`: with `W = alpha * U`, three chained
//!   3x3 conv-BN-ReLU units `conv_3x3`, `conv_5x5`, `conv_7x7` of
//!   `int(W * 0.167)`, `int(W * 0.333)` and `int(W * 0.5)` channels (the
//!   reference's rounding, computed in f64 as Python does), concatenated and
//!   normalised by `batch_norm1`, plus the 1x1 conv-BN `shortcut`, then
//!   `batch_norm2` and ReLU.
//! * `Respath` of length `n`: `n` steps
//!   `x = relu(bns.i(relu(bns.i(convs.i(x))) + shortcuts.i(x)))` with
//!   3x3 conv-BN-ReLU `convs.i` and 1x1 conv-BN `shortcuts.i`. The same BatchNorm `bns.i` is applied twice per step, so
//!   in training its running statistics move twice, as in the reference.
//! * The network: `multiresblock1..L` with 2x2 max pooling, `respath1..L-1`
//!   of lengths `L-1 .. 1` on the skips, transposed convolutions
//!   `upsample{L+1..2L-1}` (kernel 2, stride 2, `U` of the target level
//!   output channels) concatenated *before* the skip, decoder blocks
//!   `multiresblock{L+1..2L-1}`, and `conv_final` (1x1 conv then BatchNorm,
//!   no activation) producing the logits.
//!
//! With the defaults (`feature_chns = [32, 64, 128, 256, 512]`, `alpha =
//! 1.67`) the state dict of the reference `MultiResUnet(in_chns, class_num -
//! 1)` loads by name: the reference emits `num_classes + 1` channels, here
//! `class_num` is the number of output channels. Generalised where the
//! reference hard-codes: any number of levels `L >= 2`, any widths, and
//! `alpha` reaches the blocks (the reference builds its blocks with the
//! default 1.67 whatever its `alpha`, so only 1.67 runs there).
//!
//! Input sizes: the reference needs every spatial size divisible by
//! `2^(L-1)`; here any size of at least `2^(L-1)` is accepted: pooling floors
//! odd sizes and the up-sampled map is zero-padded at its end to the size of
//! the skip before the concatenation (identical to the reference when the
//! sizes divide). 2D or 3D by `dimension`; a 2D network given a
//! `[N, C, D, H, W]` tensor folds depth into the batch.

use candle_core::{Result as CResult, Tensor};
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::NormType;
use crate::error::{NetError, Result};
use crate::layers::{cat_channels, fit_to, spatial, Act, Conv, ConvTranspose, Ctx, Norm, Pool};
use crate::unet::{logits_only, unet_meta};
use crate::{NetOutput, ParamInfo, SegNetwork};

fn d_dimension() -> usize {
    2
}
fn d_features() -> Vec<usize> {
    vec![32, 64, 128, 256, 512]
}
fn d_alpha() -> f64 {
    1.67
}

/// Configuration of [`MultiResUNet`] (registry name `MultiResUNet`).
///
/// Defaults are the reference implementation's: `feature_chns = [32, 64,
/// 128, 256, 512]` (its `32 * [1, 2, 4, 8, 16]`), `alpha = 1.67`, BatchNorm,
/// 2D.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiResUNetConfig {
    /// Registry name (`net_type` in PyMIC files is accepted).
    #[serde(alias = "net_type")]
    pub name: String,
    /// Spatial dimensions of the convolutions, 2 or 3.
    #[serde(default = "d_dimension")]
    pub dimension: usize,
    /// Input channels.
    pub in_chns: usize,
    /// Output channels (logits); the reference's `num_classes + 1`.
    pub class_num: usize,
    /// Nominal width `U` of each level's MultiRes block, finest first, at
    /// least 2 levels; the Res path of level `i` (0-based) has length
    /// `L - 1 - i`.
    #[serde(default = "d_features")]
    pub feature_chns: Vec<usize>,
    /// Width factor: a block of nominal width `U` has `int(0.167 W) +
    /// int(0.333 W) + int(0.5 W)` output channels with `W = alpha * U`.
    #[serde(default = "d_alpha")]
    pub alpha: f64,
    /// `batch_norm` (the reference) or `instance_norm` (no parameters);
    /// group norm is not offered (the block widths are rarely divisible).
    #[serde(default)]
    pub norm_type: NormType,
    /// Seed of the initial weights.
    #[serde(default)]
    pub seed: u64,
}

impl MultiResUNetConfig {
    /// The reference configuration for `in_chns` inputs and `class_num`
    /// output channels.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "MultiResUNet".to_string(),
            dimension: d_dimension(),
            in_chns,
            class_num,
            feature_chns: d_features(),
            alpha: d_alpha(),
            norm_type: NormType::BatchNorm,
            seed: 0,
        }
    }

    /// Parses a JSON configuration; unknown keys, missing keys and values of
    /// the wrong type or out of range give errors naming the key.
    pub fn from_json(config: &serde_json::Value) -> Result<Self> {
        let cfg: Self = serde_json::from_value(config.clone()).map_err(|e| {
            let key = config
                .as_object()
                .and_then(|obj| obj.iter().find_map(|(k, v)| bad_field(k, v)));
            NetError::Config(match key {
                Some(k) => format!("MultiResUNet: key `{k}`: {e} in {config}"),
                None => format!("MultiResUNet: {e} in {config}"),
            })
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values, naming the key at fault.
    pub fn validate(&self) -> Result<()> {
        let err = |k: &str, m: String| Err(NetError::Config(format!("{}: {k}: {m}", self.name)));
        if self.dimension != 2 && self.dimension != 3 {
            return err(
                "dimension",
                format!("must be 2 or 3, got {}", self.dimension),
            );
        }
        if self.in_chns == 0 {
            return err("in_chns", "must be at least 1".into());
        }
        if self.class_num == 0 {
            return err("class_num", "must be at least 1".into());
        }
        if self.feature_chns.len() < 2 {
            return err(
                "feature_chns",
                format!(
                    "needs at least 2 levels, got {:?}",
                    self.feature_chns.as_slice()
                ),
            );
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return err("alpha", format!("must be positive, got {}", self.alpha));
        }
        for &u in &self.feature_chns {
            let w = branch_widths(u, self.alpha);
            if w.contains(&0) {
                return err(
                    "feature_chns",
                    format!(
                        "width {u} with alpha {} gives a branch of 0 channels ({w:?}); \
                         need int(0.167 * alpha * U) >= 1",
                        self.alpha
                    ),
                );
            }
        }
        if self.norm_type == NormType::GroupNorm {
            return err(
                "norm_type",
                "group_norm is not supported; use batch_norm or instance_norm".into(),
            );
        }
        Ok(())
    }

    /// Output channels of each level's MultiRes block.
    pub fn block_channels(&self) -> Vec<usize> {
        self.feature_chns
            .iter()
            .map(|&u| branch_widths(u, self.alpha).iter().sum())
            .collect()
    }
}

/// Which key of a configuration object fails to parse as its type (used to
/// name the key in errors that serde reports without it).
fn bad_field(key: &str, v: &serde_json::Value) -> Option<String> {
    fn fails<T: DeserializeOwned>(v: &serde_json::Value) -> bool {
        serde_json::from_value::<T>(v.clone()).is_err()
    }
    let bad = match key {
        "name" | "net_type" => fails::<String>(v),
        "dimension" | "in_chns" | "class_num" => fails::<usize>(v),
        "feature_chns" => fails::<Vec<usize>>(v),
        "alpha" => fails::<f64>(v),
        "norm_type" => fails::<NormType>(v),
        "seed" => fails::<u64>(v),
        _ => true, // unknown key
    };
    bad.then(|| key.to_string())
}

/// Branch widths of a MultiRes block of nominal width `u`, with the
/// reference's rounding (`int(u * alpha * 0.167)`, ... in f64).
fn branch_widths(u: usize, alpha: f64) -> [usize; 3] {
    let w = u as f64 * alpha;
    [
        (w * 0.167) as usize,
        (w * 0.333) as usize,
        (w * 0.5) as usize,
    ]
}

/// ReLU, fused into the normalisation kernel where possible.
const RELU: Act = Act::LeakyRelu(0.0);

/// `Conv{n}d_batchnorm`: convolution (k = 1 or 3, "same" padding, bias)
/// then normalisation, then optionally ReLU.
struct ConvBn {
    conv: Conv,
    norm: Norm,
    relu: bool,
}

impl ConvBn {
    fn new(
        ctx: &Ctx,
        cfg: &MultiResUNetConfig,
        cin: usize,
        cout: usize,
        k: usize,
        relu: bool,
    ) -> CResult<Self> {
        Ok(Self {
            conv: Conv::new(
                &ctx.pp("conv1"),
                cfg.dimension,
                cin,
                cout,
                k,
                1,
                k / 2,
                true,
            )?,
            norm: Norm::new(&ctx.pp("batchnorm"), cfg.norm_type, cout, 1)?,
            relu,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> CResult<Tensor> {
        let y = self.conv.forward(x)?;
        self.norm
            .forward_act(&y, train, if self.relu { Some(&RELU) } else { None })
    }
}

/// The MultiRes block.
struct MultiResBlock {
    shortcut: ConvBn,
    conv3: ConvBn,
    conv5: ConvBn,
    conv7: ConvBn,
    bn1: Norm,
    bn2: Norm,
}

impl MultiResBlock {
    fn new(ctx: &Ctx, cfg: &MultiResUNetConfig, cin: usize, u: usize) -> CResult<Self> {
        let [a, b, c] = branch_widths(u, cfg.alpha);
        let out = a + b + c;
        Ok(Self {
            shortcut: ConvBn::new(&ctx.pp("shortcut"), cfg, cin, out, 1, false)?,
            conv3: ConvBn::new(&ctx.pp("conv_3x3"), cfg, cin, a, 3, true)?,
            conv5: ConvBn::new(&ctx.pp("conv_5x5"), cfg, a, b, 3, true)?,
            conv7: ConvBn::new(&ctx.pp("conv_7x7"), cfg, b, c, 3, true)?,
            bn1: Norm::new(&ctx.pp("batch_norm1"), cfg.norm_type, out, 1)?,
            bn2: Norm::new(&ctx.pp("batch_norm2"), cfg.norm_type, out, 1)?,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> CResult<Tensor> {
        let s = self.shortcut.forward(x, train)?;
        let a = self.conv3.forward(x, train)?;
        let b = self.conv5.forward(&a, train)?;
        let c = self.conv7.forward(&b, train)?;
        let y = (self.bn1.forward(&cat_channels(&[&a, &b, &c])?, train)? + s)?;
        self.bn2.forward_act(&y, train, Some(&RELU))
    }
}

/// The Res path on a skip connection.
struct ResPath {
    steps: Vec<(ConvBn, ConvBn, Norm)>, // (shortcut, conv, bn)
}

impl ResPath {
    fn new(ctx: &Ctx, cfg: &MultiResUNetConfig, c: usize, len: usize) -> CResult<Self> {
        let steps = (0..len)
            .map(|i| {
                Ok((
                    ConvBn::new(&ctx.pp("shortcuts").pp(i), cfg, c, c, 1, false)?,
                    ConvBn::new(&ctx.pp("convs").pp(i), cfg, c, c, 3, true)?,
                    Norm::new(&ctx.pp("bns").pp(i), cfg.norm_type, c, 1)?,
                ))
            })
            .collect::<CResult<Vec<_>>>()?;
        Ok(Self { steps })
    }

    fn forward(&self, x: &Tensor, train: bool) -> CResult<Tensor> {
        let mut x = x.clone();
        for (shortcut, conv, bn) in &self.steps {
            let s = shortcut.forward(&x, train)?;
            let y = bn.forward_act(&conv.forward(&x, train)?, train, Some(&RELU))?;
            x = bn.forward_act(&(y + s)?, train, Some(&RELU))?;
        }
        Ok(x)
    }
}

/// MultiResUNet, 2D or 3D (see the module documentation).
pub struct MultiResUNet {
    cfg: MultiResUNetConfig,
    params: Vec<ParamInfo>,
    enc: Vec<MultiResBlock>,
    pools: Vec<Pool>,
    respaths: Vec<ResPath>,
    ups: Vec<(ConvTranspose, MultiResBlock)>, // deepest first
    out: ConvBn,
}

impl MultiResUNet {
    /// Builds the network with parameters created in (or read from) `vb`
    /// under the reference implementation's names.
    pub fn new(cfg: MultiResUNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: MultiResUNetConfig) -> CResult<Self> {
        let ft = cfg.feature_chns.clone();
        let outs = cfg.block_channels();
        let l = ft.len();
        let nd = cfg.dimension;
        let mut enc = Vec::with_capacity(l);
        let mut pools = Vec::with_capacity(l - 1);
        let mut respaths = Vec::with_capacity(l - 1);
        let mut cin = cfg.in_chns;
        for i in 0..l {
            enc.push(MultiResBlock::new(
                &ctx.pp(format!("multiresblock{}", i + 1)),
                &cfg,
                cin,
                ft[i],
            )?);
            if i + 1 < l {
                pools.push(Pool::new(&ctx.pp(format!("pool{}", i + 1)), nd));
                respaths.push(ResPath::new(
                    &ctx.pp(format!("respath{}", i + 1)),
                    &cfg,
                    outs[i],
                    l - 1 - i,
                )?);
            }
            cin = outs[i];
        }
        let mut ups = Vec::with_capacity(l - 1);
        for k in 0..l - 1 {
            let lev = l - 2 - k;
            let id = l + 1 + k;
            let up = ConvTranspose::new(&ctx.pp(format!("upsample{id}")), nd, cin, ft[lev], 2)?;
            let block = MultiResBlock::new(
                &ctx.pp(format!("multiresblock{id}")),
                &cfg,
                ft[lev] + outs[lev],
                ft[lev],
            )?;
            ups.push((up, block));
            cin = outs[lev];
        }
        let out = ConvBn::new(&ctx.pp("conv_final"), &cfg, cin, cfg.class_num, 1, false)?;
        Ok(Self {
            params: ctx.params_snapshot(),
            cfg,
            enc,
            pools,
            respaths,
            ups,
            out,
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &MultiResUNetConfig {
        &self.cfg
    }

    fn check_input(&self, x: &Tensor) -> CResult<()> {
        let nd = self.cfg.dimension;
        let r = x.rank();
        if !(r == nd + 2 || (nd == 2 && r == 5)) {
            candle_core::bail!(
                "MultiResUNet: a {nd}D network takes [N, C, {}] input{}, got shape {:?}",
                if nd == 2 { "H, W" } else { "D, H, W" },
                if nd == 2 { " or [N, C, D, H, W]" } else { "" },
                x.dims()
            )
        }
        if x.dim(1)? != self.cfg.in_chns {
            candle_core::bail!(
                "MultiResUNet: expected {} input channels, got shape {:?}",
                self.cfg.in_chns,
                x.dims()
            )
        }
        let min = 1usize << (self.cfg.feature_chns.len() - 1);
        let sp = &x.dims()[r - nd..];
        if sp.iter().any(|&s| s < min) {
            candle_core::bail!(
                "MultiResUNet: spatial sizes {sp:?} must be at least {min} \
                 ({} poolings by 2)",
                self.cfg.feature_chns.len() - 1
            )
        }
        Ok(())
    }

    fn forward_nd(&self, x: &Tensor, train: bool) -> CResult<Tensor> {
        let l = self.enc.len();
        let mut skips = Vec::with_capacity(l - 1);
        let mut h = x.clone();
        for (i, block) in self.enc.iter().enumerate() {
            let m = block.forward(&h, train)?;
            if i + 1 < l {
                h = self.pools[i].forward(&m)?;
                skips.push(self.respaths[i].forward(&m, train)?);
            } else {
                h = m;
            }
        }
        for (k, (up, block)) in self.ups.iter().enumerate() {
            let skip = &skips[l - 2 - k];
            let u = fit_to(&up.forward(&h)?, &spatial(skip))?;
            h = block.forward(&cat_channels(&[&u, skip])?, train)?;
        }
        self.out.forward(&h, train)
    }
}

impl SegNetwork for MultiResUNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> CResult<NetOutput> {
        self.check_input(x)?;
        // a 2D network given [N, C, D, H, W] folds depth into the batch
        logits_only(x, self.cfg.dimension == 2, |x| self.forward_nd(x, train))
    }

    unet_meta!();
}

/// Builds a MultiResUNet from its JSON configuration (registry entry `MultiResUNet`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    let cfg = MultiResUNetConfig::from_json(config)?;
    Ok(Box::new(MultiResUNet::new(cfg, vb)?))
}
