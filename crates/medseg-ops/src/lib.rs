//! # medseg-ops
//!
//! Fast CPU candle custom ops for convolutional networks: conv2d/conv3d, transposed convolution, pooling, up-sampling, fused norms and softmax.

#![warn(missing_docs)]
