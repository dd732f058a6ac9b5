//! # medseg-infer
//!
//! Sliding-window inference with Gaussian weighting, test-time augmentation, ensembles, post-processing and geometry-preserving output.

#![warn(missing_docs)]
