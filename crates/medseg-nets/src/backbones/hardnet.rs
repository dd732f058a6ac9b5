//! HarDNet, the harmonic densely connected network (Chao et al., "HarDNet:
//! A Low Memory Traffic Network", ICCV 2019), as a reusable encoder in the
//! layout of the authors' code (github.com/PingoLH/Pytorch-HarDNet,
//! hardnet.py, also github.com/james128333/HarDNet-MSEG lib/hardnet_68.py
//! and JMedSeg model/HarDNet.py); see [`HarDNet`].

use candle_core::{Result as CandleResult, Tensor};

use crate::backbones::resnet::{bn, max_pool};
use crate::layers::{Conv, Ctx, Dropout, Norm};

/// The reference's `ConvLayer`: convolution without bias (`conv`, padding
/// `k / 2`), BatchNorm (`norm`), ReLU6.
pub struct ConvLayer {
    conv: Conv,
    norm: Norm,
}

impl ConvLayer {
    /// `cin -> cout` channels, square kernel `k`, stride `stride`.
    pub(crate) fn new(
        ctx: &Ctx,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
    ) -> CandleResult<Self> {
        Ok(Self {
            conv: Conv::new(&ctx.pp("conv"), 2, cin, cout, k, stride, k / 2, false)?,
            norm: bn(&ctx.pp("norm"), cout)?,
        })
    }

    /// `relu6(norm(conv(x)))` (`train`: batch statistics and running-average
    /// update).
    pub fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let y = self.norm.forward(&self.conv.forward(x)?, train)?;
        y.maximum(0.0)?.minimum(6.0)
    }
}

/// Output channels, input channels and the earlier layers (0: the block's
/// input) that layer `layer` (from 1) of a harmonic dense block reads: the
/// reference's `HarDBlock.get_link`. Layer `l` reads every layer `l - 2^i`
/// with `2^i` dividing `l`; its width is `growth_rate * grmul^(links - 1)`
/// rounded to an even number.
pub fn hard_link(
    layer: usize,
    base_ch: usize,
    growth_rate: usize,
    grmul: f64,
) -> (usize, usize, Vec<usize>) {
    if layer == 0 {
        return (base_ch, 0, Vec::new());
    }
    let mut out = growth_rate as f64;
    let mut link = Vec::new();
    for i in 0..10 {
        let dv = 1usize << i;
        if layer % dv == 0 {
            link.push(layer - dv);
            if i > 0 {
                out *= grmul;
            }
        }
    }
    // int(int(out + 1) / 2) * 2
    let out = ((out + 1.0).floor() as usize / 2) * 2;
    let cin = link
        .iter()
        .map(|&k| hard_link(k, base_ch, growth_rate, grmul).0)
        .sum();
    (out, cin, link)
}

/// A harmonic dense block (`HarDBlock`, `keepBase = False`): `layers.{j}`
/// are [`ConvLayer`]s (3x3), layer `j + 1` reading the concatenation of the
/// layers [`hard_link`] names; the output concatenates the odd layers and
/// the last one.
pub struct HarDBlock {
    layers: Vec<ConvLayer>,
    links: Vec<Vec<usize>>,
    out_chns: usize,
}

impl HarDBlock {
    /// A block of `n_layers` layers on `cin` channels.
    pub(crate) fn new(
        ctx: &Ctx,
        cin: usize,
        growth_rate: usize,
        grmul: f64,
        n_layers: usize,
    ) -> CandleResult<Self> {
        let mut layers = Vec::with_capacity(n_layers);
        let mut links = Vec::with_capacity(n_layers);
        let mut out_chns = 0;
        for i in 0..n_layers {
            let (outch, inch, link) = hard_link(i + 1, cin, growth_rate, grmul);
            layers.push(ConvLayer::new(&ctx.pp("layers").pp(i), inch, outch, 3, 1)?);
            links.push(link);
            if i % 2 == 0 || i == n_layers - 1 {
                out_chns += outch;
            }
        }
        Ok(Self {
            layers,
            links,
            out_chns,
        })
    }

    /// Output channels.
    pub fn out_chns(&self) -> usize {
        self.out_chns
    }

    /// The block's output.
    pub fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let mut outs = vec![x.clone()];
        for (layer, link) in self.layers.iter().zip(&self.links) {
            let tin: Vec<&Tensor> = link.iter().map(|&i| &outs[i]).collect();
            let x = if tin.len() > 1 {
                Tensor::cat(&tin, 1)?
            } else {
                tin[0].clone()
            };
            let y = layer.forward(&x, train)?;
            outs.push(y);
        }
        let t = outs.len();
        let keep: Vec<&Tensor> = (0..t)
            .filter(|&i| i == t - 1 || i % 2 == 1)
            .map(|i| &outs[i])
            .collect();
        Tensor::cat(&keep, 1)
    }
}

/// Shape of a [`HarDNet`] (the reference's `arch` tables).
#[derive(Clone, Debug, PartialEq)]
pub struct HarDNetSpec {
    /// Input channels (the reference: 3).
    pub in_chns: usize,
    /// Channels of the two stem convolutions.
    pub first_chns: [usize; 2],
    /// Kernel of the second stem convolution (3; 1 in the depth-wise
    /// variants, not provided here).
    pub second_kernel: usize,
    /// Output channels of the 1x1 transition after each block (`ch_list`).
    pub block_chns: Vec<usize>,
    /// Growth rate of each block (`gr`).
    pub growth_rates: Vec<usize>,
    /// Layers of each block (`n_layers`).
    pub block_layers: Vec<usize>,
    /// Width multiplier of the harmonic links (`grmul`).
    pub grmul: f64,
    /// Max pooling (2x2, stride 2) after each transition (`downSamp`).
    pub downsample: Vec<bool>,
    /// Dropout between the last block and its transition (HarDNet-85: 0.1;
    /// 0: none, and no module index taken).
    pub final_dropout: f64,
}

impl HarDNetSpec {
    /// HarDNet-68 (`arch = 68`): 16,540,348 parameters for 3 inputs
    /// (without the ImageNet classifier).
    pub fn hardnet68(in_chns: usize) -> Self {
        Self {
            in_chns,
            first_chns: [32, 64],
            second_kernel: 3,
            block_chns: vec![128, 256, 320, 640, 1024],
            growth_rates: vec![14, 16, 20, 40, 160],
            block_layers: vec![8, 16, 16, 16, 4],
            grmul: 1.7,
            downsample: vec![true, false, true, true, false],
            final_dropout: 0.0,
        }
    }

    /// HarDNet-85 (`arch = 85`).
    pub fn hardnet85(in_chns: usize) -> Self {
        Self {
            in_chns,
            first_chns: [48, 96],
            second_kernel: 3,
            block_chns: vec![192, 256, 320, 480, 720, 1280],
            growth_rates: vec![24, 24, 28, 36, 48, 256],
            block_layers: vec![8, 16, 16, 16, 16, 4],
            grmul: 1.7,
            downsample: vec![true, false, true, false, true, false],
            final_dropout: 0.1,
        }
    }

    /// HarDNet-39 (`arch = 39`, the non-depth-wise layout).
    pub fn hardnet39(in_chns: usize) -> Self {
        Self {
            in_chns,
            first_chns: [24, 48],
            second_kernel: 3,
            block_chns: vec![96, 320, 640, 1024],
            growth_rates: vec![16, 20, 64, 160],
            block_layers: vec![4, 16, 8, 4],
            grmul: 1.6,
            downsample: vec![true, true, true, false],
            final_dropout: 0.0,
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let n = self.block_layers.len();
        if n == 0 {
            return Err("a HarDNet needs at least one block".into());
        }
        if self.block_chns.len() != n || self.growth_rates.len() != n || self.downsample.len() != n
        {
            return Err(format!(
                "block_chns {:?}, growth_rates {:?}, block_layers {:?} and downsample must have \
                 the same length",
                self.block_chns, self.growth_rates, self.block_layers
            ));
        }
        if self.in_chns == 0
            || self.first_chns.contains(&0)
            || self.block_chns.contains(&0)
            || self.growth_rates.contains(&0)
            || self.block_layers.contains(&0)
        {
            return Err("channels, growth rates and layer counts must be positive".into());
        }
        if !(self.grmul.is_finite() && self.grmul > 0.0) {
            return Err(format!("grmul must be positive, got {}", self.grmul));
        }
        if !(0.0..1.0).contains(&self.final_dropout) {
            return Err(format!(
                "final_dropout must be in [0, 1), got {}",
                self.final_dropout
            ));
        }
        Ok(())
    }

    /// Overall stride of the encoder: 4 (stem) times 2 per pooling.
    pub fn stride(&self) -> usize {
        4 << self.downsample.iter().filter(|&&d| d).count()
    }
}

struct Stage {
    block: HarDBlock,
    dropout: Option<Dropout>,
    transition: ConvLayer,
    pool: bool,
}

/// HarDNet encoder in the reference's `base` module list (the ImageNet
/// classifier left out): `base.0` a stride-2 3x3 [`ConvLayer`], `base.1` a
/// [`ConvLayer`], `base.2` 3x3 max pooling (stride 2, padding 1), then per
/// block a [`HarDBlock`], (HarDNet-85's dropout before the last
/// transition,) a 1x1 [`ConvLayer`] transition to `block_chns[i]` and,
/// where `downsample[i]`, 2x2 max pooling; every item takes one index of
/// `base` (so HarDNet-68's transitions are `base.4, 7, 9, 12, 15`, the
/// outputs HarDNet-MSEG taps).
///
/// Input sizes: multiples of [`HarDNetSpec::stride`] (32 for HarDNet-68)
/// keep every pooling exact.
pub struct HarDNet {
    spec: HarDNetSpec,
    stem0: ConvLayer,
    stem1: ConvLayer,
    stages: Vec<Stage>,
}

impl HarDNet {
    /// Builds the encoder under `ctx` (its tensors under `base.*`).
    pub(crate) fn build(ctx: &Ctx, spec: HarDNetSpec) -> CandleResult<Self> {
        spec.validate().map_err(candle_core::Error::Msg)?;
        let base = ctx.pp("base");
        let [c0, c1] = spec.first_chns;
        let stem0 = ConvLayer::new(&base.pp(0), spec.in_chns, c0, 3, 2)?;
        let stem1 = ConvLayer::new(&base.pp(1), c0, c1, spec.second_kernel, 1)?;
        let mut idx = 3;
        let mut ch = c1;
        let n = spec.block_layers.len();
        let mut stages = Vec::with_capacity(n);
        for (i, (&gr, &layers)) in spec.growth_rates.iter().zip(&spec.block_layers).enumerate() {
            let block = HarDBlock::new(&base.pp(idx), ch, gr, spec.grmul, layers)?;
            idx += 1;
            let dropout = if i == n - 1 && spec.final_dropout > 0.0 {
                idx += 1;
                Some(Dropout::new(ctx, spec.final_dropout))
            } else {
                None
            };
            let transition =
                ConvLayer::new(&base.pp(idx), block.out_chns(), spec.block_chns[i], 1, 1)?;
            idx += 1;
            if spec.downsample[i] {
                idx += 1;
            }
            ch = spec.block_chns[i];
            stages.push(Stage {
                block,
                dropout,
                transition,
                pool: spec.downsample[i],
            });
        }
        Ok(Self {
            spec,
            stem0,
            stem1,
            stages,
        })
    }

    /// The shape.
    pub fn spec(&self) -> &HarDNetSpec {
        &self.spec
    }

    /// The output of every transition (before its pooling), one per block:
    /// HarDNet-68 gives 128, 256, 320, 640 and 1024 channels at strides 4,
    /// 8, 8, 16 and 32.
    pub fn features(&self, x: &Tensor, train: bool) -> CandleResult<Vec<Tensor>> {
        let y = self.stem0.forward(x, train)?;
        let y = self.stem1.forward(&y, train)?;
        let mut y = max_pool(&y, 3, 2, 1)?;
        let mut feats = Vec::with_capacity(self.stages.len());
        for s in &self.stages {
            let mut z = s.block.forward(&y, train)?;
            if let Some(d) = &s.dropout {
                z = d.forward(&z, train)?;
            }
            let z = s.transition.forward(&z, train)?;
            y = if s.pool {
                max_pool(&z, 2, 2, 0)?
            } else {
                z.clone()
            };
            feats.push(z);
        }
        Ok(feats)
    }
}
