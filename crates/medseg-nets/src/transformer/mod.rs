//! Transformer building blocks shared by the transformer hybrids (UNETR):
//! layer normalisation, the MLP, multi-head self-attention, the
//! pre-norm transformer block, the ViT patch embedding and the ViT encoder.
//! Module names follow MONAI (`monai.networks.blocks`) so that state dicts
//! import by name.

pub mod attention;
pub mod vit;

pub use attention::SelfAttention;
pub use vit::{LayerNorm, Mlp, PatchEmbedding, TransformerBlock, Vit};
