//! The projection head of contrastive pre-training and the pooled encoder
//! representation it reads.

use candle_core::{Result, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use medseg_nets::SegNetwork;

/// Global average pooling over the spatial axes: `[N, C, ...] -> [N, C]`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    let (n, c) = (x.dim(0)?, x.dim(1)?);
    x.reshape((n, c, ()))?.mean(2)
}

/// The encoder's representation of `x`: its deepest feature map, averaged
/// over space (`[N, C_bottleneck]`). An error when the network does not
/// expose its encoder.
pub fn encoder_representation(net: &dyn SegNetwork, x: &Tensor, train: bool) -> Result<Tensor> {
    let feats = net.encode(x, train)?.ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "network {} does not expose its encoder for pre-training (use a UNet-family network: UNet, AttentionUNet, UNet_ScSE, DualDecoderUNet, MCNet, CCTNet, URPC)",
            net.config().get("name").and_then(|v| v.as_str()).unwrap_or("?")
        ))
    })?;
    let deepest = feats
        .last()
        .ok_or_else(|| candle_core::Error::Msg("the encoder returned no feature map".into()))?;
    global_avg_pool(deepest)
}

/// MoCo v2 / SimCLR projection head: `Linear(C, hidden) -> ReLU ->
/// Linear(hidden, dim)`, parameters under `fc1.` and `fc2.`.
pub struct ProjectionHead {
    fc1: Linear,
    fc2: Linear,
}

impl ProjectionHead {
    /// A head from `input` features to `dim`, through `hidden`.
    pub fn new(input: usize, hidden: usize, dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: candle_nn::linear(input, hidden, vb.pp("fc1"))?,
            fc2: candle_nn::linear(hidden, dim, vb.pp("fc2"))?,
        })
    }
}

impl Module for ProjectionHead {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.relu()?)
    }
}
