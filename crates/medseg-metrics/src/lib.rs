//! # medseg-metrics
//!
//! Segmentation metrics on label arrays (ndarray only): overlap and surface distances with voxel spacing, matching MedPy and MONAI, on an exact EDT.

#![warn(missing_docs)]
