//! Transformer building blocks shared by the transformer hybrids (UNETR):
//! layer normalisation, the MLP, multi-head self-attention, the
//! pre-norm transformer block, the ViT patch embedding and the ViT encoder.
//! Module names follow MONAI (`monai.networks.blocks`) so that state dicts
//! import by name.

pub mod attention;
// Swin Transformer blocks (Swin-UNet)
pub mod swin;
pub mod vit;

pub use attention::SelfAttention;
pub use swin::{
    PatchExpand, PatchMerging, SwinBlock, SwinLinear, SwinMlp, SwinSpec, SwinStage, SwinStageUp,
    WindowAttention,
};
pub use vit::{LayerNorm, Mlp, PatchEmbedding, TransformerBlock, Vit};
