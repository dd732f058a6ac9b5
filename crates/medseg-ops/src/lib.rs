//! # medseg-ops
//!
//! Fast CPU candle custom ops for convolutional networks: conv2d/conv3d,
//! transposed convolution, pooling, up-sampling, fused norms with activation
//! (batch, instance, group) and layer norm, a fused in-place Adam step,
//! softmax over channels, and affine grids with bilinear/trilinear grid
//! sampling (a spatial transformer's resampler). Every op has forward and
//! backward; tensors are channel-first (`[N, C, H, W]` or
//! `[N, C, D, H, W]`).
//!
//! The kernels run on f32 CPU tensors; on any other device (CUDA) or dtype
//! every op composes the same computation from candle's own ops, on the
//! tensors' device (see [`device`] and `docs/cuda.md`).

#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod activation;
pub mod adaptive_pool;
pub mod conv;
mod conv_fallback;
mod conv_kernels;
pub mod conv_transpose;
mod conv_winograd;
pub mod device;
pub mod grid_sample;
pub mod layer_norm;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod softmax;
pub mod upsample;

pub use activation::*;
pub use adaptive_pool::{adaptive_avg_pool2d, adaptive_avg_pool3d};
pub use conv::*;
pub use conv_transpose::*;
pub use device::{fast_path, with_candle_ops};
pub use grid_sample::{affine_grid, grid_sample};
pub use layer_norm::layer_norm;
pub use norm::*;
pub use optim::{adam_applies, adam_step, AdamHyper};
pub use pool::*;
pub use softmax::*;
pub use upsample::*;
