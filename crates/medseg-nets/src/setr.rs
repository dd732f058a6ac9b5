//! SETR (Zheng et al., CVPR 2021) in JMedSeg's layout (`SETRModel`); see
//! [`SETR`].
//!
//! JMedSeg's transformer is BERT's (post-norm layers, separate query, key
//! and value layers, layer norms `gamma`/`beta` of eps 1e-12, a learnt
//! position-embedding table), not the pre-norm MONAI ViT of
//! [`crate::transformer`], so its blocks are written here.

use candle_core::{Result as CandleResult, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::backbones::resnet::{bn, relu};
use crate::config::{parse_net_config, KeyKind};
use crate::error::{NetError, Result};
use crate::layers::{record, resize_linear, Conv, Ctx, Dropout, Norm, ParamInit};
use crate::unet::{fold_5d, logits_only_2d, unet_meta};
use crate::{NetOutput, ParamInfo, SegNetwork};

fn d_dimension() -> usize {
    2
}
fn d_patch() -> Vec<usize> {
    vec![32, 32]
}
fn d_hidden() -> usize {
    1024
}
fn d_layers() -> usize {
    8
}
fn d_heads() -> usize {
    16
}
fn d_features() -> Vec<usize> {
    vec![512, 256, 128, 64]
}
fn d_sample_rate() -> usize {
    4
}
fn d_intermediate() -> usize {
    1024
}
fn d_max_pos() -> usize {
    512
}
fn d_dropout() -> f64 {
    0.1
}

/// Layer-norm epsilon of JMedSeg's `TransConfig` (BERT's).
pub const SETR_LAYER_NORM_EPS: f64 = 1e-12;

/// Configuration of [`SETR`] (registry name `SETR`).
///
/// Defaults are JMedSeg's `SETRModel()` (`patch_size = (32, 32)`,
/// `hidden_size = 1024`, `num_hidden_layers = 8`, `num_attention_heads =
/// 16`, `decode_features = [512, 256, 128, 64]`, `sample_rate = 4`) and its
/// `TransConfig` defaults (`intermediate_size = 1024`,
/// `max_position_embeddings = 512`, dropout 0.1 on the hidden states and the
/// attention probabilities).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SETRConfig {
    /// Registry name (`net_type` in PyMIC files is accepted).
    #[serde(alias = "net_type")]
    pub name: String,
    /// Spatial dimensions; 2 only (a 5D input is folded into the batch).
    #[serde(default = "d_dimension")]
    pub dimension: usize,
    /// Input channels (the reference's `in_channels`, default 3).
    pub in_chns: usize,
    /// Output classes (the reference's `out_channels`, default 1).
    pub class_num: usize,
    /// Patch height and width: each patch is one token.
    #[serde(default = "d_patch")]
    pub patch_size: Vec<usize>,
    /// Token width.
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// Transformer layers.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads (dividing `hidden_size`).
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Channels of the decoder's stages (each a 3x3 convolution,
    /// BatchNorm, ReLU and a bilinear x2 up-sampling).
    #[serde(default = "d_features")]
    pub decode_features: Vec<usize>,
    /// Each token becomes a `patch / 2^sample_rate` map; the decoder's
    /// `decode_features.len()` up-samplings must bring it back to the input
    /// size, so this equals `decode_features.len()`.
    #[serde(default = "d_sample_rate")]
    pub sample_rate: usize,
    /// Width of the feed-forward layers.
    #[serde(default = "d_intermediate")]
    pub intermediate_size: usize,
    /// Rows of the position-embedding table: at most this many tokens.
    #[serde(default = "d_max_pos")]
    pub max_position_embeddings: usize,
    /// Dropout on the hidden states in training, in `[0, 1)`.
    #[serde(default = "d_dropout")]
    pub dropout: f64,
    /// Dropout on the attention probabilities in training, in `[0, 1)`.
    #[serde(default = "d_dropout")]
    pub attention_dropout: f64,
    /// Seed of the initial weights and of the dropout masks.
    #[serde(default)]
    pub seed: u64,
}

impl SETRConfig {
    /// JMedSeg's default layout with `in_chns` inputs and `class_num` classes.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "SETR".to_string(),
            dimension: 2,
            in_chns,
            class_num,
            patch_size: d_patch(),
            hidden_size: d_hidden(),
            num_hidden_layers: d_layers(),
            num_attention_heads: d_heads(),
            decode_features: d_features(),
            sample_rate: d_sample_rate(),
            intermediate_size: d_intermediate(),
            max_position_embeddings: d_max_pos(),
            dropout: d_dropout(),
            attention_dropout: d_dropout(),
            seed: 0,
        }
    }

    /// Checks the values and names the first bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.dimension != 2 {
            return Err(format!(
                "dimension must be 2 (SETR is a 2D network), got {}",
                self.dimension
            ));
        }
        if self.in_chns == 0 {
            return Err("in_chns must be positive".into());
        }
        if self.class_num == 0 {
            return Err("class_num must be positive".into());
        }
        if self.decode_features.is_empty() || self.decode_features.contains(&0) {
            return Err(format!(
                "decode_features must be positive values, got {:?}",
                self.decode_features
            ));
        }
        if self.sample_rate != self.decode_features.len() {
            return Err(format!(
                "sample_rate must equal the number of decode_features ({}) so that the logits \
                 have the input size, got {}",
                self.decode_features.len(),
                self.sample_rate
            ));
        }
        let sv = 1usize << self.sample_rate;
        if self.patch_size.len() != 2 || self.patch_size.iter().any(|&p| p == 0 || p % sv != 0) {
            return Err(format!(
                "patch_size must be 2 multiples of 2^sample_rate = {sv}, got {:?}",
                self.patch_size
            ));
        }
        if self.hidden_size == 0 {
            return Err("hidden_size must be positive".into());
        }
        if self.num_hidden_layers == 0 {
            return Err("num_hidden_layers must be positive".into());
        }
        if self.num_attention_heads == 0 || self.hidden_size % self.num_attention_heads != 0 {
            return Err(format!(
                "num_attention_heads must divide hidden_size {}, got {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.intermediate_size == 0 {
            return Err("intermediate_size must be positive".into());
        }
        if self.max_position_embeddings == 0 {
            return Err("max_position_embeddings must be positive".into());
        }
        for (key, p) in [
            ("dropout", self.dropout),
            ("attention_dropout", self.attention_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("{key} must be in [0, 1), got {p}"));
            }
        }
        Ok(())
    }

    /// Size of the token grid's side that keeps any accepted input within
    /// the position-embedding table: `floor(sqrt(max_position_embeddings))`.
    fn max_grid(&self) -> usize {
        let m = self.max_position_embeddings;
        let mut g = (m as f64).sqrt() as usize;
        while g * g > m {
            g -= 1;
        }
        while (g + 1) * (g + 1) <= m {
            g += 1;
        }
        g
    }
}

/// Fully connected layer on `[..., in]` (PyTorch `nn.Linear`: `weight
/// [out, in]`, `bias [out]`), recorded for the summary (multiply-adds:
/// `in` per output element).
struct Dense {
    w: Tensor,
    b: Tensor,
    name: String,
}

impl Dense {
    fn new(ctx: &Ctx, cin: usize, cout: usize) -> CandleResult<Self> {
        let bound = 1.0 / (cin as f32).sqrt();
        Ok(Self {
            w: ctx.param(&[cout, cin], "weight", ParamInit::Uniform(bound))?,
            b: ctx.param(&[cout], "bias", ParamInit::Uniform(bound))?,
            name: ctx.prefix(),
        })
    }

    fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        let y = x.broadcast_matmul(&self.w.t()?)?.broadcast_add(&self.b)?;
        let cin = self.w.dim(1)?;
        record(
            &self.name,
            "Linear",
            &y,
            self.w.elem_count() + self.b.elem_count(),
            (y.elem_count() * cin) as u64,
        );
        Ok(y)
    }
}

/// JMedSeg's `TransLayerNorm`: `gamma * (x - mean) / sqrt(var + eps) +
/// beta` over the last axis (biased variance), eps 1e-12.
struct BertLayerNorm {
    gamma: Tensor,
    beta: Tensor,
}

impl BertLayerNorm {
    fn new(ctx: &Ctx, c: usize) -> CandleResult<Self> {
        Ok(Self {
            gamma: ctx.param(&[c], "gamma", ParamInit::Const(1.0))?,
            beta: ctx.param(&[c], "beta", ParamInit::Const(0.0))?,
        })
    }

    fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        medseg_ops::layer_norm(x, &self.gamma, &self.beta, SETR_LAYER_NORM_EPS)
    }
}

/// `dense`, dropout, `LayerNorm(y + residual)` (JMedSeg's `TransSelfOutput`
/// and `TransOutput`).
struct AddNorm {
    dense: Dense,
    norm: BertLayerNorm,
    dropout: Dropout,
}

impl AddNorm {
    fn new(ctx: &Ctx, cin: usize, hidden: usize, p: f64) -> CandleResult<Self> {
        Ok(Self {
            dense: Dense::new(&ctx.pp("dense"), cin, hidden)?,
            norm: BertLayerNorm::new(&ctx.pp("LayerNorm"), hidden)?,
            dropout: Dropout::new(ctx, p),
        })
    }

    fn forward(&self, x: &Tensor, residual: &Tensor, train: bool) -> CandleResult<Tensor> {
        let y = self.dropout.forward(&self.dense.forward(x)?, train)?;
        self.norm.forward(&(y + residual)?)
    }
}

/// One post-norm transformer layer (JMedSeg's `TransLayer`):
/// `a = LN(x + out(attention(x)))`, `y = LN(a + out2(gelu(inter(a))))`.
struct BertLayer {
    query: Dense,
    key: Dense,
    value: Dense,
    attn_dropout: Dropout,
    attn_out: AddNorm,
    intermediate: Dense,
    output: AddNorm,
    heads: usize,
    name: String,
}

impl BertLayer {
    fn new(ctx: &Ctx, cfg: &SETRConfig) -> CandleResult<Self> {
        let h = cfg.hidden_size;
        let s = ctx.pp("attention").pp("self");
        Ok(Self {
            query: Dense::new(&s.pp("query"), h, h)?,
            key: Dense::new(&s.pp("key"), h, h)?,
            value: Dense::new(&s.pp("value"), h, h)?,
            attn_dropout: Dropout::new(ctx, cfg.attention_dropout),
            attn_out: AddNorm::new(&ctx.pp("attention").pp("output"), h, h, cfg.dropout)?,
            intermediate: Dense::new(
                &ctx.pp("intermediate").pp("dense"),
                h,
                cfg.intermediate_size,
            )?,
            output: AddNorm::new(&ctx.pp("output"), cfg.intermediate_size, h, cfg.dropout)?,
            heads: cfg.num_attention_heads,
            name: s.prefix(),
        })
    }

    fn split(&self, x: &Tensor) -> CandleResult<Tensor> {
        let (n, l, c) = x.dims3()?;
        x.reshape((n, l, self.heads, c / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let (n, l, c) = x.dims3()?;
        let hd = c / self.heads;
        let q = self.split(&self.query.forward(x)?)?;
        let k = self.split(&self.key.forward(x)?)?;
        let v = self.split(&self.value.forward(x)?)?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? / (hd as f64).sqrt())?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let probs = self.attn_dropout.forward(&probs, train)?;
        let ctx = probs.matmul(&v)?;
        // q k^T and probs v: 2 * L * L * head_dim per head
        record(
            &self.name,
            "Attention",
            &ctx,
            0,
            (2 * n * self.heads * l * l * hd) as u64,
        );
        let ctx = ctx.transpose(1, 2)?.contiguous()?.reshape((n, l, c))?;
        let a = self.attn_out.forward(&ctx, x, train)?;
        let i = self.intermediate.forward(&a)?.gelu_erf()?;
        self.output.forward(&i, &a, train)
    }
}

/// JMedSeg's `TransModel2d` (`encoder_2d.bert_model`): `dense` (linear
/// embedding of the flattened patches, GELU, layer norm), `embeddings`
/// (learnt position embeddings added, layer norm, dropout) and the
/// transformer layers `encoder.layer.{i}`.
struct BertModel {
    dense: Dense,
    dense_norm: BertLayerNorm,
    pos: Tensor,
    emb_norm: BertLayerNorm,
    emb_dropout: Dropout,
    layers: Vec<BertLayer>,
}

impl BertModel {
    fn new(ctx: &Ctx, cfg: &SETRConfig) -> CandleResult<Self> {
        let h = cfg.hidden_size;
        let d = ctx.pp("dense");
        let patch_dim = cfg.patch_size[0] * cfg.patch_size[1] * cfg.in_chns;
        let dense = Dense::new(&d.pp("dense"), patch_dim, h)?;
        let dense_norm = BertLayerNorm::new(&d.pp("LayerNorm"), h)?;
        let e = ctx.pp("embeddings");
        // the reference draws the table from N(0, 1)
        let pos = e.pp("position_embeddings").param(
            &[cfg.max_position_embeddings, h],
            "weight",
            ParamInit::Uniform(3f32.sqrt()),
        )?;
        let emb_norm = BertLayerNorm::new(&e.pp("LayerNorm"), h)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::new(&ctx.pp("encoder").pp("layer").pp(i), cfg))
            .collect::<CandleResult<Vec<_>>>()?;
        Ok(Self {
            dense,
            dense_norm,
            pos,
            emb_norm,
            emb_dropout: Dropout::new(ctx, cfg.dropout),
            layers,
        })
    }

    /// Every layer's output for tokens `[N, L, patch_dim]`.
    fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Vec<Tensor>> {
        let l = x.dim(1)?;
        let y = self
            .dense_norm
            .forward(&self.dense.forward(x)?.gelu_erf()?)?;
        let y = y.broadcast_add(&self.pos.narrow(0, 0, l)?.unsqueeze(0)?)?;
        let mut y = self
            .emb_dropout
            .forward(&self.emb_norm.forward(&y)?, train)?;
        let mut outs = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            y = layer.forward(&y, train)?;
            outs.push(y.clone());
        }
        Ok(outs)
    }
}

/// One decoder stage (`decoder_2d.decoder_{i}`): 3x3 convolution with bias
/// (`0`), BatchNorm (`1`), ReLU, bilinear x2 up-sampling.
struct UpStage {
    conv: Conv,
    bn: Norm,
}

/// SETR (Zheng et al., "Rethinking Semantic Segmentation from a
/// Sequence-to-Sequence Perspective with Transformers", CVPR 2021) in
/// JMedSeg's layout (github.com/THU-CVlab/JMedSeg,
/// model/transformer_seg.py `SETRModel` and model/transformer_model.py),
/// with its parameter names:
///
/// * `encoder_2d.bert_model`: the image cut into `patch_size` patches
///   (tokens of `patch_h * patch_w * in_chns` values, ordered row, column,
///   channel), a BERT-style transformer (see the module documentation) of
///   `num_hidden_layers` layers;
/// * `encoder_2d.final_dense`: a linear layer turning every token into a
///   `patch / 2^sample_rate` map of `hidden_size` channels, laid out as an
///   image at `1 / 2^sample_rate` of the input size;
/// * `decoder_2d.decoder_{1..}`: the progressive up-sampling decoder (SETR's
///   PUP variant: 3x3 convolution, BatchNorm, ReLU and bilinear x2 per
///   stage, 512, 256, 128, 64 channels);
/// * `decoder_2d.final_out`: 3x3 convolution to `class_num` logits.
///
/// JMedSeg implements this one variant (its decoder is PUP-like; the
/// paper's Naive and MLA decoders are not in JMedSeg, nor here).
/// Differences from JMedSeg: the position-embedding table is trainable (a
/// PyTorch `nn.Embedding`, as the PyTorch code JMedSeg ported; JMedSeg's
/// Jittor table is frozen, `stop_grad`); BatchNorm's running variance is
/// updated with the unbiased batch variance (PyTorch); `sample_rate` must
/// equal the number of decoder stages (JMedSeg's default, so that the
/// logits have the input size).
///
/// Input sizes: multiples of `patch_size` with at most
/// `max_position_embeddings` patches; [`SegNetwork::input_size`] states
/// per-axis maxima that guarantee it (704 x 704 by default). The position
/// of a token in the table is its row-major index, so a network trained on
/// one grid (96 x 96 crops: 3 x 3 patches) should predict with a sliding
/// window of the same size. The default configuration (3 inputs, 1 class)
/// has 64,557,441 trainable parameters (of which 524,288 in the position
/// table), as the PyTorch transcription of JMedSeg's model in
/// tools/make_hardnet_setr_fixtures.py; tests/setr.rs checks outputs and
/// running statistics against it.
pub struct SETR {
    cfg: SETRConfig,
    params: Vec<ParamInfo>,
    bert: BertModel,
    final_dense: Dense,
    stages: Vec<UpStage>,
    final_out: Conv,
}

impl SETR {
    /// Builds the network, creating (or reading) its parameters in `vb`
    /// under JMedSeg's names
    /// (`encoder_2d.bert_model.encoder.layer.0.attention.self.query.weight`,
    /// `decoder_2d.decoder_1.1.running_var`, ...).
    pub fn new(cfg: SETRConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: SETRConfig) -> CandleResult<Self> {
        let e = ctx.pp("encoder_2d");
        let bert = BertModel::new(&e.pp("bert_model"), &cfg)?;
        let sv = 1usize << cfg.sample_rate;
        let h = cfg.hidden_size;
        let final_dense = Dense::new(
            &e.pp("final_dense"),
            h,
            cfg.patch_size[0] * cfg.patch_size[1] * h / (sv * sv),
        )?;
        let d = ctx.pp("decoder_2d");
        let mut stages = Vec::with_capacity(cfg.decode_features.len());
        let mut c = h;
        for (i, &f) in cfg.decode_features.iter().enumerate() {
            let s = d.pp(format!("decoder_{}", i + 1));
            stages.push(UpStage {
                conv: Conv::k3(&s.pp(0), 2, c, f)?,
                bn: bn(&s.pp(1), f)?,
            });
            c = f;
        }
        let final_out = Conv::k3(&d.pp("final_out"), 2, c, cfg.class_num)?;
        Ok(Self {
            cfg,
            params: ctx.params_snapshot(),
            bert,
            final_dense,
            stages,
            final_out,
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &SETRConfig {
        &self.cfg
    }

    /// The token grid of an input, after checking its size.
    fn grid(&self, x: &Tensor) -> CandleResult<(usize, usize)> {
        let (_, _, h, w) = x.dims4()?;
        let [p0, p1] = [self.cfg.patch_size[0], self.cfg.patch_size[1]];
        if h == 0 || w == 0 || h % p0 != 0 || w % p1 != 0 {
            candle_core::bail!(
                "{}: SETR needs height and width that are multiples of the patch size {p0}x{p1}, \
                 got {h}x{w}; pad or crop the input",
                self.cfg.name
            )
        }
        let (gh, gw) = (h / p0, w / p1);
        if gh * gw > self.cfg.max_position_embeddings {
            candle_core::bail!(
                "{}: a {h}x{w} input has {} patches, more than the {} position embeddings; \
                 predict with a sliding window",
                self.cfg.name,
                gh * gw,
                self.cfg.max_position_embeddings
            )
        }
        Ok((gh, gw))
    }

    /// Every transformer layer's output tokens `[N, L, hidden]`.
    fn tokens(&self, x: &Tensor, train: bool) -> CandleResult<(Vec<Tensor>, usize, usize)> {
        let (gh, gw) = self.grid(x)?;
        let (n, c, _, _) = x.dims4()?;
        let [p0, p1] = [self.cfg.patch_size[0], self.cfg.patch_size[1]];
        // b c (h p1) (w p2) -> b (h w) (p1 p2 c)
        let t = x
            .reshape(vec![n, c, gh, p0, gw, p1])?
            .permute(vec![0, 2, 4, 3, 5, 1])?
            .contiguous()?
            .reshape((n, gh * gw, p0 * p1 * c))?;
        Ok((self.bert.forward(&t, train)?, gh, gw))
    }

    fn forward4(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let (outs, gh, gw) = self.tokens(x, train)?;
        let last = &outs[outs.len() - 1];
        let n = last.dim(0)?;
        let hid = self.cfg.hidden_size;
        let sv = 1usize << self.cfg.sample_rate;
        let (s0, s1) = (self.cfg.patch_size[0] / sv, self.cfg.patch_size[1] / sv);
        // b (h w) (p1 p2 c) -> b c (h p1) (w p2)
        let mut y = self
            .final_dense
            .forward(last)?
            .reshape(vec![n, gh, gw, s0, s1, hid])?
            .permute(vec![0, 5, 1, 3, 2, 4])?
            .contiguous()?
            .reshape((n, hid, gh * s0, gw * s1))?;
        for s in &self.stages {
            let z =
                s.bn.forward_act(&s.conv.forward(&y)?, train, Some(&relu()))?;
            let (_, _, h, w) = z.dims4()?;
            y = resize_linear(&z, &[2 * h, 2 * w], false)?;
        }
        self.final_out.forward(&y)
    }
}

impl SegNetwork for SETR {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput> {
        logits_only_2d(&self.cfg.name, "SETR", self.cfg.in_chns, x, |x| {
            self.forward4(x, train)
        })
    }

    unet_meta!(custom_input_size);

    /// Multiples of the patch size, at most `floor(sqrt(max_position_embeddings))`
    /// patches per axis (so that every accepted size fits the position
    /// table; 704 x 704 by default).
    fn input_size(&self) -> crate::InputSize {
        let g = self.cfg.max_grid();
        let p = &self.cfg.patch_size;
        crate::InputSize {
            multiple: p.clone(),
            minimum: p.clone(),
            maximum: Some(vec![g * p[0], g * p[1]]),
        }
    }

    /// Every transformer layer's tokens as `[N, hidden, H / patch, W /
    /// patch]` maps. A 5D input is folded into the batch.
    fn encode(&self, x: &Tensor, train: bool) -> CandleResult<Option<Vec<Tensor>>> {
        let x = fold_5d(x)?;
        let (outs, gh, gw) = self.tokens(&x, train)?;
        let maps = outs
            .iter()
            .map(|t| {
                let (n, _, c) = t.dims3()?;
                t.transpose(1, 2)?.contiguous()?.reshape((n, c, gh, gw))
            })
            .collect::<CandleResult<Vec<_>>>()?;
        Ok(Some(maps))
    }

    fn encoder_prefixes(&self) -> Vec<String> {
        vec!["encoder_2d.bert_model.".to_string()]
    }
}

/// Builds a SETR from its JSON configuration (registry entry `SETR`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    let cfg: SETRConfig = parse_net_config(config, KEYS)?;
    Ok(Box::new(SETR::new(cfg, vb)?))
}

const KEYS: &[(&str, KeyKind)] = &[
    ("patch_size", KeyKind::UsizeList),
    ("hidden_size", KeyKind::Usize),
    ("num_hidden_layers", KeyKind::Usize),
    ("num_attention_heads", KeyKind::Usize),
    ("decode_features", KeyKind::UsizeList),
    ("sample_rate", KeyKind::Usize),
    ("intermediate_size", KeyKind::Usize),
    ("max_position_embeddings", KeyKind::Usize),
    ("dropout", KeyKind::F64),
    ("attention_dropout", KeyKind::F64),
];
