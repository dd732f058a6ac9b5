//! Swin Transformer blocks (Liu et al., "Swin Transformer: Hierarchical
//! Vision Transformer using Shifted Windows", ICCV 2021) in the layout of
//! Swin-UNet (Cao et al., 2021; the authors' code, HuCaoFighting/Swin-Unet,
//! `networks/swin_transformer_unet_skip_expand_decoder_sys.py`): window
//! attention with a relative position bias table, shifted windows with their
//! attention mask, patch merging (downsampling), patch expanding
//! (upsampling, x2 and the final x4) and the encoder/decoder stages built of
//! them (`BasicLayer`, `BasicLayer_up`).
//!
//! Tensors are token sequences `[B, H * W, C]` in row-major order, as in the
//! reference; module and parameter names follow it (`blocks.M.norm1`,
//! `attn.relative_position_bias_table`, `attn.qkv`, `attn.proj`, `norm2`,
//! `mlp.fc1`, `mlp.fc2`, `downsample.reduction`, `downsample.norm`,
//! `upsample.expand`, `upsample.norm`), so that the authors' checkpoints map
//! by name. Every linear layer is recorded for the summary's multiply-add
//! count (kind `Linear`).

use std::sync::{Arc, Mutex};

use candle_core::{Result, Tensor, D};
use rand_chacha::ChaCha8Rng;

use crate::layers::{bernoulli_mask, record, Ctx, Dropout, ParamInit};
use crate::transformer::vit::LayerNorm;

/// Linear layer on `[..., in]` (PyTorch `nn.Linear`, bias optional),
/// recorded as a `Linear` layer with `rows * in * out` multiply-adds.
pub struct SwinLinear {
    w: Tensor,
    b: Option<Tensor>,
    name: String,
}

impl SwinLinear {
    /// `cin -> cout` with PyTorch's initialisation.
    pub(crate) fn new(ctx: &Ctx, cin: usize, cout: usize, bias: bool) -> Result<Self> {
        let bound = 1.0 / (cin as f32).sqrt();
        let w = ctx.param(&[cout, cin], "weight", ParamInit::Uniform(bound))?;
        let b = if bias {
            Some(ctx.param(&[cout], "bias", ParamInit::Uniform(bound))?)
        } else {
            None
        };
        Ok(Self {
            w,
            b,
            name: ctx.prefix(),
        })
    }

    /// `[..., in] -> [..., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (cout, cin) = self.w.dims2()?;
        let rows = x.elem_count() / cin;
        let mut y = x.reshape((rows, cin))?.matmul(&self.w.t()?)?;
        if let Some(b) = &self.b {
            y = y.broadcast_add(b)?;
        }
        let mut out = dims;
        let last = out.len() - 1;
        out[last] = cout;
        let y = y.reshape(out)?;
        let params = self.w.elem_count() + self.b.as_ref().map_or(0, |b| b.elem_count());
        record(&self.name, "Linear", &y, params, (rows * cin * cout) as u64);
        Ok(y)
    }
}

/// Stochastic depth per sample (timm `DropPath`): in training a sample's
/// residual branch is zeroed with probability `p` and the others are scaled
/// by `1 / (1 - p)`; identity in eval mode or when `p` is 0.
pub struct DropPath {
    p: f64,
    rng: Arc<Mutex<ChaCha8Rng>>,
}

impl DropPath {
    pub(crate) fn new(ctx: &Ctx, p: f64) -> Self {
        Self {
            p,
            rng: ctx.drop_rng.clone(),
        }
    }

    /// `x` (`[B, ...]`) with whole samples dropped in training.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.p <= 0.0 {
            return Ok(x.clone());
        }
        let mut shape = vec![1; x.rank()];
        shape[0] = x.dim(0)?;
        let mask = bernoulli_mask(&self.rng, &shape, 1.0 - self.p, x.device())?;
        x.broadcast_mul(&mask.to_dtype(x.dtype())?)
    }
}

/// The reference's `Mlp`: `fc2(drop(gelu(fc1(x))))` then dropout, with the
/// exact (erf) GELU.
pub struct SwinMlp {
    fc1: SwinLinear,
    fc2: SwinLinear,
    drop: Dropout,
}

impl SwinMlp {
    /// `dim -> hidden -> dim`, dropout `drop`.
    pub(crate) fn new(ctx: &Ctx, dim: usize, hidden: usize, drop: f64) -> Result<Self> {
        Ok(Self {
            fc1: SwinLinear::new(&ctx.pp("fc1"), dim, hidden, true)?,
            fc2: SwinLinear::new(&ctx.pp("fc2"), hidden, dim, true)?,
            drop: Dropout::new(ctx, drop),
        })
    }

    /// `[..., dim] -> [..., dim]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self
            .drop
            .forward(&self.fc1.forward(x)?.gelu_erf()?, train)?;
        self.drop.forward(&self.fc2.forward(&y)?, train)
    }
}

/// Settings shared by every Swin block of a network (the reference's
/// `SwinTransformerBlock` arguments other than its size and position).
#[derive(Clone, Debug, PartialEq)]
pub struct SwinSpec {
    /// Side of the attention windows before clipping to the resolution.
    pub window_size: usize,
    /// Width of the MLPs relative to the tokens' (`mlp_ratio`).
    pub mlp_ratio: f64,
    /// Bias in the `qkv` projection.
    pub qkv_bias: bool,
    /// Attention scale; `None`: `head_dim ^ -0.5`.
    pub qk_scale: Option<f64>,
    /// Dropout after the MLP layers and the attention's projection.
    pub drop: f64,
    /// Dropout of the attention weights.
    pub attn_drop: f64,
}

impl Default for SwinSpec {
    /// The reference's defaults: window 7, `mlp_ratio` 4, `qkv` bias, no
    /// dropout.
    fn default() -> Self {
        Self {
            window_size: 7,
            mlp_ratio: 4.0,
            qkv_bias: true,
            qk_scale: None,
            drop: 0.0,
            attn_drop: 0.0,
        }
    }
}

/// The reference's `(window, shift)` for a block at `res`: the shift is
/// half the configured window on odd blocks, and a resolution no larger
/// than the window makes it one window without shift.
pub fn window_and_shift(res: (usize, usize), window_size: usize, odd: bool) -> (usize, usize) {
    let shift = if odd { window_size / 2 } else { 0 };
    let m = res.0.min(res.1);
    if m <= window_size {
        (m, 0)
    } else {
        (window_size, shift)
    }
}

/// Window multi-head self-attention with a learnt relative position bias
/// (the reference's `WindowAttention`): `relative_position_bias_table`
/// `[(2 ws - 1)^2, heads]`, `qkv`, `proj`.
pub struct WindowAttention {
    qkv: SwinLinear,
    proj: SwinLinear,
    table: Tensor,
    /// `[ws^2 * ws^2]` rows of the table, the reference's
    /// `relative_position_index` flattened.
    index: Tensor,
    heads: usize,
    n: usize,
    scale: f64,
    attn_drop: Dropout,
    proj_drop: Dropout,
}

impl WindowAttention {
    /// `dim` channels over `ws x ws` windows with `heads` heads.
    pub(crate) fn new(
        ctx: &Ctx,
        dim: usize,
        ws: usize,
        heads: usize,
        spec: &SwinSpec,
    ) -> Result<Self> {
        let side = 2 * ws - 1;
        // the reference draws it from a truncated normal of std 0.02
        let table = ctx.param(
            &[side * side, heads],
            "relative_position_bias_table",
            ParamInit::Uniform(0.02 * 3f32.sqrt()),
        )?;
        let n = ws * ws;
        let mut index = Vec::with_capacity(n * n);
        for i in 0..n {
            let (hi, wi) = (i / ws, i % ws);
            for j in 0..n {
                let (hj, wj) = (j / ws, j % ws);
                let dh = hi + ws - 1 - hj;
                let dw = wi + ws - 1 - wj;
                index.push((dh * side + dw) as u32);
            }
        }
        let index = Tensor::from_vec(index, n * n, ctx.vb.device())?;
        let hd = dim / heads;
        Ok(Self {
            qkv: SwinLinear::new(&ctx.pp("qkv"), dim, 3 * dim, spec.qkv_bias)?,
            proj: SwinLinear::new(&ctx.pp("proj"), dim, dim, true)?,
            table,
            index,
            heads,
            n,
            scale: spec.qk_scale.unwrap_or(1.0 / (hd as f64).sqrt()),
            attn_drop: Dropout::new(ctx, spec.attn_drop),
            proj_drop: Dropout::new(ctx, spec.drop),
        })
    }

    /// The bias `[heads, N, N]` gathered from the table.
    pub fn relative_position_bias(&self) -> Result<Tensor> {
        self.table
            .index_select(&self.index, 0)?
            .reshape((self.n, self.n, self.heads))?
            .permute((2, 0, 1))?
            .contiguous()
    }

    /// `x` `[B * nW, N, C]` (windows of `N` tokens), `mask` `[nW, N, N]`
    /// (0 or -100) for shifted windows.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let (bw, n, c) = x.dims3()?;
        let hd = c / self.heads;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((bw, n, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)?.contiguous()? * self.scale)?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let bias = self.relative_position_bias()?.to_dtype(x.dtype())?;
        let mut attn = q.matmul(&k.t()?)?.broadcast_add(&bias.unsqueeze(0)?)?;
        if let Some(m) = mask {
            let nw = m.dim(0)?;
            attn = attn
                .reshape((bw / nw, nw, self.heads, n, n))?
                .broadcast_add(&m.unsqueeze(1)?.unsqueeze(0)?.to_dtype(x.dtype())?)?
                .reshape((bw, self.heads, n, n))?;
        }
        let attn = candle_nn::ops::softmax(&attn, D::Minus1)?;
        let attn = self.attn_drop.forward(&attn, train)?;
        let y = attn
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((bw, n, c))?;
        self.proj_drop.forward(&self.proj.forward(&y)?, train)
    }
}

/// `[B, H, W, C] -> [B * nW, ws * ws, C]` (the reference's
/// `window_partition`, windows in row-major order per image).
pub fn window_partition(x: &Tensor, ws: usize) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    x.reshape(vec![b, h / ws, ws, w / ws, ws, c])?
        .permute(vec![0, 1, 3, 2, 4, 5])?
        .contiguous()?
        .reshape((b * (h / ws) * (w / ws), ws * ws, c))
}

/// Inverse of [`window_partition`]: `[B * nW, ws * ws, C] -> [B, H, W, C]`.
pub fn window_reverse(x: &Tensor, ws: usize, h: usize, w: usize) -> Result<Tensor> {
    let (bw, _, c) = x.dims3()?;
    let b = bw / ((h / ws) * (w / ws));
    x.reshape(vec![b, h / ws, w / ws, ws, ws, c])?
        .permute(vec![0, 1, 3, 2, 4, 5])?
        .contiguous()?
        .reshape((b, h, w, c))
}

/// The shifted windows' attention mask `[nW, ws^2, ws^2]`: 0 between tokens
/// of the same region of the rolled map, -100 otherwise (the reference's
/// `attn_mask`).
pub fn shifted_window_mask(
    res: (usize, usize),
    ws: usize,
    shift: usize,
    dev: &candle_core::Device,
) -> Result<Tensor> {
    let (h, w) = res;
    let region = |i: usize, len: usize| -> usize {
        if i < len - ws {
            0
        } else if i < len - shift {
            1
        } else {
            2
        }
    };
    let (nh, nw) = (h / ws, w / ws);
    let n = ws * ws;
    let mut v = Vec::with_capacity(nh * nw * n * n);
    for wh in 0..nh {
        for ww in 0..nw {
            let ids: Vec<usize> = (0..n)
                .map(|t| 3 * region(wh * ws + t / ws, h) + region(ww * ws + t % ws, w))
                .collect();
            for a in &ids {
                for b in &ids {
                    v.push(if a == b { 0f32 } else { -100f32 });
                }
            }
        }
    }
    Tensor::from_vec(v, (nh * nw, n, n), dev)
}

/// One Swin Transformer block (the reference's `SwinTransformerBlock`):
/// `x + attn(norm1(x))` over (shifted) windows, then `x + mlp(norm2(x))`,
/// each residual branch through stochastic depth.
pub struct SwinBlock {
    norm1: LayerNorm,
    attn: WindowAttention,
    norm2: LayerNorm,
    mlp: SwinMlp,
    drop_path: DropPath,
    res: (usize, usize),
    ws: usize,
    shift: usize,
    mask: Option<Tensor>,
}

impl SwinBlock {
    /// A block of `dim` channels at resolution `res` (tokens `res.0 *
    /// res.1`); `odd` blocks shift their windows by half a window.
    pub(crate) fn new(
        ctx: &Ctx,
        dim: usize,
        res: (usize, usize),
        heads: usize,
        odd: bool,
        drop_path: f64,
        spec: &SwinSpec,
    ) -> Result<Self> {
        let (ws, shift) = window_and_shift(res, spec.window_size, odd);
        if ws == 0 || res.0 % ws != 0 || res.1 % ws != 0 {
            candle_core::bail!(
                "{}: resolution {res:?} is not a multiple of the window {ws}",
                ctx.prefix()
            )
        }
        let mask = if shift > 0 {
            Some(shifted_window_mask(res, ws, shift, ctx.vb.device())?)
        } else {
            None
        };
        let hidden = (dim as f64 * spec.mlp_ratio) as usize;
        Ok(Self {
            norm1: LayerNorm::new(&ctx.pp("norm1"), dim)?,
            attn: WindowAttention::new(&ctx.pp("attn"), dim, ws, heads, spec)?,
            norm2: LayerNorm::new(&ctx.pp("norm2"), dim)?,
            mlp: SwinMlp::new(&ctx.pp("mlp"), dim, hidden, spec.drop)?,
            drop_path: DropPath::new(ctx, drop_path),
            res,
            ws,
            shift,
            mask,
        })
    }

    /// The window side and shift after clipping to the resolution.
    pub fn window(&self) -> (usize, usize) {
        (self.ws, self.shift)
    }

    /// `[B, H * W, C] -> [B, H * W, C]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (h, w) = self.res;
        let (b, l, c) = x.dims3()?;
        if l != h * w {
            candle_core::bail!("Swin block at {h}x{w} got {l} tokens")
        }
        let mut y = self.norm1.forward(x)?.reshape((b, h, w, c))?;
        let s = self.shift;
        if s > 0 {
            y = y.roll(-(s as i32), 1)?.roll(-(s as i32), 2)?;
        }
        let win = window_partition(&y, self.ws)?;
        let win = self.attn.forward(&win, self.mask.as_ref(), train)?;
        let mut y = window_reverse(&win, self.ws, h, w)?;
        if s > 0 {
            y = y.roll(s as i32, 1)?.roll(s as i32, 2)?;
        }
        let y = y.reshape((b, l, c))?;
        let x = (x + self.drop_path.forward(&y, train)?)?;
        let m = self.mlp.forward(&self.norm2.forward(&x)?, train)?;
        &x + self.drop_path.forward(&m, train)?
    }
}

/// Patch merging (the reference's `PatchMerging`): every 2x2 group of
/// tokens concatenated (`x[0::2, 0::2]`, `x[1::2, 0::2]`, `x[0::2, 1::2]`,
/// `x[1::2, 1::2]`), normed (`norm`, 4C) and reduced to 2C (`reduction`, no
/// bias): `[B, H * W, C] -> [B, H/2 * W/2, 2C]`.
pub struct PatchMerging {
    norm: LayerNorm,
    reduction: SwinLinear,
    res: (usize, usize),
}

impl PatchMerging {
    /// Merges a `res` map of `dim` channels.
    pub(crate) fn new(ctx: &Ctx, res: (usize, usize), dim: usize) -> Result<Self> {
        Ok(Self {
            reduction: SwinLinear::new(&ctx.pp("reduction"), 4 * dim, 2 * dim, false)?,
            norm: LayerNorm::new(&ctx.pp("norm"), 4 * dim)?,
            res,
        })
    }

    /// `[B, H * W, C] -> [B, H/2 * W/2, 2C]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (h, w) = self.res;
        let (b, _, c) = x.dims3()?;
        // [B, H/2, dh, W/2, dw, C] -> [B, H/2, W/2, dw, dh, C]
        let y = x
            .reshape(vec![b, h / 2, 2, w / 2, 2, c])?
            .permute(vec![0, 1, 3, 4, 2, 5])?
            .contiguous()?
            .reshape((b, (h / 2) * (w / 2), 4 * c))?;
        self.reduction.forward(&self.norm.forward(&y)?)
    }
}

/// Patch expanding (the reference's `PatchExpand` and
/// `FinalPatchExpand_X4`): a linear layer without bias (`expand`) widens
/// the tokens, each of which then becomes an `s x s` block of tokens
/// (`b h w (p1 p2 c) -> b (h p1) (w p2) c`), normed (`norm`).
/// `PatchExpand`: `s = 2`, `C -> 2C` then `C/2` per token;
/// `FinalPatchExpand_X4`: `s = 4`, `C -> 16C` then `C` per token.
pub struct PatchExpand {
    expand: SwinLinear,
    norm: LayerNorm,
    res: (usize, usize),
    scale: usize,
}

impl PatchExpand {
    /// The x2 expansion of a `res` map of `dim` channels (`dim / 2` out).
    pub(crate) fn new(ctx: &Ctx, res: (usize, usize), dim: usize) -> Result<Self> {
        Ok(Self {
            expand: SwinLinear::new(&ctx.pp("expand"), dim, 2 * dim, false)?,
            norm: LayerNorm::new(&ctx.pp("norm"), dim / 2)?,
            res,
            scale: 2,
        })
    }

    /// The final expansion by `scale` (4 in the reference) of a `res` map of
    /// `dim` channels (`dim` out).
    pub(crate) fn final_expand(
        ctx: &Ctx,
        res: (usize, usize),
        dim: usize,
        scale: usize,
    ) -> Result<Self> {
        Ok(Self {
            expand: SwinLinear::new(&ctx.pp("expand"), dim, scale * scale * dim, false)?,
            norm: LayerNorm::new(&ctx.pp("norm"), dim)?,
            res,
            scale,
        })
    }

    /// `[B, H * W, C] -> [B, sH * sW, C']`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (h, w) = self.res;
        let s = self.scale;
        let y = self.expand.forward(x)?;
        let (b, _, c) = y.dims3()?;
        let co = c / (s * s);
        let y = y
            .reshape(vec![b, h, w, s, s, co])?
            .permute(vec![0, 1, 3, 2, 4, 5])?
            .contiguous()?
            .reshape((b, h * s * w * s, co))?;
        self.norm.forward(&y)
    }
}

/// The stochastic-depth rates of `n` blocks rising linearly from 0 to
/// `rate` (the reference's `torch.linspace(0, drop_path_rate, n)`).
pub fn drop_path_rates(rate: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![0.0],
        _ => (0..n).map(|i| rate * i as f64 / (n - 1) as f64).collect(),
    }
}

/// `blocks.M` of a stage: blocks alternating plain and shifted windows.
fn build_blocks(
    ctx: &Ctx,
    dim: usize,
    res: (usize, usize),
    heads: usize,
    drop_path: &[f64],
    spec: &SwinSpec,
) -> Result<Vec<SwinBlock>> {
    let b = ctx.pp("blocks");
    drop_path
        .iter()
        .enumerate()
        .map(|(i, &dp)| SwinBlock::new(&b.pp(i), dim, res, heads, i % 2 == 1, dp, spec))
        .collect()
}

/// An encoder stage (the reference's `BasicLayer`): `blocks.0..depth`, then
/// optionally `downsample` ([`PatchMerging`]).
pub struct SwinStage {
    blocks: Vec<SwinBlock>,
    downsample: Option<PatchMerging>,
}

impl SwinStage {
    /// `drop_path.len()` blocks of `dim` channels at `res`.
    pub(crate) fn new(
        ctx: &Ctx,
        dim: usize,
        res: (usize, usize),
        heads: usize,
        drop_path: &[f64],
        spec: &SwinSpec,
        downsample: bool,
    ) -> Result<Self> {
        Ok(Self {
            blocks: build_blocks(ctx, dim, res, heads, drop_path, spec)?,
            downsample: if downsample {
                Some(PatchMerging::new(&ctx.pp("downsample"), res, dim)?)
            } else {
                None
            },
        })
    }

    /// The blocks.
    pub fn blocks(&self) -> &[SwinBlock] {
        &self.blocks
    }

    /// `[B, L, C]` through the blocks and the downsampling.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.clone();
        for b in &self.blocks {
            y = b.forward(&y, train)?;
        }
        match &self.downsample {
            Some(d) => d.forward(&y),
            None => Ok(y),
        }
    }
}

/// A decoder stage (the reference's `BasicLayer_up`): `blocks.0..depth`,
/// then optionally `upsample` ([`PatchExpand`], x2).
pub struct SwinStageUp {
    blocks: Vec<SwinBlock>,
    upsample: Option<PatchExpand>,
}

impl SwinStageUp {
    /// `drop_path.len()` blocks of `dim` channels at `res`.
    pub(crate) fn new(
        ctx: &Ctx,
        dim: usize,
        res: (usize, usize),
        heads: usize,
        drop_path: &[f64],
        spec: &SwinSpec,
        upsample: bool,
    ) -> Result<Self> {
        Ok(Self {
            blocks: build_blocks(ctx, dim, res, heads, drop_path, spec)?,
            upsample: if upsample {
                Some(PatchExpand::new(&ctx.pp("upsample"), res, dim)?)
            } else {
                None
            },
        })
    }

    /// `[B, L, C]` through the blocks and the upsampling.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.clone();
        for b in &self.blocks {
            y = b.forward(&y, train)?;
        }
        match &self.upsample {
            Some(u) => u.forward(&y),
            None => Ok(y),
        }
    }
}

/// Tokens `[B, H * W, C]` as a feature map `[B, C, H, W]`.
pub fn tokens_to_map(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (b, _, c) = x.dims3()?;
    x.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?.contiguous()
}

/// A feature map `[B, C, H, W]` as tokens `[B, H * W, C]`.
pub fn map_to_tokens(x: &Tensor) -> Result<Tensor> {
    let (b, c, _, _) = x.dims4()?;
    x.reshape((b, c, ()))?.transpose(1, 2)?.contiguous()
}
