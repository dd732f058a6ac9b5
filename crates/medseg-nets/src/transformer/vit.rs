//! ViT encoder blocks after MONAI (`PatchEmbeddingBlock`, `MLPBlock`,
//! `TransformerBlock`, `ViT`).

use candle_core::{Result, Tensor};

use crate::layers::{Conv, Ctx, ParamInit};
use crate::transformer::attention::SelfAttention;

/// Layer normalisation over the last axis with affine parameters
/// (PyTorch `nn.LayerNorm(c)`, eps 1e-5): `medseg_ops::layer_norm`
/// (fused kernel on f32 CPU, candle ops elsewhere).
pub struct LayerNorm {
    gamma: Tensor,
    beta: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// `c` features, `weight` 1 and `bias` 0 initially.
    pub(crate) fn new(ctx: &Ctx, c: usize) -> Result<Self> {
        Ok(Self {
            gamma: ctx.param(&[c], "weight", ParamInit::Const(1.0))?,
            beta: ctx.param(&[c], "bias", ParamInit::Const(0.0))?,
            eps: 1e-5,
        })
    }

    /// Normalises `[..., c]` over its last axis (biased variance).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        medseg_ops::layer_norm(x, &self.gamma, &self.beta, self.eps)
    }
}

/// Linear layer on `[..., in]` with PyTorch's initialisation.
struct Dense {
    w: Tensor,
    b: Tensor,
}

impl Dense {
    fn new(ctx: &Ctx, cin: usize, cout: usize) -> Result<Self> {
        let bound = 1.0 / (cin as f32).sqrt();
        Ok(Self {
            w: ctx.param(&[cout, cin], "weight", ParamInit::Uniform(bound))?,
            b: ctx.param(&[cout], "bias", ParamInit::Uniform(bound))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.broadcast_matmul(&self.w.t()?)?.broadcast_add(&self.b)
    }
}

/// MONAI `MLPBlock`: `linear2(gelu(linear1(x)))` with the exact (erf)
/// GELU, PyTorch's default.
pub struct Mlp {
    linear1: Dense,
    linear2: Dense,
}

impl Mlp {
    /// `hidden -> mlp_dim -> hidden`.
    pub(crate) fn new(ctx: &Ctx, hidden: usize, mlp_dim: usize) -> Result<Self> {
        Ok(Self {
            linear1: Dense::new(&ctx.pp("linear1"), hidden, mlp_dim)?,
            linear2: Dense::new(&ctx.pp("linear2"), mlp_dim, hidden)?,
        })
    }

    /// `[..., hidden] -> [..., hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear2.forward(&self.linear1.forward(x)?.gelu_erf()?)
    }
}

/// Pre-norm transformer block (MONAI `TransformerBlock`):
/// `x + attn(norm1(x))`, then `x + mlp(norm2(x))`.
///
/// MONAI 1.4 and later also create a `norm_cross_attn` layer norm in every
/// block, unused without cross-attention; it is created here too (and
/// likewise unused), so that MONAI state dicts load by name and parameter
/// counts agree with MONAI's.
pub struct TransformerBlock {
    mlp: Mlp,
    norm1: LayerNorm,
    attn: SelfAttention,
    norm2: LayerNorm,
    _norm_cross_attn: LayerNorm,
}

impl TransformerBlock {
    /// A block of `hidden` channels, `heads` heads and an MLP of `mlp_dim`.
    pub(crate) fn new(
        ctx: &Ctx,
        hidden: usize,
        mlp_dim: usize,
        heads: usize,
        qkv_bias: bool,
    ) -> Result<Self> {
        Ok(Self {
            mlp: Mlp::new(&ctx.pp("mlp"), hidden, mlp_dim)?,
            norm1: LayerNorm::new(&ctx.pp("norm1"), hidden)?,
            attn: SelfAttention::new(&ctx.pp("attn"), hidden, heads, qkv_bias)?,
            norm2: LayerNorm::new(&ctx.pp("norm2"), hidden)?,
            _norm_cross_attn: LayerNorm::new(&ctx.pp("norm_cross_attn"), hidden)?,
        })
    }

    /// `[N, L, hidden] -> [N, L, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.norm1.forward(x)?)?)?;
        &x + self.mlp.forward(&self.norm2.forward(&x)?)?
    }
}

/// MONAI `PatchEmbeddingBlock` (`proj_type = "conv"`): a convolution with
/// kernel and stride `patch` (`patch_embeddings`), flattened to tokens
/// `[N, L, hidden]`, plus learnt `position_embeddings [1, L, hidden]`.
pub struct PatchEmbedding {
    conv: Conv,
    pos: Tensor,
}

impl PatchEmbedding {
    /// Embeds an `img_size` image (2D or 3D by `img_size.len()`).
    pub(crate) fn new(
        ctx: &Ctx,
        in_chns: usize,
        img_size: &[usize],
        patch: usize,
        hidden: usize,
    ) -> Result<Self> {
        let nd = img_size.len();
        let tokens: usize = img_size.iter().map(|s| s / patch).product();
        let conv = Conv::new(
            &ctx.pp("patch_embeddings"),
            nd,
            in_chns,
            hidden,
            patch,
            patch,
            0,
            true,
        )?;
        // MONAI draws them from a truncated normal of std 0.02
        let pos = ctx.param(
            &[1, tokens, hidden],
            "position_embeddings",
            ParamInit::Uniform(0.02 * 3f32.sqrt()),
        )?;
        Ok(Self { conv, pos })
    }

    /// `[N, C, ...spatial] -> [N, L, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv.forward(x)?;
        let (n, c) = (y.dim(0)?, y.dim(1)?);
        let y = y.reshape((n, c, ()))?.transpose(1, 2)?;
        y.broadcast_add(&self.pos)
    }
}

/// MONAI `ViT` without a classification token: patch embedding, `layers`
/// transformer blocks and a final layer norm.
pub struct Vit {
    patch_embedding: PatchEmbedding,
    blocks: Vec<TransformerBlock>,
    norm: LayerNorm,
}

impl Vit {
    /// A ViT over `img_size` images cut into `patch`-sized patches.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        ctx: &Ctx,
        in_chns: usize,
        img_size: &[usize],
        patch: usize,
        hidden: usize,
        mlp_dim: usize,
        layers: usize,
        heads: usize,
        qkv_bias: bool,
    ) -> Result<Self> {
        let patch_embedding =
            PatchEmbedding::new(&ctx.pp("patch_embedding"), in_chns, img_size, patch, hidden)?;
        let b = ctx.pp("blocks");
        let blocks = (0..layers)
            .map(|i| TransformerBlock::new(&b.pp(i), hidden, mlp_dim, heads, qkv_bias))
            .collect::<Result<Vec<_>>>()?;
        let norm = LayerNorm::new(&ctx.pp("norm"), hidden)?;
        Ok(Self {
            patch_embedding,
            blocks,
            norm,
        })
    }

    /// The normed final tokens and every block's output (before the norm).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let mut h = self.patch_embedding.forward(x)?;
        let mut hidden = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            h = b.forward(&h)?;
            hidden.push(h.clone());
        }
        Ok((self.norm.forward(&h)?, hidden))
    }
}
