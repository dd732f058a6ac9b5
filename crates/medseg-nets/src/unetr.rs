//! UNETR (Hatamizadeh et al., WACV 2022) after MONAI's
//! `monai.networks.nets.UNETR` (module names and default configuration
//! included, so MONAI state dicts import by name); see [`UNETR`].

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::config::NormType;
use crate::error::{NetError, Result};
use crate::layers::{cat_channels, Act, Conv, Ctx, Norm, ParamInit};
use crate::transformer::Vit;
use crate::unet::{logits_only, unet_meta};
use crate::{NetOutput, ParamInfo, SegNetwork};

fn d3() -> usize {
    3
}
fn d_feature() -> usize {
    16
}
fn d_hidden() -> usize {
    768
}
fn d_mlp() -> usize {
    3072
}
fn d_heads() -> usize {
    12
}
fn d_true() -> bool {
    true
}

/// Side of a ViT patch (fixed to 16 in MONAI's UNETR).
pub const UNETR_PATCH: usize = 16;
/// Transformer blocks (fixed to 12 in MONAI's UNETR).
pub const UNETR_LAYERS: usize = 12;

/// Configuration of [`UNETR`] (registry names `UNETR`, `UNETR2D`,
/// `UNETR3D`). Defaults are MONAI's: `img_size` 96 per axis,
/// `feature_size` 16, `hidden_size` 768, `mlp_dim` 3072, 12 heads,
/// residual convolution blocks, no `qkv` bias, instance normalisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNETRConfig {
    /// Registry name.
    #[serde(alias = "net_type")]
    pub name: String,
    /// Spatial dimensions (MONAI `spatial_dims`): 2 or 3. A 2D UNETR folds
    /// the depth of a 5D input into the batch.
    #[serde(default = "d3")]
    pub dimension: usize,
    /// Input channels.
    pub in_chns: usize,
    /// Output classes (logit channels).
    pub class_num: usize,
    /// Input size, one value per spatial axis in array order (`[D, H, W]`
    /// or `[H, W]`), each a multiple of 16; the position embeddings are
    /// learnt for this size, so every input must have it. Default 96 per
    /// axis.
    #[serde(default)]
    pub img_size: Option<Vec<usize>>,
    /// Channels of the finest convolutional level (MONAI `feature_size`).
    #[serde(default = "d_feature")]
    pub feature_size: usize,
    /// Token width of the ViT (`hidden_size`).
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// Width of the ViT MLPs (`mlp_dim`).
    #[serde(default = "d_mlp")]
    pub mlp_dim: usize,
    /// Attention heads (`num_heads`), dividing `hidden_size`.
    #[serde(default = "d_heads")]
    pub num_heads: usize,
    /// Residual convolution blocks (`res_block`); plain blocks otherwise.
    #[serde(default = "d_true")]
    pub res_block: bool,
    /// Convolution blocks after each transposed convolution of the skip
    /// paths (`conv_block`).
    #[serde(default = "d_true")]
    pub conv_block: bool,
    /// Bias in the attention's `qkv` layer (`qkv_bias`).
    #[serde(default)]
    pub qkv_bias: bool,
    /// Seed of the initial weights.
    #[serde(default)]
    pub seed: u64,
}

impl UNETRConfig {
    /// MONAI's default UNETR (3D, 96^3) with `in_chns` inputs and
    /// `class_num` classes.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "UNETR".into(),
            dimension: 3,
            in_chns,
            class_num,
            img_size: None,
            feature_size: d_feature(),
            hidden_size: d_hidden(),
            mlp_dim: d_mlp(),
            num_heads: d_heads(),
            res_block: true,
            conv_block: true,
            qkv_bias: false,
            seed: 0,
        }
    }

    /// The input size (default 96 per axis).
    pub fn image_size(&self) -> Vec<usize> {
        self.img_size
            .clone()
            .unwrap_or_else(|| vec![96; self.dimension])
    }

    /// Checks the values and names the first bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !matches!(self.dimension, 2 | 3) {
            return Err(format!("dimension must be 2 or 3, got {}", self.dimension));
        }
        if self.in_chns == 0 || self.class_num == 0 {
            return Err("in_chns and class_num must be positive".into());
        }
        let s = self.image_size();
        if s.len() != self.dimension || s.iter().any(|&v| v == 0 || v % UNETR_PATCH != 0) {
            return Err(format!(
                "img_size must have {} values, each a positive multiple of {UNETR_PATCH}, got {s:?}",
                self.dimension
            ));
        }
        if self.feature_size == 0 || self.mlp_dim == 0 {
            return Err("feature_size and mlp_dim must be positive".into());
        }
        if self.num_heads == 0 || self.hidden_size % self.num_heads != 0 {
            return Err(format!(
                "hidden_size {} must be a positive multiple of num_heads {}",
                self.hidden_size, self.num_heads
            ));
        }
        Ok(())
    }
}

/// Transposed convolution with kernel == stride and no bias (MONAI's
/// `get_conv_layer(..., is_transposed=True, conv_only=True)`; weight
/// `[cin, cout, k...]`), computed as one matrix product and a reshuffle.
struct UpConv {
    w: Tensor,
    k: usize,
}

impl UpConv {
    fn new(ctx: &Ctx, nd: usize, cin: usize, cout: usize, k: usize) -> CandleResult<Self> {
        let c = ctx.pp("conv");
        let mut shape = vec![cin, cout];
        shape.extend(std::iter::repeat_n(k, nd));
        let bound = 1.0 / ((cout * k.pow(nd as u32)) as f32).sqrt();
        Ok(Self {
            w: c.param(&shape, "weight", ParamInit::Uniform(bound))?,
            k,
        })
    }

    fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        let dims = x.dims().to_vec();
        let nd = dims.len() - 2;
        let (n, cin) = (dims[0], dims[1]);
        let cout = self.w.dim(1)?;
        let kk = self.k.pow(nd as u32);
        // [N, Cin, S...] -> [N, S..., Cin] -> [M, Cin]
        let mut perm = vec![0];
        perm.extend(2..nd + 2);
        perm.push(1);
        let m: usize = dims[2..].iter().product();
        let xm = x.permute(perm)?.contiguous()?.reshape((n * m, cin))?;
        let y = xm.matmul(&self.w.reshape((cin, cout * kk))?)?;
        // [N, S..., Cout, k...] -> [N, Cout, (S0 k0), (S1 k1), ...]
        let mut shape = vec![n];
        shape.extend(&dims[2..]);
        shape.push(cout);
        shape.extend(std::iter::repeat_n(self.k, nd));
        let y = y.reshape(shape)?;
        let mut perm = vec![0, nd + 1];
        for a in 0..nd {
            perm.push(1 + a);
            perm.push(nd + 2 + a);
        }
        let mut out = vec![n, cout];
        out.extend(dims[2..].iter().map(|s| s * self.k));
        y.permute(perm)?.contiguous()?.reshape(out)
    }
}

/// MONAI `UnetResBlock` (residual) or `UnetBasicBlock`: two 3x3
/// convolutions without bias, instance norm, LeakyReLU(0.01); the residual
/// form adds `norm3(conv3(x))` (1x1) when the channels change.
struct ConvBlock {
    conv1: Conv,
    norm1: Norm,
    conv2: Conv,
    norm2: Norm,
    down: Option<(Conv, Norm)>,
    res: bool,
}

impl ConvBlock {
    fn new(ctx: &Ctx, nd: usize, cin: usize, cout: usize, res: bool) -> CandleResult<Self> {
        let inorm = |c: &Ctx| Norm::new(c, NormType::InstanceNorm, cout, 1);
        let conv1 = Conv::new(&ctx.pp("conv1").pp("conv"), nd, cin, cout, 3, 1, 1, false)?;
        let conv2 = Conv::new(&ctx.pp("conv2").pp("conv"), nd, cout, cout, 3, 1, 1, false)?;
        let down = if res && cin != cout {
            Some((
                Conv::new(&ctx.pp("conv3").pp("conv"), nd, cin, cout, 1, 1, 0, false)?,
                inorm(&ctx.pp("norm3"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            conv1,
            norm1: inorm(&ctx.pp("norm1"))?,
            conv2,
            norm2: inorm(&ctx.pp("norm2"))?,
            down,
            res,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let act = Act::LeakyRelu(0.01);
        let y = self
            .norm1
            .forward_act(&self.conv1.forward(x)?, train, Some(&act))?;
        let y = self.norm2.forward(&self.conv2.forward(&y)?, train)?;
        if !self.res {
            return act.forward(&y);
        }
        let r = match &self.down {
            Some((c, n)) => n.forward(&c.forward(x)?, train)?,
            None => x.clone(),
        };
        act.forward(&(y + r)?)
    }
}

/// MONAI `UnetrPrUpBlock`: `transp_conv_init`, then `num_layer` blocks of
/// (transposed convolution, convolution block) when `conv_block`, else
/// of transposed convolutions alone.
struct PrUpBlock {
    init: UpConv,
    blocks: Vec<(UpConv, Option<ConvBlock>)>,
}

impl PrUpBlock {
    fn new(ctx: &Ctx, cfg: &UNETRConfig, cout: usize, num_layer: usize) -> CandleResult<Self> {
        let nd = cfg.dimension;
        let init = UpConv::new(&ctx.pp("transp_conv_init"), nd, cfg.hidden_size, cout, 2)?;
        let b = ctx.pp("blocks");
        let mut blocks = Vec::with_capacity(num_layer);
        for i in 0..num_layer {
            let bi = b.pp(i);
            if cfg.conv_block {
                blocks.push((
                    UpConv::new(&bi.pp(0), nd, cout, cout, 2)?,
                    Some(ConvBlock::new(&bi.pp(1), nd, cout, cout, cfg.res_block)?),
                ));
            } else {
                blocks.push((UpConv::new(&bi, nd, cout, cout, 2)?, None));
            }
        }
        Ok(Self { init, blocks })
    }

    fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let mut y = self.init.forward(x)?;
        for (up, conv) in &self.blocks {
            y = up.forward(&y)?;
            if let Some(c) = conv {
                y = c.forward(&y, train)?;
            }
        }
        Ok(y)
    }
}

/// MONAI `UnetrUpBlock`: transposed convolution, concatenation with the
/// skip, convolution block.
struct UpBlock {
    transp_conv: UpConv,
    conv_block: ConvBlock,
}

impl UpBlock {
    fn new(ctx: &Ctx, cfg: &UNETRConfig, cin: usize, cout: usize) -> CandleResult<Self> {
        let nd = cfg.dimension;
        Ok(Self {
            transp_conv: UpConv::new(&ctx.pp("transp_conv"), nd, cin, cout, 2)?,
            conv_block: ConvBlock::new(&ctx.pp("conv_block"), nd, 2 * cout, cout, cfg.res_block)?,
        })
    }

    fn forward(&self, x: &Tensor, skip: &Tensor, train: bool) -> CandleResult<Tensor> {
        let y = self.transp_conv.forward(x)?;
        self.conv_block.forward(&cat_channels(&[&y, skip])?, train)
    }
}

/// UNETR: a ViT encoder (16^d patches, 12 blocks) whose 3rd, 6th, 9th and
/// final (normed) token maps feed a convolutional decoder with skip paths
/// up-sampled by transposed convolutions, as MONAI's `UNETR`.
/// Input `[N, in_chns, ...img_size]` (a 2D UNETR also takes
/// `[N, in_chns, D, H, W]` and folds the depth).
pub struct UNETR {
    cfg: UNETRConfig,
    params: Vec<ParamInfo>,
    vit: Vit,
    encoder1: ConvBlock,
    encoder2: PrUpBlock,
    encoder3: PrUpBlock,
    encoder4: PrUpBlock,
    decoder5: UpBlock,
    decoder4: UpBlock,
    decoder3: UpBlock,
    decoder2: UpBlock,
    out: Conv,
}

impl UNETR {
    /// Builds the network (weights created or read through `vb`).
    pub fn new(cfg: UNETRConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: UNETRConfig) -> CandleResult<Self> {
        let nd = cfg.dimension;
        let f = cfg.feature_size;
        let h = cfg.hidden_size;
        let vit = Vit::new(
            &ctx.pp("vit"),
            cfg.in_chns,
            &cfg.image_size(),
            UNETR_PATCH,
            h,
            cfg.mlp_dim,
            UNETR_LAYERS,
            cfg.num_heads,
            cfg.qkv_bias,
        )?;
        let encoder1 = ConvBlock::new(
            &ctx.pp("encoder1").pp("layer"),
            nd,
            cfg.in_chns,
            f,
            cfg.res_block,
        )?;
        let encoder2 = PrUpBlock::new(&ctx.pp("encoder2"), &cfg, 2 * f, 2)?;
        let encoder3 = PrUpBlock::new(&ctx.pp("encoder3"), &cfg, 4 * f, 1)?;
        let encoder4 = PrUpBlock::new(&ctx.pp("encoder4"), &cfg, 8 * f, 0)?;
        let decoder5 = UpBlock::new(&ctx.pp("decoder5"), &cfg, h, 8 * f)?;
        let decoder4 = UpBlock::new(&ctx.pp("decoder4"), &cfg, 8 * f, 4 * f)?;
        let decoder3 = UpBlock::new(&ctx.pp("decoder3"), &cfg, 4 * f, 2 * f)?;
        let decoder2 = UpBlock::new(&ctx.pp("decoder2"), &cfg, 2 * f, f)?;
        let out = Conv::new(
            &ctx.pp("out").pp("conv").pp("conv"),
            nd,
            f,
            cfg.class_num,
            1,
            1,
            0,
            true,
        )?;
        Ok(Self {
            params: ctx.params_snapshot(),
            cfg,
            vit,
            encoder1,
            encoder2,
            encoder3,
            encoder4,
            decoder5,
            decoder4,
            decoder3,
            decoder2,
            out,
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &UNETRConfig {
        &self.cfg
    }

    fn check(&self, x: &Tensor) -> CandleResult<()> {
        let nd = self.cfg.dimension;
        let ok_rank = x.rank() == nd + 2 || (nd == 2 && x.rank() == 5);
        if !ok_rank || x.dim(1)? != self.cfg.in_chns {
            candle_core::bail!(
                "{}: UNETR ({nd}D) takes [N, {}, ...spatial] input, got shape {:?}",
                self.cfg.name,
                self.cfg.in_chns,
                x.dims()
            )
        }
        let spatial = &x.dims()[x.rank() - nd..];
        if spatial != self.cfg.image_size().as_slice() {
            candle_core::bail!(
                "{}: UNETR was built for img_size {:?} (its position embeddings are learnt for it), got input {:?}",
                self.cfg.name,
                self.cfg.image_size(),
                x.dims()
            )
        }
        Ok(())
    }

    /// Tokens `[N, L, hidden]` to a feature map `[N, hidden, ...img/16]`
    /// (MONAI `proj_feat`).
    fn proj_feat(&self, t: &Tensor) -> CandleResult<Tensor> {
        let (n, _, c) = t.dims3()?;
        let mut shape = vec![n];
        shape.extend(self.cfg.image_size().iter().map(|s| s / UNETR_PATCH));
        shape.push(c);
        let nd = self.cfg.dimension;
        let mut perm = vec![0, nd + 1];
        perm.extend(1..=nd);
        t.reshape(shape)?.permute(perm)?.contiguous()
    }

    /// The ViT's feature maps: blocks 3, 6, 9 and the normed output.
    fn vit_maps(&self, x: &Tensor) -> CandleResult<Vec<Tensor>> {
        let (last, hidden) = self.vit.forward(x)?;
        let mut maps = Vec::with_capacity(4);
        for i in [3, 6, 9] {
            maps.push(self.proj_feat(&hidden[i - 1])?);
        }
        maps.push(self.proj_feat(&last)?);
        Ok(maps)
    }

    fn forward_nd(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let maps = self.vit_maps(x)?;
        let enc1 = self.encoder1.forward(x, train)?;
        let enc2 = self.encoder2.forward(&maps[0], train)?;
        let enc3 = self.encoder3.forward(&maps[1], train)?;
        let enc4 = self.encoder4.forward(&maps[2], train)?;
        let dec3 = self.decoder5.forward(&maps[3], &enc4, train)?;
        let dec2 = self.decoder4.forward(&dec3, &enc3, train)?;
        let dec1 = self.decoder3.forward(&dec2, &enc2, train)?;
        let out = self.decoder2.forward(&dec1, &enc1, train)?;
        self.out.forward(&out)
    }
}

impl SegNetwork for UNETR {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput> {
        self.check(x)?;
        logits_only(x, self.cfg.dimension == 2, |x| self.forward_nd(x, train))
    }

    /// The ViT's token maps after blocks 3, 6, 9 and the final norm, each
    /// `[N, hidden, ...img/16]` (a 2D UNETR folds a 5D input).
    fn encode(&self, x: &Tensor, _train: bool) -> CandleResult<Option<Vec<Tensor>>> {
        self.check(x)?;
        if self.cfg.dimension == 2 && x.rank() == 5 {
            let (x4, _, _) = crate::fold_depth(x)?;
            return Ok(Some(self.vit_maps(&x4)?));
        }
        Ok(Some(self.vit_maps(x)?))
    }

    fn encoder_prefixes(&self) -> Vec<String> {
        vec!["vit.".to_string()]
    }

    unet_meta!(custom_input_size);

    /// Multiples of `img_size`, at least `img_size` (the learnt position
    /// embeddings fix the size: inference pads a smaller input up to it).
    fn input_size(&self) -> crate::InputSize {
        let size = self.cfg.image_size();
        let mut s = crate::InputSize::any(size.len());
        s.multiple = size.clone();
        s.minimum = size;
        s
    }
}

/// Builds a UNETR from its JSON configuration (registry `UNETR`); `forced`
/// fixes the dimension (`UNETR2D`, `UNETR3D`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
    forced: Option<usize>,
) -> Result<Box<dyn SegNetwork>> {
    let mut cfg: UNETRConfig = serde_json::from_value(config.clone())
        .map_err(|e| NetError::Config(format!("{e} in {config}")))?;
    if let Some(d) = forced {
        if config.get("dimension").is_some() && cfg.dimension != d {
            return Err(NetError::Config(format!(
                "{}: dimension {} contradicts the name",
                cfg.name, cfg.dimension
            )));
        }
        cfg.dimension = d;
    }
    Ok(Box::new(UNETR::new(cfg, vb)?))
}
