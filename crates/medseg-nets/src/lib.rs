#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod adabn;
// attention heads on a dilated ResNet (JMedSeg)
mod attention;
// shared encoders (network zoo II)
pub mod backbones;
mod cenet;
mod checkpoint;
pub mod config;
mod coplenet;
mod danet;
// U2Net and CS-Net
mod csnet;
mod deeplabv3plus;
mod denseunet;
mod dlinknet;
mod dropout_step;
mod error;
// HarDNet-MSEG and SETR (JMedSeg)
mod eanet;
mod hardnet_mseg;
mod hrnet;
mod input_size;
mod layers;
mod lightnet;
mod multiresunet;
mod ocnet;
mod ocrnet;
mod onenet;
pub mod pooling;
mod pretrained;
mod pspnet;
mod pytorch;
mod r2unet;
mod registry;
mod segnet;
// HarDNet-MSEG and SETR (JMedSeg)
mod setr;
mod stn;
mod summary;
// Swin-UNet
mod swinunet;
mod ternaus;
// U2Net and CS-Net
mod u2net;
mod unet;
mod unet2d5;
mod unet3plus;
mod unetpp;
// transformer hybrids (issue 21, part B)
pub mod transformer;
mod unetr;
// TransUNet (network zoo II)
mod transunet;

use candle_core::{Result as CandleResult, Tensor};

pub use adabn::{adapt_batch_norm, without_dropout};
pub use backbones::{
    DilatedResNet, DilatedResNetSpec, ResNet, ResNetFlavour, ResNetNames, ResNetSpec, Vgg,
};
pub use cenet::{CENet, CENetConfig};
pub use checkpoint::{
    count_parameters, import_pytorch, inference_copy, load_checkpoint, load_network,
    load_network_with, read_checkpoint_config, save_checkpoint, trainable_vars,
};
pub use config::{AuxDecoderType, NormType, UNetConfig, UpMode};
pub use coplenet::COPLENet;
pub use danet::{DANet, DANetConfig};
// U2Net and CS-Net
pub use csnet::{CSNet, CSNetConfig};
pub use deeplabv3plus::{DeepLabV3Plus, DeepLabV3PlusConfig};
pub use denseunet::{DenseUNet, DenseUNetConfig};
pub use dlinknet::{DLinkNet, DLinkNetConfig};
pub use dropout_step::{dropout_step, set_dropout_step};
pub use error::{NetError, Result};
// HarDNet-MSEG and SETR (JMedSeg)
pub use eanet::{EANet, EANetConfig, ExternalAttention};
pub use hardnet_mseg::{HarDNetMSEG, HarDNetMSEGConfig};
pub use hrnet::{HRNet, HRNetConfig};
pub use input_size::InputSize;
pub use layers::LayerRecord;
pub use lightnet::{LightNet, LightNetConfig};
pub use multiresunet::{MultiResUNet, MultiResUNetConfig};
pub use ocnet::{OCNet, OCNetConfig};
pub use ocrnet::{OCRNet, OCRNetConfig};
pub use onenet::{OneNet, OneNetConfig};
pub use pooling::{max_pool2d_with_indices, max_unpool2d};
pub use pretrained::{
    encoder_tensors, load_pretrained, save_encoder, split_pretrained, vars_named, PretrainedSpec,
    ENCODER_CONFIG_KEY, ENCODER_FORMAT_KEY, ENCODER_ORIGIN_KEY, FREEZE_KEY, PRETRAINED_KEY,
};
pub use pspnet::{PSPNet, PSPNetConfig};
pub use pytorch::{is_pytorch_checkpoint, MAX_PICKLE_BYTES, PYMIC_STATE_KEY};
pub use r2unet::{R2UNet, ResUNet};
pub use registry::{build_network, parse_unet_config, NetBuilder, NetRegistry};
pub use segnet::{SegNet, SegNetConfig};
// HarDNet-MSEG and SETR (JMedSeg)
pub use setr::{SETRConfig, SETR, SETR_LAYER_NORM_EPS};
pub use stn::{Stn, StnConfig};
pub use summary::{summarize, NetSummary};
// Swin-UNet
pub use swinunet::{SwinUNet, SwinUNetConfig};
pub use ternaus::{TernausUNet, TernausUNetConfig};
// U2Net and CS-Net
pub use u2net::{U2Net, U2NetConfig};
pub use unet::{CCTNet, DualDecoderUNet, MCNet, UNet, URPCNet};
pub use unet2d5::UNet2D5;
pub use unet3plus::UNet3Plus;
pub use unetpp::UNetPlusPlus;
// transformer hybrids (issue 21, part B)
pub use unetr::{UNETRConfig, UNETR, UNETR_LAYERS, UNETR_PATCH};
// TransUNet (network zoo II)
pub use transunet::{TransUNet, TransUNetConfig, TRANSUNET_PATCH};

/// Everything a forward pass returns.
#[derive(Clone, Debug)]
pub struct NetOutput {
    /// Main logits, `[N, class_num, ...spatial]` at the input resolution.
    pub logits: Tensor,
    /// Deep-supervision logits (UNet `multiscale_pred`: decoder levels 1, 2,
    /// ... at their own, coarser, resolution, finest first; UNet++: the
    /// intermediate nested outputs at full resolution).
    pub deep: Vec<Tensor>,
    /// Auxiliary predictions at the input resolution: the second decoder
    /// (dual decoder), the other decoders (MCNet, training only), the
    /// perturbed decoders (CCT, training only), the pyramid (URPC).
    pub aux: Vec<Tensor>,
}

/// Name and shape of one tensor the network holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamInfo {
    /// Full VarBuilder path, e.g. `encoder.in_conv.conv_conv.0.weight`.
    pub name: String,
    /// Shape (PyTorch layout).
    pub shape: Vec<usize>,
    /// False for BatchNorm running statistics.
    pub trainable: bool,
}

/// A segmentation network.
pub trait SegNetwork: Send + Sync {
    /// Forward pass; `train` selects dropout, batch statistics (and their
    /// running-average update) and auxiliary training outputs.
    /// Input `[N, in_chns, H, W]` (2D) or `[N, in_chns, D, H, W]` (3D; a 2D
    /// network folds depth into the batch and unfolds its outputs).
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput>;

    /// Eval-mode logits.
    fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        Ok(self.forward_t(x, false)?.logits)
    }

    /// The complete configuration (defaults filled in) as JSON; it is what
    /// checkpoints store.
    fn config(&self) -> serde_json::Value;

    /// Spatial dimensions of the convolutions (2 or 3).
    fn dimension(&self) -> usize;

    /// Input channels.
    fn in_chns(&self) -> usize;

    /// Output classes.
    fn class_num(&self) -> usize;

    /// Every tensor the network holds, in creation order.
    fn parameters(&self) -> &[ParamInfo];

    /// The encoder's feature maps, finest first (the last is the
    /// bottleneck), for self-supervised pre-training of the encoder alone.
    /// `None` when the network does not expose its encoder. A 2D network
    /// given `[N, C, D, H, W]` folds depth into the batch and returns folded
    /// (`[N * D, ...]`) features.
    fn encode(&self, _x: &Tensor, _train: bool) -> CandleResult<Option<Vec<Tensor>>> {
        Ok(None)
    }

    /// Name prefixes of the encoder's tensors (e.g. `["encoder."]`); empty
    /// when the network does not expose its encoder. What pre-training
    /// exports and what `network.freeze_encoder` freezes.
    fn encoder_prefixes(&self) -> Vec<String> {
        Vec::new()
    }

    /// The spatial sizes the network accepts, in its own dimension
    /// ([`SegNetwork::dimension`] axes). Inference pads images to the
    /// nearest accepted size and crops the prediction back. A network that
    /// downsamples must say so here; the default accepts any size.
    fn input_size(&self) -> InputSize {
        InputSize::any(self.dimension())
    }

    /// Number of trainable scalars (running statistics excluded).
    fn num_parameters(&self) -> usize {
        self.parameters()
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }
}

/// Folds depth into the batch: `[N, C, D, H, W] -> [N * D, C, H, W]`,
/// returning `N` and `D` for [`unfold_depth`].
pub fn fold_depth(x: &Tensor) -> CandleResult<(Tensor, usize, usize)> {
    let (n, c, d, h, w) = x.dims5()?;
    let y = x
        .permute((0, 2, 1, 3, 4))?
        .contiguous()?
        .reshape((n * d, c, h, w))?;
    Ok((y, n, d))
}

/// Inverse of [`fold_depth`]: `[N * D, C, H, W] -> [N, C, D, H, W]`.
pub fn unfold_depth(x: &Tensor, n: usize, d: usize) -> CandleResult<Tensor> {
    let (nd, c, h, w) = x.dims4()?;
    if nd != n * d {
        candle_core::bail!("unfold_depth: batch {nd} is not {n} x {d}")
    }
    x.reshape((n, d, c, h, w))?
        .permute((0, 2, 1, 3, 4))?
        .contiguous()
}
