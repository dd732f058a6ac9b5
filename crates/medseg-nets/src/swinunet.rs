//! Swin-UNet (Cao et al., "Swin-Unet: Unet-like Pure Transformer for
//! Medical Image Segmentation", ECCV Workshops 2022) after the authors'
//! code (HuCaoFighting/Swin-Unet,
//! `networks/swin_transformer_unet_skip_expand_decoder_sys.py`, class
//! `SwinTransformerSys`), module names and default configuration included;
//! see [`SwinUNet`].

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::config::{parse_net_config, KeyKind};
use crate::error::{NetError, Result};
use crate::layers::{Conv, Ctx, Dropout, ParamInit};
use crate::transformer::swin::{
    drop_path_rates, map_to_tokens, tokens_to_map, window_and_shift, PatchExpand, SwinLinear,
    SwinSpec, SwinStage, SwinStageUp,
};
use crate::transformer::LayerNorm;
use crate::unet::{fold_5d, logits_only_2d, unet_meta};
use crate::{NetOutput, ParamInfo, SegNetwork};

fn d2() -> usize {
    2
}
fn d_img() -> usize {
    224
}
fn d_patch() -> usize {
    4
}
fn d_embed() -> usize {
    96
}
fn d_depths() -> Vec<usize> {
    vec![2, 2, 2, 2]
}
fn d_depths_decoder() -> Vec<usize> {
    vec![1, 2, 2, 2]
}
fn d_heads() -> Vec<usize> {
    vec![3, 6, 12, 24]
}
fn d_window() -> usize {
    7
}
fn d_mlp_ratio() -> f64 {
    4.0
}
fn d_true() -> bool {
    true
}
fn d_drop_path() -> f64 {
    0.1
}
fn d_final() -> String {
    "expand_first".into()
}

/// Configuration of [`SwinUNet`] (registry names `SwinUNet`, `Swin-UNet`).
/// Defaults are those of the reference's `SwinTransformerSys` (the
/// `swin_tiny_patch4_window7_224` layout): `img_size` 224, `patch_size` 4,
/// `embed_dim` 96, `depths` `[2, 2, 2, 2]`, `num_heads` `[3, 6, 12, 24]`,
/// `window_size` 7, `mlp_ratio` 4, `qkv` bias, no dropout, stochastic
/// depth 0.1, no absolute position embedding, a normed patch embedding and
/// the `expand_first` final upsampling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwinUNetConfig {
    /// Registry name.
    #[serde(alias = "net_type")]
    pub name: String,
    /// Spatial dimensions: only 2 (a 5D input is folded into the batch).
    #[serde(default = "d2")]
    pub dimension: usize,
    /// Input channels (`in_chans`).
    pub in_chns: usize,
    /// Output classes (`num_classes`).
    pub class_num: usize,
    /// Side of the square input (`img_size`); the patch grid and the
    /// windows are built for it, so every input must have it. A multiple
    /// of `patch_size * 2^(stages - 1)` whose stage resolutions the windows
    /// divide.
    #[serde(default = "d_img")]
    pub img_size: usize,
    /// Side of the patches (`patch_size`); the final expansion restores the
    /// input resolution by this factor (the reference's x4 at its patch
    /// size 4).
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    /// Channels of the first stage (`embed_dim`), doubled by every merging.
    #[serde(default = "d_embed")]
    pub embed_dim: usize,
    /// Swin blocks per encoder stage (`depths`); decoder stage `k` (from the
    /// deepest) has `depths[stages - 1 - k]` blocks, as in the reference.
    #[serde(default = "d_depths")]
    pub depths: Vec<usize>,
    /// The reference's `depths_decoder` argument, kept for its
    /// configurations; the reference's decoder does not read it (it mirrors
    /// `depths`), and neither does this one.
    #[serde(default = "d_depths_decoder")]
    pub depths_decoder: Vec<usize>,
    /// Attention heads per stage (`num_heads`), one per entry of `depths`.
    #[serde(default = "d_heads")]
    pub num_heads: Vec<usize>,
    /// Side of the attention windows (`window_size`); clipped to a stage's
    /// resolution when that is smaller (or equal, then without shift).
    #[serde(default = "d_window")]
    pub window_size: usize,
    /// MLP width relative to the tokens (`mlp_ratio`).
    #[serde(default = "d_mlp_ratio")]
    pub mlp_ratio: f64,
    /// Bias in the attention's `qkv` projection (`qkv_bias`).
    #[serde(default = "d_true")]
    pub qkv_bias: bool,
    /// Attention scale (`qk_scale`); default `head_dim ^ -0.5`.
    #[serde(default)]
    pub qk_scale: Option<f64>,
    /// Dropout after the patch embedding, the MLP layers and the attention
    /// projections (`drop_rate`).
    #[serde(default)]
    pub drop_rate: f64,
    /// Dropout of the attention weights (`attn_drop_rate`).
    #[serde(default)]
    pub attn_drop_rate: f64,
    /// Stochastic depth, rising linearly over the encoder's blocks to this
    /// rate and mirrored in the decoder (`drop_path_rate`); training only.
    #[serde(default = "d_drop_path")]
    pub drop_path_rate: f64,
    /// A learnt absolute position embedding (`ape`).
    #[serde(default)]
    pub ape: bool,
    /// A layer norm after the patch embedding (`patch_norm`).
    #[serde(default = "d_true")]
    pub patch_norm: bool,
    /// Final upsampling (`final_upsample`): only `"expand_first"`, the
    /// reference's only implemented mode.
    #[serde(default = "d_final")]
    pub final_upsample: String,
    /// Seed of the initial weights and dropout masks.
    #[serde(default)]
    pub seed: u64,
}

impl SwinUNetConfig {
    /// The reference's default Swin-UNet (224 x 224) with `in_chns` inputs
    /// and `class_num` classes.
    pub fn new(in_chns: usize, class_num: usize) -> Self {
        Self {
            name: "SwinUNet".into(),
            dimension: 2,
            in_chns,
            class_num,
            img_size: d_img(),
            patch_size: d_patch(),
            embed_dim: d_embed(),
            depths: d_depths(),
            depths_decoder: d_depths_decoder(),
            num_heads: d_heads(),
            window_size: d_window(),
            mlp_ratio: d_mlp_ratio(),
            qkv_bias: true,
            qk_scale: None,
            drop_rate: 0.0,
            attn_drop_rate: 0.0,
            drop_path_rate: d_drop_path(),
            ape: false,
            patch_norm: true,
            final_upsample: d_final(),
            seed: 0,
        }
    }

    /// Number of stages (`len(depths)`).
    pub fn stages(&self) -> usize {
        self.depths.len()
    }

    /// Side of the patch grid (`img_size / patch_size`).
    pub fn grid(&self) -> usize {
        self.img_size / self.patch_size
    }

    /// Checks the values and names the first bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.dimension != 2 {
            return Err(format!(
                "dimension must be 2 (Swin-UNet is a 2D network), got {}",
                self.dimension
            ));
        }
        if self.in_chns == 0 || self.class_num == 0 {
            return Err("in_chns and class_num must be positive".into());
        }
        if self.patch_size == 0 {
            return Err("patch_size must be positive".into());
        }
        let l = self.depths.len();
        if l == 0 || self.depths.contains(&0) {
            return Err(format!(
                "depths must be one or more positive values, got {:?}",
                self.depths
            ));
        }
        if self.num_heads.len() != l || self.num_heads.contains(&0) {
            return Err(format!(
                "num_heads must have one positive value per stage ({l}), got {:?}",
                self.num_heads
            ));
        }
        if self.embed_dim == 0 || self.embed_dim % 2 != 0 {
            return Err(format!(
                "embed_dim must be positive and even, got {}",
                self.embed_dim
            ));
        }
        for (i, &h) in self.num_heads.iter().enumerate() {
            let dim = self.embed_dim << i;
            if dim % h != 0 {
                return Err(format!(
                    "num_heads[{i}] = {h} must divide the stage's {dim} channels (embed_dim * 2^{i})"
                ));
            }
        }
        let m = self.patch_size << (l - 1);
        if self.img_size == 0 || self.img_size % m != 0 {
            return Err(format!(
                "img_size must be a positive multiple of patch_size * 2^{} = {m}, got {}",
                l - 1,
                self.img_size
            ));
        }
        if self.window_size == 0 {
            return Err("window_size must be positive".into());
        }
        for i in 0..l {
            let r = self.grid() >> i;
            for odd in [false, true] {
                let (ws, _) = window_and_shift((r, r), self.window_size, odd);
                if r % ws != 0 {
                    return Err(format!(
                        "window_size {} does not divide stage {i}'s resolution {r} (img_size {} / patch_size {} / 2^{i})",
                        self.window_size, self.img_size, self.patch_size
                    ));
                }
            }
        }
        if self.mlp_ratio.is_nan() || self.mlp_ratio <= 0.0 {
            return Err(format!(
                "mlp_ratio must be positive, got {}",
                self.mlp_ratio
            ));
        }
        if matches!(self.qk_scale, Some(s) if s.is_nan() || s <= 0.0) {
            return Err(format!(
                "qk_scale must be positive, got {:?}",
                self.qk_scale
            ));
        }
        for (key, p) in [
            ("drop_rate", self.drop_rate),
            ("attn_drop_rate", self.attn_drop_rate),
            ("drop_path_rate", self.drop_path_rate),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("{key} must be in [0, 1), got {p}"));
            }
        }
        if self.final_upsample != "expand_first" {
            return Err(format!(
                "final_upsample must be \"expand_first\" (the reference's only mode), got {:?}",
                self.final_upsample
            ));
        }
        Ok(())
    }

    fn spec(&self) -> SwinSpec {
        SwinSpec {
            window_size: self.window_size,
            mlp_ratio: self.mlp_ratio,
            qkv_bias: self.qkv_bias,
            qk_scale: self.qk_scale,
            drop: self.drop_rate,
            attn_drop: self.attn_drop_rate,
        }
    }
}

/// Swin-UNet (Cao et al., ECCV Workshops 2022): a Swin Transformer encoder
/// and a symmetric Swin decoder joined by skip connections, in the layout
/// of the authors' `SwinTransformerSys`
/// (HuCaoFighting/Swin-Unet, `networks/swin_transformer_unet_skip_expand_decoder_sys.py`):
///
/// * `patch_embed.proj` (a `patch_size` convolution to `embed_dim`
///   channels) and `patch_embed.norm`; `absolute_pos_embed` when `ape`;
/// * `layers.0..L-1`: Swin stages ([`SwinStage`]) of `depths[i]` blocks
///   with `embed_dim * 2^i` channels, alternating plain and shifted windows,
///   each but the last followed by patch merging (`downsample`); `norm`;
/// * `layers_up.0`: a patch expansion of the bottleneck; `layers_up.k`
///   (k >= 1): the concatenation with the encoder tokens of the same
///   resolution, `concat_back_dim.k` (a linear layer halving the channels),
///   then a Swin stage ([`SwinStageUp`]) ending (but the last) in a patch
///   expansion (`upsample`); `norm_up`;
/// * `up` (the final patch expansion by `patch_size`) and `output` (a 1x1
///   convolution without bias) to `class_num` logits.
///
/// The blocks live in [`crate::transformer::swin`] for reuse. The input
/// size is fixed to `img_size` x `img_size` ([`SegNetwork::input_size`]);
/// inference pads smaller images and slides a window over larger ones.
/// The network is 2D; a `[N, C, D, H, W]` input has its depth folded into
/// the batch. Differences from the reference: the single-channel input is
/// not repeated to three channels (the `SwinUnet` wrapper does that;
/// `in_chns` is the reference's `in_chans`), initial weights are drawn
/// uniformly (same bounds as PyTorch's defaults, not timm's truncated
/// normal), and the final expansion follows `patch_size` (the reference
/// hard-codes 4, its default patch size).
///
/// The reference's default (`SwinTransformerSys()`: 224 x 224, 3 input
/// channels, 1000 classes) has 27,264,036 trainable parameters, as here
/// (27,168,036 + 96 * `class_num` with 3 input channels; 27,165,348 with 1
/// input channel and 4 classes; 27,154,404 in the zoo's 96 x 96, window 6
/// setting). tests/swinunet.rs checks these counts and the outputs (eval
/// and train mode) and shifted-window masks against a PyTorch transcription
/// of the reference (tools/make_swinunet_fixtures.py).
pub struct SwinUNet {
    cfg: SwinUNetConfig,
    params: Vec<ParamInfo>,
    proj: Conv,
    patch_norm: Option<LayerNorm>,
    ape: Option<Tensor>,
    pos_drop: Dropout,
    layers: Vec<SwinStage>,
    norm: LayerNorm,
    first_up: PatchExpand,
    layers_up: Vec<(SwinLinear, SwinStageUp)>,
    norm_up: LayerNorm,
    up: PatchExpand,
    output: Conv,
}

impl SwinUNet {
    /// Builds the network (weights created or read through `vb` under the
    /// reference's names).
    pub fn new(cfg: SwinUNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
        let ctx = Ctx::new(vb, cfg.seed);
        Ok(Self::build(&ctx, cfg)?)
    }

    fn build(ctx: &Ctx, cfg: SwinUNetConfig) -> CandleResult<Self> {
        let e = cfg.embed_dim;
        let l = cfg.stages();
        let g = cfg.grid();
        let spec = cfg.spec();
        let pe = ctx.pp("patch_embed");
        let proj = Conv::new(
            &pe.pp("proj"),
            2,
            cfg.in_chns,
            e,
            cfg.patch_size,
            cfg.patch_size,
            0,
            true,
        )?;
        let patch_norm = if cfg.patch_norm {
            Some(LayerNorm::new(&pe.pp("norm"), e)?)
        } else {
            None
        };
        let ape = if cfg.ape {
            Some(ctx.param(
                &[1, g * g, e],
                "absolute_pos_embed",
                ParamInit::Uniform(0.02 * 3f32.sqrt()),
            )?)
        } else {
            None
        };
        let total: usize = cfg.depths.iter().sum();
        let dpr = drop_path_rates(cfg.drop_path_rate, total);
        let slice = |i: usize| {
            let a: usize = cfg.depths[..i].iter().sum();
            &dpr[a..a + cfg.depths[i]]
        };
        let lc = ctx.pp("layers");
        let mut layers = Vec::with_capacity(l);
        for i in 0..l {
            let r = g >> i;
            layers.push(SwinStage::new(
                &lc.pp(i),
                e << i,
                (r, r),
                cfg.num_heads[i],
                slice(i),
                &spec,
                i + 1 < l,
            )?);
        }
        let lu = ctx.pp("layers_up");
        let cb = ctx.pp("concat_back_dim");
        let rb = g >> (l - 1);
        let first_up = PatchExpand::new(&lu.pp(0), (rb, rb), e << (l - 1))?;
        let mut layers_up = Vec::with_capacity(l.saturating_sub(1));
        for k in 1..l {
            let s = l - 1 - k;
            let dim = e << s;
            let r = g >> s;
            let concat = SwinLinear::new(&cb.pp(k), 2 * dim, dim, true)?;
            let stage = SwinStageUp::new(
                &lu.pp(k),
                dim,
                (r, r),
                cfg.num_heads[s],
                slice(s),
                &spec,
                k + 1 < l,
            )?;
            layers_up.push((concat, stage));
        }
        let norm = LayerNorm::new(&ctx.pp("norm"), e << (l - 1))?;
        let norm_up = LayerNorm::new(&ctx.pp("norm_up"), e)?;
        let up = PatchExpand::final_expand(&ctx.pp("up"), (g, g), e, cfg.patch_size)?;
        let output = Conv::new(&ctx.pp("output"), 2, e, cfg.class_num, 1, 1, 0, false)?;
        Ok(Self {
            params: ctx.params_snapshot(),
            pos_drop: Dropout::new(ctx, cfg.drop_rate),
            cfg,
            proj,
            patch_norm,
            ape,
            layers,
            norm,
            first_up,
            layers_up,
            norm_up,
            up,
            output,
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &SwinUNetConfig {
        &self.cfg
    }

    fn check(&self, x: &Tensor) -> CandleResult<()> {
        let (_, _, h, w) = x.dims4()?;
        let s = self.cfg.img_size;
        if h != s || w != s {
            candle_core::bail!(
                "{}: Swin-UNet was built for img_size {s} (its patch grid and windows are fixed), got input {:?}",
                self.cfg.name,
                x.dims()
            )
        }
        Ok(())
    }

    /// The encoder (the reference's `forward_features`): the tokens entering
    /// every stage and the normed bottleneck.
    fn features(&self, x: &Tensor, train: bool) -> CandleResult<(Tensor, Vec<Tensor>)> {
        self.check(x)?;
        let mut t = map_to_tokens(&self.proj.forward(x)?)?;
        if let Some(n) = &self.patch_norm {
            t = n.forward(&t)?;
        }
        if let Some(p) = &self.ape {
            t = t.broadcast_add(&p.to_dtype(t.dtype())?)?;
        }
        t = self.pos_drop.forward(&t, train)?;
        let mut skips = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            skips.push(t.clone());
            t = layer.forward(&t, train)?;
        }
        Ok((self.norm.forward(&t)?, skips))
    }

    fn forward4(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let (t, skips) = self.features(x, train)?;
        let l = self.layers.len();
        let mut t = self.first_up.forward(&t)?;
        for (k, (concat, stage)) in self.layers_up.iter().enumerate() {
            let skip = &skips[l - 2 - k];
            let c = Tensor::cat(&[&t, skip], 2)?;
            t = stage.forward(&concat.forward(&c)?, train)?;
        }
        let t = self.up.forward(&self.norm_up.forward(&t)?)?;
        let s = self.cfg.img_size;
        self.output.forward(&tokens_to_map(&t, s, s)?)
    }
}

impl SegNetwork for SwinUNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput> {
        logits_only_2d(&self.cfg.name, "Swin-UNet", self.cfg.in_chns, x, |x| {
            self.forward4(x, train)
        })
    }

    /// The skip tokens (the inputs of stages 0 .. L-2, at 1/`patch_size`,
    /// 1/(2 `patch_size`), ...) and the normed bottleneck, each as a map
    /// `[N, C, h, w]`, finest first (a 5D input is folded).
    fn encode(&self, x: &Tensor, train: bool) -> CandleResult<Option<Vec<Tensor>>> {
        if !matches!(x.rank(), 4 | 5) || x.dim(1)? != self.cfg.in_chns {
            candle_core::bail!(
                "{}: expected [N, {}, H, W] or [N, {}, D, H, W] input, got shape {:?}",
                self.cfg.name,
                self.cfg.in_chns,
                self.cfg.in_chns,
                x.dims()
            )
        }
        let x4 = fold_5d(x)?;
        let (t, skips) = self.features(&x4, train)?;
        let g = self.cfg.grid();
        let l = self.layers.len();
        let mut maps = Vec::with_capacity(l);
        for (i, s) in skips.iter().take(l - 1).enumerate() {
            maps.push(tokens_to_map(s, g >> i, g >> i)?);
        }
        maps.push(tokens_to_map(&t, g >> (l - 1), g >> (l - 1))?);
        Ok(Some(maps))
    }

    fn encoder_prefixes(&self) -> Vec<String> {
        let mut p = vec!["patch_embed.".to_string()];
        if self.cfg.ape {
            p.push("absolute_pos_embed".to_string());
        }
        p.push("layers.".to_string());
        p.push("norm.".to_string());
        p
    }

    // `dimension` is 2 (checked by `SwinUNetConfig::validate`)
    unet_meta!(custom_input_size);

    /// Exactly `img_size` x `img_size`: the patch grid, the windows and
    /// their masks are built for it, so a smaller input is padded up to it
    /// and a larger one needs a sliding window of that size.
    fn input_size(&self) -> crate::InputSize {
        crate::InputSize::exact(&[self.cfg.img_size, self.cfg.img_size])
    }
}

/// Builds a Swin-UNet from its JSON configuration (registry `SwinUNet`,
/// `Swin-UNet`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    let cfg: SwinUNetConfig = parse_net_config(
        config,
        &[
            ("img_size", KeyKind::Usize),
            ("patch_size", KeyKind::Usize),
            ("embed_dim", KeyKind::Usize),
            ("depths", KeyKind::UsizeList),
            ("depths_decoder", KeyKind::UsizeList),
            ("num_heads", KeyKind::UsizeList),
            ("window_size", KeyKind::Usize),
            ("mlp_ratio", KeyKind::F64),
            ("qkv_bias", KeyKind::Bool),
            ("qk_scale", KeyKind::F64),
            ("drop_rate", KeyKind::F64),
            ("attn_drop_rate", KeyKind::F64),
            ("drop_path_rate", KeyKind::F64),
            ("ape", KeyKind::Bool),
            ("patch_norm", KeyKind::Bool),
            ("final_upsample", KeyKind::Str),
        ],
    )?;
    Ok(Box::new(SwinUNet::new(cfg, vb)?))
}
