//! A ResNet encoder of BasicBlocks in torchvision's layout (ResNet-18/34
//! style), with configurable widths, block counts, stem names and per-stage
//! dilation (segmentation_models_pytorch's output-stride trick); see
//! [`ResNet`].

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::VarBuilder;

use crate::config::NormType;
use crate::layers::{Act, Conv, Ctx, Norm};
use crate::ParamInfo;

/// ReLU, as a LeakyReLU of slope 0 so that BatchNorm fuses it.
pub(crate) fn relu() -> Act {
    Act::LeakyRelu(0.0)
}

/// BatchNorm over `c` channels.
pub(crate) fn bn(ctx: &Ctx, c: usize) -> CandleResult<Norm> {
    Norm::new(ctx, NormType::BatchNorm, c, 1)
}

/// Max pooling, square kernel `k`, stride `s`, padding `p` (padded samples
/// never win, as PyTorch); output `(L + 2p - k) / s + 1` per axis.
pub(crate) fn max_pool(x: &Tensor, k: usize, s: usize, p: usize) -> CandleResult<Tensor> {
    let x = if p > 0 {
        let mut y = x.clone();
        for axis in [2, 3] {
            let mut shape = y.dims().to_vec();
            shape[axis] = p;
            let pad = Tensor::full(f32::NEG_INFINITY, shape, y.device())?.to_dtype(y.dtype())?;
            y = Tensor::cat(&[&pad, &y, &pad], axis)?;
        }
        y
    } else {
        x.clone()
    };
    let (_, _, h, w) = x.dims4()?;
    if h < k || w < k {
        candle_core::bail!(
            "max pooling: input {:?} smaller than the kernel {k}",
            x.dims()
        )
    }
    if medseg_ops::fast_path(&x) {
        return medseg_ops::max_pool2d(&x, [k, k], [s, s]);
    }
    // Composition (other devices and dtypes): maximum over the k * k
    // strided taps of the window.
    let (ho, wo) = ((h - k) / s + 1, (w - k) / s + 1);
    let idx = |off: usize, n: usize| -> CandleResult<Tensor> {
        let v: Vec<u32> = (0..n).map(|j| (off + j * s) as u32).collect();
        Tensor::new(v.as_slice(), x.device())
    };
    let mut acc: Option<Tensor> = None;
    for a in 0..k {
        let rows = x.index_select(&idx(a, ho)?, 2)?;
        for b in 0..k {
            let t = rows.index_select(&idx(b, wo)?, 3)?;
            acc = Some(match acc {
                None => t,
                Some(m) => m.maximum(&t)?,
            });
        }
    }
    acc.ok_or_else(|| candle_core::Error::Msg("max pooling: empty kernel".into()))
}

/// torchvision's BasicBlock: `relu(bn2(conv2(relu(bn1(conv1(x))))) + id)`,
/// parameters `conv1`, `bn1`, `conv2`, `bn2` and, where the shape changes,
/// `downsample.0` (1x1 convolution) and `downsample.1` (BatchNorm).
pub struct BasicBlock {
    conv1: Conv,
    bn1: Norm,
    conv2: Conv,
    bn2: Norm,
    downsample: Option<(Conv, Norm)>,
}

impl BasicBlock {
    /// A block from `cin` to `cout` channels; `stride` applies to `conv1`
    /// (and the projection), `dilation` to both 3x3 convolutions (padding =
    /// dilation). The projection exists where `stride != 1 || cin != cout`.
    pub(crate) fn new(
        ctx: &Ctx,
        cin: usize,
        cout: usize,
        stride: usize,
        dilation: usize,
        project: bool,
    ) -> CandleResult<Self> {
        let d = dilation;
        let conv1 = Conv::conv2d(&ctx.pp("conv1"), cin, cout, 3, stride, d, d, 1, false)?;
        let bn1 = bn(&ctx.pp("bn1"), cout)?;
        let conv2 = Conv::conv2d(&ctx.pp("conv2"), cout, cout, 3, 1, d, d, 1, false)?;
        let bn2 = bn(&ctx.pp("bn2"), cout)?;
        let downsample = if project {
            let p = ctx.pp("downsample");
            Some((
                Conv::new(&p.pp(0), 2, cin, cout, 1, stride, 0, false)?,
                bn(&p.pp(1), cout)?,
            ))
        } else {
            None
        };
        Ok(Self {
            conv1,
            bn1,
            conv2,
            bn2,
            downsample,
        })
    }

    /// The block's output (`train`: batch statistics and running-average
    /// update in the BatchNorms).
    pub fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let y = self
            .bn1
            .forward_act(&self.conv1.forward(x)?, train, Some(&relu()))?;
        let y = self.bn2.forward(&self.conv2.forward(&y)?, train)?;
        let id = match &self.downsample {
            Some((c, n)) => n.forward(&c.forward(x)?, train)?,
            None => x.clone(),
        };
        (y + id)?.relu()
    }
}

/// Parameter names of the stem and the stages of a [`ResNet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResNetNames {
    /// The 7x7 stem convolution (torchvision: `conv1`).
    pub stem_conv: String,
    /// The stem's BatchNorm (torchvision: `bn1`).
    pub stem_bn: String,
    /// Prefix of the stages, numbered from 1 (torchvision: `layer` for
    /// `layer1..layer4`).
    pub stage: String,
}

impl ResNetNames {
    /// torchvision's names (`conv1`, `bn1`, `layer1..layer4`), also those of
    /// segmentation_models_pytorch's ResNet encoders (under `encoder.`).
    pub fn torchvision() -> Self {
        Self {
            stem_conv: "conv1".into(),
            stem_bn: "bn1".into(),
            stage: "layer".into(),
        }
    }
}

/// Shape of a [`ResNet`]: input channels, stage widths, blocks per stage
/// and dilation per stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResNetSpec {
    /// Input channels of the stem.
    pub in_chns: usize,
    /// Channels of the stem (torchvision: 64).
    pub stem_chns: usize,
    /// Output channels of each stage (ResNet-34: `[64, 128, 256, 512]`);
    /// its length is the number of stages built (1 to 4).
    pub widths: Vec<usize>,
    /// BasicBlocks per stage (ResNet-34: `[3, 4, 6, 3]`), as many as
    /// `widths`.
    pub blocks: Vec<usize>,
    /// Dilation per stage (1: ordinary). A stage of dilation `d > 1` has
    /// stride 1 instead of 2 and every 3x3 convolution in it dilated by `d`
    /// with padding `d`, as segmentation_models_pytorch's
    /// `replace_strides_with_dilation` (output stride 16: `[1, 1, 1, 2]`).
    pub dilations: Vec<usize>,
    /// Parameter names.
    pub names: ResNetNames,
}

impl ResNetSpec {
    /// ResNet-34 (`[3, 4, 6, 3]` blocks of `[64, 128, 256, 512]` channels)
    /// with torchvision's names, its first `stages` stages.
    pub fn resnet34(in_chns: usize, stages: usize) -> Self {
        Self {
            in_chns,
            stem_chns: 64,
            widths: vec![64, 128, 256, 512][..stages].to_vec(),
            blocks: vec![3, 4, 6, 3][..stages].to_vec(),
            dilations: vec![1; stages],
            names: ResNetNames::torchvision(),
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let n = self.widths.len();
        if n == 0 || n > 4 {
            return Err(format!("a ResNet has 1 to 4 stages, got {n}"));
        }
        if self.blocks.len() != n || self.dilations.len() != n {
            return Err(format!(
                "widths {:?}, blocks {:?} and dilations {:?} must have the same length",
                self.widths, self.blocks, self.dilations
            ));
        }
        if self.in_chns == 0 || self.stem_chns == 0 || self.widths.contains(&0) {
            return Err("channel counts must be positive".into());
        }
        if self.blocks.contains(&0) || self.dilations.contains(&0) {
            return Err("block counts and dilations must be positive".into());
        }
        Ok(())
    }
}

/// A ResNet encoder of BasicBlocks in torchvision's layout: the stem (7x7
/// convolution, stride 2, padding 3, no bias; BatchNorm; ReLU), 3x3 max
/// pooling (stride 2, padding 1), then stages of BasicBlocks (strides 1, 2,
/// 2, 2, or 1 where a stage is dilated). Without ImageNet weights (nothing
/// is downloaded); convolutions start from PyTorch's default uniform
/// initialisation.
///
/// [`ResNet::features`] returns the stem output (stride 2) and each stage's
/// output, as segmentation_models_pytorch's encoders do (without the input).
/// CE-Net, PSPNet and DeepLabV3+ build theirs with it.
pub struct ResNet {
    spec: ResNetSpec,
    params: Vec<ParamInfo>,
    stem_conv: Conv,
    stem_bn: Norm,
    stages: Vec<Vec<BasicBlock>>,
}

impl ResNet {
    /// Builds the encoder at the root of `vb` (parameters initialised from
    /// `seed` where `vb` does not hold them).
    pub fn new(spec: ResNetSpec, vb: VarBuilder, seed: u64) -> crate::Result<Self> {
        spec.validate().map_err(crate::NetError::Config)?;
        let ctx = Ctx::new(vb, seed);
        let mut r = Self::build(&ctx, spec)?;
        r.params = ctx.params_snapshot();
        Ok(r)
    }

    /// Builds the encoder in `ctx` (the caller validated `spec`).
    pub(crate) fn build(ctx: &Ctx, spec: ResNetSpec) -> CandleResult<Self> {
        let n = &spec.names;
        let stem_conv = Conv::new(
            &ctx.pp(&n.stem_conv),
            2,
            spec.in_chns,
            spec.stem_chns,
            7,
            2,
            3,
            false,
        )?;
        let stem_bn = bn(&ctx.pp(&n.stem_bn), spec.stem_chns)?;
        let mut stages = Vec::with_capacity(spec.widths.len());
        let mut cin = spec.stem_chns;
        for (i, ((&cout, &nb), &dil)) in spec
            .widths
            .iter()
            .zip(&spec.blocks)
            .zip(&spec.dilations)
            .enumerate()
        {
            let e = ctx.pp(format!("{}{}", n.stage, i + 1));
            let stride = if i == 0 || dil > 1 { 1 } else { 2 };
            // torchvision decides the projection by the undilated stride
            let nominal = if i == 0 { 1 } else { 2 };
            let mut blocks = Vec::with_capacity(nb);
            for j in 0..nb {
                blocks.push(if j == 0 {
                    let project = nominal != 1 || cin != cout;
                    BasicBlock::new(&e.pp(j), cin, cout, stride, dil, project)?
                } else {
                    BasicBlock::new(&e.pp(j), cout, cout, 1, dil, false)?
                });
            }
            stages.push(blocks);
            cin = cout;
        }
        Ok(Self {
            spec,
            params: Vec::new(),
            stem_conv,
            stem_bn,
            stages,
        })
    }

    /// The shape it was built with.
    pub fn spec(&self) -> &ResNetSpec {
        &self.spec
    }

    /// The tensors of a stand-alone encoder ([`ResNet::new`]); empty when
    /// built inside a network (the network lists them).
    pub fn parameters(&self) -> &[ParamInfo] {
        &self.params
    }

    /// Overall stride of each returned feature map: 2 (stem), 4, then 8,
    /// 16, 32 or 1x where a stage is dilated.
    pub fn strides(&self) -> Vec<usize> {
        let mut s = vec![2, 4];
        for &d in self.spec.dilations.iter().skip(1) {
            let last = s[s.len() - 1];
            s.push(if d > 1 { last } else { last * 2 });
        }
        s
    }

    /// Feature maps of `[N, C, H, W]` input: the stem output (after the
    /// ReLU, before the max pooling), then each stage's output.
    pub fn features(&self, x: &Tensor, train: bool) -> CandleResult<Vec<Tensor>> {
        let s = self
            .stem_bn
            .forward_act(&self.stem_conv.forward(x)?, train, Some(&relu()))?;
        let mut out = Vec::with_capacity(1 + self.stages.len());
        let mut y = max_pool(&s, 3, 2, 1)?;
        out.push(s);
        for blocks in &self.stages {
            for b in blocks {
                y = b.forward(&y, train)?;
            }
            out.push(y.clone());
        }
        Ok(out)
    }
}
