//! The VGG feature extractor (Simonyan & Zisserman 2015) in torchvision's
//! layout (`torchvision.models.vgg*().features`, built by its
//! `make_layers`): blocks of 3x3 convolutions (padding 1, with bias), each
//! followed by an optional BatchNorm and a ReLU, a 2x2 max pooling after
//! every block. Module indices are those of torchvision's `nn.Sequential`
//! (`0` the first convolution, `1` its BatchNorm or ReLU, ...), so that
//! `features` state dicts import by name under the caller's prefix.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::NormType;
use crate::layers::{max_pool2, Act, Conv, Ctx, Norm};

/// Block widths of torchvision's VGG configurations A (VGG11) and D
/// (VGG16): `[64, 128, 256, 512, 512]`.
pub const VGG_WIDTHS: [usize; 5] = [64, 128, 256, 512, 512];
/// Convolutions per block of VGG11 (torchvision configuration "A").
pub const VGG11_CONVS: [usize; 5] = [1, 1, 2, 2, 2];
/// Convolutions per block of VGG16 (torchvision configuration "D").
pub const VGG16_CONVS: [usize; 5] = [2, 2, 3, 3, 3];

/// One `Conv2d(3x3, padding 1) [+ BatchNorm2d] + ReLU` unit.
struct ConvUnit {
    conv: Conv,
    bn: Option<Norm>,
}

impl ConvUnit {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv.forward(x)?;
        match &self.bn {
            // ReLU as a LeakyReLU of slope 0, so that BatchNorm fuses it
            Some(bn) => bn.forward_act(&y, train, Some(&Act::LeakyRelu(0.0))),
            None => y.relu(),
        }
    }
}

/// The VGG feature extractor: `widths.len()` blocks of `convs[i]` 3x3
/// convolutions of `widths[i]` channels, each followed by a BatchNorm when
/// `batch_norm` is set, and a ReLU. Tensors are named as torchvision's
/// `features` (`0.weight`, `1.running_mean`, ...), each block's max pooling
/// taking one index too. The caller pools between blocks (plain pooling,
/// [`Vgg::forward`], or pooling with indices, as SegNet does).
///
/// Differences from torchvision: `in_chns` input channels instead of 3,
/// configurable widths and block lengths, and PyTorch's default uniform
/// initialisation instead of torchvision's Kaiming normal (no pretrained
/// weights are shipped or downloaded).
pub struct Vgg {
    blocks: Vec<Vec<ConvUnit>>,
    widths: Vec<usize>,
}

impl Vgg {
    /// Builds the extractor at `ctx`'s path; `widths` and `convs` have one
    /// value per block, all positive.
    pub(crate) fn new(
        ctx: &Ctx,
        in_chns: usize,
        widths: &[usize],
        convs: &[usize],
        batch_norm: bool,
    ) -> Result<Self> {
        if widths.len() != convs.len() || widths.is_empty() {
            candle_core::bail!(
                "vgg: widths {widths:?} and convs {convs:?} must have one value per block"
            )
        }
        let mut blocks = Vec::with_capacity(widths.len());
        let mut cin = in_chns;
        for (block, (&w, &n)) in widths.iter().zip(convs).enumerate() {
            let mut units = Vec::with_capacity(n);
            for j in 0..n {
                let i = Self::conv_index(convs, batch_norm, block, j);
                let conv = Conv::new(&ctx.pp(i), 2, cin, w, 3, 1, 1, true)?;
                let bn = if batch_norm {
                    Some(Norm::new(&ctx.pp(i + 1), NormType::BatchNorm, w, 1)?)
                } else {
                    None
                };
                units.push(ConvUnit { conv, bn });
                cin = w;
            }
            blocks.push(units);
        }
        Ok(Self {
            blocks,
            widths: widths.to_vec(),
        })
    }

    /// Builds the extractor at the root of `vb` (wrap it in `vb.pp("...")`
    /// for a prefix), creating missing tensors with PyTorch's default
    /// initialisation from `seed`; `widths` and `convs` have one value per
    /// block, all positive. For use outside the built-in networks.
    pub fn from_varbuilder(
        vb: VarBuilder,
        seed: u64,
        in_chns: usize,
        widths: &[usize],
        convs: &[usize],
        batch_norm: bool,
    ) -> Result<Self> {
        if in_chns == 0 || widths.contains(&0) || convs.contains(&0) {
            candle_core::bail!(
                "vgg: in_chns ({in_chns}), widths {widths:?} and convs {convs:?} must be positive"
            )
        }
        Self::new(&Ctx::new(vb, seed), in_chns, widths, convs, batch_norm)
    }

    /// torchvision's `features` index of convolution `j` of block `block`
    /// (its BatchNorm, if any, is the next index).
    pub fn conv_index(convs: &[usize], batch_norm: bool, block: usize, j: usize) -> usize {
        let per = if batch_norm { 3 } else { 2 };
        let before: usize = convs[..block].iter().map(|n| n * per + 1).sum();
        before + j * per
    }

    /// Number of blocks.
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Output channels of each block.
    pub fn widths(&self) -> &[usize] {
        &self.widths
    }

    /// The convolutions of block `i` (no pooling) on `[N, C, H, W]`.
    pub fn block(&self, i: usize, x: &Tensor, train: bool) -> Result<Tensor> {
        let units = self
            .blocks
            .get(i)
            .ok_or_else(|| candle_core::Error::Msg(format!("vgg: no block {i}")))?;
        let mut y = x.clone();
        for u in units {
            y = u.forward(&y, train)?;
        }
        Ok(y)
    }

    /// Every block's output before its pooling, finest first, with 2x2 max
    /// pooling between blocks (the last block's pooling is left to the
    /// caller).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let mut outs: Vec<Tensor> = Vec::with_capacity(self.blocks.len());
        for i in 0..self.blocks.len() {
            let input = match outs.last() {
                Some(prev) => max_pool2(prev, 2)?,
                None => x.clone(),
            };
            outs.push(self.block(i, &input, train)?);
        }
        Ok(outs)
    }
}
