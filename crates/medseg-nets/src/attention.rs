//! Pieces shared by the attention-head networks on JMedSeg's dilated ResNet
//! (DANet, OCNet, OCRNet): the backbone keys of their configurations, the
//! 3x3 convolution + BatchNorm + ReLU unit of their heads, the
//! self-attention over positions, zero-initialised convolutions.

use candle_core::{Result as CandleResult, Tensor, Var};

use crate::backbones::dilated_resnet::{DilatedResNetSpec, RESNET101_BLOCKS, RESNET50_BLOCKS};
use crate::backbones::resnet::{bn, relu};
use crate::config::KeyKind;
use crate::layers::{Conv, Ctx, Norm};

pub(crate) fn d_dimension() -> usize {
    2
}
pub(crate) fn d_backbone() -> String {
    "resnet101".to_string()
}
pub(crate) fn d_output_stride() -> usize {
    16
}
pub(crate) fn d_width() -> usize {
    64
}

/// The keys of DANet, OCNet, OCRNet and EANet beyond the common ones, for
/// naming a mistyped one.
pub(crate) const ATTENTION_KEYS: &[(&str, KeyKind)] = &[
    ("backbone", KeyKind::Str),
    ("output_stride", KeyKind::Usize),
    ("backbone_width", KeyKind::Usize),
    ("backbone_blocks", KeyKind::UsizeList),
    ("ocr_channels", KeyKind::Usize),
    ("memory_units", KeyKind::Usize),
    ("dropout", KeyKind::F64),
];

/// The backbone a configuration selects: `backbone` (`resnet50` or
/// `resnet101`), whose block counts `blocks` (three values) replaces when
/// given; errors name the bad key.
pub(crate) fn backbone_spec(
    backbone: &str,
    in_chns: usize,
    width: usize,
    blocks: Option<&Vec<usize>>,
    output_stride: usize,
) -> std::result::Result<DilatedResNetSpec, String> {
    let default = match backbone {
        "resnet50" => RESNET50_BLOCKS,
        "resnet101" => RESNET101_BLOCKS,
        _ => {
            return Err(format!(
                "backbone must be \"resnet50\" or \"resnet101\", got {backbone:?}"
            ))
        }
    };
    if in_chns == 0 {
        return Err("in_chns must be positive".into());
    }
    if width == 0 {
        return Err("backbone_width must be positive".into());
    }
    if let Some(b) = blocks {
        if b.len() != 3 || b.contains(&0) {
            return Err(format!(
                "backbone_blocks must be 3 positive values (layer1..layer3), got {b:?}"
            ));
        }
    }
    if !matches!(output_stride, 8 | 16) {
        return Err(format!(
            "output_stride must be 8 or 16, got {output_stride}"
        ));
    }
    let spec = DilatedResNetSpec {
        in_chns,
        width,
        blocks: blocks.cloned().unwrap_or_else(|| default.to_vec()),
        output_stride,
        flavour: Default::default(),
    };
    spec.validate()?;
    Ok(spec)
}

/// Checks `dimension`, `class_num` and a dropout probability.
pub(crate) fn check_common(
    dimension: usize,
    class_num: usize,
    dropout: f64,
    what: &str,
) -> std::result::Result<(), String> {
    if dimension != 2 {
        return Err(format!(
            "dimension must be 2 ({what} is a 2D network), got {dimension}"
        ));
    }
    if class_num == 0 {
        return Err("class_num must be positive".into());
    }
    if !(0.0..1.0).contains(&dropout) {
        return Err(format!("dropout must be in [0, 1), got {dropout}"));
    }
    Ok(())
}

/// `nn.Sequential(Conv 3x3 (padding 1), BatchNorm, ReLU)` with the
/// convolution at `0` and the BatchNorm at `1`.
pub(crate) struct ConvBnRelu3 {
    conv: Conv,
    bn: Norm,
}

impl ConvBnRelu3 {
    pub(crate) fn new(ctx: &Ctx, cin: usize, cout: usize, bias: bool) -> CandleResult<Self> {
        Ok(Self {
            conv: Conv::new(&ctx.pp(0), 2, cin, cout, 3, 1, 1, bias)?,
            bn: bn(&ctx.pp(1), cout)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        self.bn
            .forward_act(&self.conv.forward(x)?, train, Some(&relu()))
    }
}

/// A 1x1 convolution with bias whose weight starts at zero where `ctx`
/// does not hold it yet (JMedSeg's `_zero_init_conv`); the bias keeps
/// PyTorch's default initialisation.
pub(crate) fn zero_weight_pointwise(ctx: &Ctx, cin: usize, cout: usize) -> CandleResult<Conv> {
    let fresh = !ctx.vb.contains_tensor("weight");
    let conv = Conv::pointwise(ctx, 2, cin, cout)?;
    if fresh {
        let w = ctx.vb.get((cout, cin, 1, 1), "weight")?;
        if w.is_variable() {
            Var::from_tensor(&w)?.set(&w.zeros_like()?)?;
        }
    }
    Ok(conv)
}

/// `[N, C, H, W] -> [N, C, H * W]`.
pub(crate) fn flat(x: &Tensor) -> CandleResult<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h * w))
}

/// `[N, A, B] -> [N, B, A]`, contiguous.
pub(crate) fn t(x: &Tensor) -> CandleResult<Tensor> {
    x.transpose(1, 2)?.contiguous()
}

/// Self-attention over positions (DANet's PAM, OCNet's OC module, both from
/// SAGAN): queries `q` and keys `k` `[N, C', H, W]`, values `v`
/// `[N, C, H, W]`; `softmax(q^T k)` over the keys' positions weighs the
/// values: returns `[N, C, H, W]`.
pub(crate) fn position_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> CandleResult<Tensor> {
    let (n, c, h, w) = v.dims4()?;
    let q = t(&flat(q)?)?; // [N, HW, C']
    let k = flat(k)?.contiguous()?; // [N, C', HW]
    let attention = candle_nn::ops::softmax_last_dim(&q.matmul(&k)?)?; // [N, HW, HW]
    let v = flat(v)?.contiguous()?; // [N, C, HW]
    v.matmul(&t(&attention)?)?.reshape((n, c, h, w))
}
