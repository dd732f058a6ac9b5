//! # medseg-nets
//!
//! Segmentation networks as candle modules: the UNet family in 2D and 3D, a registry by name, safetensors checkpoints and PyTorch weight import.

#![warn(missing_docs)]
