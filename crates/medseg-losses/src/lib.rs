//! # medseg-losses
//!
//! Differentiable segmentation losses on candle tensors for full, partial, sparse and noisy labels, with a registry by name.

#![warn(missing_docs)]
