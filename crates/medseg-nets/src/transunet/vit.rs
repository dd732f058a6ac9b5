//! TransUNet's ViT with the authors' module names (`networks/
//! vit_seg_modeling.py`, github Beckschen/TransUNet: `Embeddings`,
//! `Attention`, `Mlp`, `Block`, `Encoder`), so that their state dicts, and
//! the released ViT `.npz` weights by the authors' own mapping
//! (`load_from`), land on the same names.
//!
//! The shared `crate::transformer` blocks follow MONAI instead (one fused
//! `qkv` layer, `linear1/linear2`, `norm1/norm2`, LayerNorm eps 1e-5); the
//! authors' ViT has separate `query/key/value/out` layers, `ffn.fc1/fc2`,
//! `attention_norm/ffn_norm` and LayerNorm eps 1e-6, hence this file.

use candle_core::{Result as CandleResult, Tensor, D};

use crate::backbones::resnetv2::ResNetV2;
use crate::layers::{record, Conv, Ctx, Dropout, ParamInit};

/// Fully connected layer on `[..., in]` (PyTorch `nn.Linear`, parameters
/// `weight [out, in]`, `bias [out]`), recorded for the summary's
/// multiply-add count.
pub(crate) struct Linear {
    w: Tensor,
    b: Tensor,
    name: String,
}

impl Linear {
    /// PyTorch's default initialisation (uniform in `+-1 / sqrt(in)`).
    pub(crate) fn new(ctx: &Ctx, cin: usize, cout: usize) -> CandleResult<Self> {
        let bound = 1.0 / (cin as f32).sqrt();
        Self::with_init(
            ctx,
            cin,
            cout,
            ParamInit::Uniform(bound),
            ParamInit::Uniform(bound),
        )
    }

    /// The authors' `Mlp._init_weights`: Xavier-uniform weight, bias (a
    /// normal of std 1e-6 there) zero.
    pub(crate) fn xavier(ctx: &Ctx, cin: usize, cout: usize) -> CandleResult<Self> {
        let bound = (6.0 / (cin + cout) as f32).sqrt();
        Self::with_init(
            ctx,
            cin,
            cout,
            ParamInit::Uniform(bound),
            ParamInit::Const(0.0),
        )
    }

    fn with_init(
        ctx: &Ctx,
        cin: usize,
        cout: usize,
        w: ParamInit,
        b: ParamInit,
    ) -> CandleResult<Self> {
        Ok(Self {
            w: ctx.param(&[cout, cin], "weight", w)?,
            b: ctx.param(&[cout], "bias", b)?,
            name: ctx.prefix(),
        })
    }

    /// `[..., in] -> [..., out]`.
    pub(crate) fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        let y = x.broadcast_matmul(&self.w.t()?)?.broadcast_add(&self.b)?;
        let (cout, cin) = self.w.dims2()?;
        record(
            &self.name,
            "Linear",
            &y,
            cout * cin + cout,
            (y.elem_count() * cin) as u64,
        );
        Ok(y)
    }
}

/// Layer normalisation over the last axis (PyTorch `nn.LayerNorm(c, eps)`),
/// parameters `weight` and `bias`.
pub(crate) struct LayerNorm {
    gamma: Tensor,
    beta: Tensor,
    eps: f64,
    name: String,
}

impl LayerNorm {
    pub(crate) fn new(ctx: &Ctx, c: usize, eps: f64) -> CandleResult<Self> {
        Ok(Self {
            gamma: ctx.param(&[c], "weight", ParamInit::Const(1.0))?,
            beta: ctx.param(&[c], "bias", ParamInit::Const(0.0))?,
            eps,
            name: ctx.prefix(),
        })
    }

    /// Normalises `[..., c]` over its last axis (biased variance).
    pub(crate) fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        let y = medseg_ops::layer_norm(x, &self.gamma, &self.beta, self.eps)?;
        record(&self.name, "LayerNorm", &y, 2 * self.gamma.elem_count(), 0);
        Ok(y)
    }
}

/// Epsilon of the authors' LayerNorms.
const LN_EPS: f64 = 1e-6;

/// The authors' `Attention`: `query`, `key`, `value` (`hidden -> hidden`),
/// softmax of `q k^T / sqrt(head_dim)` per head, dropout on the
/// probabilities (`attn_dropout`), `out`, dropout (`proj_dropout`; both
/// `attention_dropout_rate`).
pub(crate) struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
    heads: usize,
    attn_drop: Dropout,
    proj_drop: Dropout,
}

impl Attention {
    fn new(ctx: &Ctx, hidden: usize, heads: usize, drop: f64) -> CandleResult<Self> {
        Ok(Self {
            query: Linear::new(&ctx.pp("query"), hidden, hidden)?,
            key: Linear::new(&ctx.pp("key"), hidden, hidden)?,
            value: Linear::new(&ctx.pp("value"), hidden, hidden)?,
            out: Linear::new(&ctx.pp("out"), hidden, hidden)?,
            heads,
            attn_drop: Dropout::new(ctx, drop),
            proj_drop: Dropout::new(ctx, drop),
        })
    }

    /// `[N, L, hidden] -> [N, L, hidden]`.
    fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let (n, l, c) = x.dims3()?;
        let hd = c / self.heads;
        let split = |t: Tensor| -> CandleResult<Tensor> {
            t.reshape((n, l, self.heads, hd))?
                .permute((0, 2, 1, 3))?
                .contiguous()
        };
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let probs = self.attn_drop.forward(&probs, train)?;
        let ctx = probs
            .matmul(&v)?
            .permute((0, 2, 1, 3))?
            .contiguous()?
            .reshape((n, l, c))?;
        self.proj_drop.forward(&self.out.forward(&ctx)?, train)
    }
}

/// The authors' `Mlp`: `fc1`, exact GELU, dropout, `fc2`, dropout
/// (`dropout_rate`).
pub(crate) struct Mlp {
    fc1: Linear,
    fc2: Linear,
    drop: Dropout,
}

impl Mlp {
    fn new(ctx: &Ctx, hidden: usize, mlp_dim: usize, drop: f64) -> CandleResult<Self> {
        Ok(Self {
            fc1: Linear::xavier(&ctx.pp("fc1"), hidden, mlp_dim)?,
            fc2: Linear::xavier(&ctx.pp("fc2"), mlp_dim, hidden)?,
            drop: Dropout::new(ctx, drop),
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let y = self.fc1.forward(x)?.gelu_erf()?;
        let y = self.drop.forward(&y, train)?;
        self.drop.forward(&self.fc2.forward(&y)?, train)
    }
}

/// The authors' `Block` (pre-norm): `x + attn(attention_norm(x))`, then
/// `x + ffn(ffn_norm(x))`.
pub(crate) struct Block {
    attention_norm: LayerNorm,
    ffn_norm: LayerNorm,
    ffn: Mlp,
    attn: Attention,
}

impl Block {
    fn new(ctx: &Ctx, cfg: &VitSpec) -> CandleResult<Self> {
        let h = cfg.hidden;
        Ok(Self {
            attention_norm: LayerNorm::new(&ctx.pp("attention_norm"), h, LN_EPS)?,
            ffn_norm: LayerNorm::new(&ctx.pp("ffn_norm"), h, LN_EPS)?,
            ffn: Mlp::new(&ctx.pp("ffn"), h, cfg.mlp_dim, cfg.dropout)?,
            attn: Attention::new(&ctx.pp("attn"), h, cfg.heads, cfg.attention_dropout)?,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let x = (x + self.attn.forward(&self.attention_norm.forward(x)?, train)?)?;
        &x + self.ffn.forward(&self.ffn_norm.forward(&x)?, train)?
    }
}

/// What the ViT needs to know.
pub(crate) struct VitSpec {
    /// Channels of the image the patches are cut from (the ResNet's output
    /// in the hybrid).
    pub cin: usize,
    /// Side of a patch on that image (1 in the hybrid, 16 without ResNet).
    pub patch: usize,
    /// Tokens (patches).
    pub tokens: usize,
    pub hidden: usize,
    pub mlp_dim: usize,
    pub heads: usize,
    pub layers: usize,
    pub dropout: f64,
    pub attention_dropout: f64,
}

/// The authors' `Embeddings`: the optional ResNetV2 (`hybrid_model`), a
/// convolution of kernel and stride `patch` (`patch_embeddings`), the
/// learnt `position_embeddings [1, tokens, hidden]` (zeros initially, as
/// the authors), dropout.
pub(crate) struct Embeddings {
    pub hybrid_model: Option<ResNetV2>,
    patch_embeddings: Conv,
    position_embeddings: Tensor,
    drop: Dropout,
}

impl Embeddings {
    pub(crate) fn new(
        ctx: &Ctx,
        hybrid_model: Option<ResNetV2>,
        spec: &VitSpec,
    ) -> CandleResult<Self> {
        let patch_embeddings = Conv::new(
            &ctx.pp("patch_embeddings"),
            2,
            spec.cin,
            spec.hidden,
            spec.patch,
            spec.patch,
            0,
            true,
        )?;
        let position_embeddings = ctx.param(
            &[1, spec.tokens, spec.hidden],
            "position_embeddings",
            ParamInit::Const(0.0),
        )?;
        Ok(Self {
            hybrid_model,
            patch_embeddings,
            position_embeddings,
            drop: Dropout::new(ctx, spec.dropout),
        })
    }

    /// Tokens `[N, L, hidden]` and the ResNet's feature maps (finest first,
    /// empty without ResNet).
    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> CandleResult<(Tensor, Vec<Tensor>)> {
        let (x, feats) = match &self.hybrid_model {
            Some(r) => {
                let mut feats = r.features(x)?;
                let last = feats.pop().ok_or_else(|| {
                    candle_core::Error::Msg("ResNetV2 returned no features".into())
                })?;
                (last, feats)
            }
            None => (x.clone(), Vec::new()),
        };
        let y = self.patch_embeddings.forward(&x)?;
        let (n, c) = (y.dim(0)?, y.dim(1)?);
        let y = y.reshape((n, c, ()))?.transpose(1, 2)?;
        let y = y.broadcast_add(&self.position_embeddings)?;
        Ok((self.drop.forward(&y, train)?, feats))
    }
}

/// The authors' `Encoder`: `layer.0..` [`Block`]s and `encoder_norm`.
pub(crate) struct Encoder {
    layer: Vec<Block>,
    encoder_norm: LayerNorm,
}

impl Encoder {
    pub(crate) fn new(ctx: &Ctx, spec: &VitSpec) -> CandleResult<Self> {
        let l = ctx.pp("layer");
        let layer = (0..spec.layers)
            .map(|i| Block::new(&l.pp(i), spec))
            .collect::<CandleResult<Vec<_>>>()?;
        // after the blocks, as in the authors' state dict
        let encoder_norm = LayerNorm::new(&ctx.pp("encoder_norm"), spec.hidden, LN_EPS)?;
        Ok(Self {
            layer,
            encoder_norm,
        })
    }

    /// `[N, L, hidden]` through every block, then the norm.
    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let mut h = x.clone();
        for b in &self.layer {
            h = b.forward(&h, train)?;
        }
        self.encoder_norm.forward(&h)
    }
}
