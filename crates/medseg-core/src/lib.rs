//! # medseg-core
//!
//! The shared vocabulary of medseg: [`Image`] (a channel-first `f32` array with
//! its physical geometry), [`LabelMap`] (integer classes with the same geometry),
//! [`Sample`] (what a dataset yields and transforms act on), [`Batch`] and the
//! [`Error`] type, and the one atomic file writer ([`write_atomic`],
//! [`write_atomic_with`]).
//!
//! ## Axis order
//! Arrays are channel-first: `[C, H, W]` for 2D and `[C, D, H, W]` for 3D. Every
//! per-axis quantity (spacing, direction columns) is given in the same array
//! axis order, spatial axes only: `(D, H, W)`. A 2D image carries a geometry whose
//! depth axis is a singleton.
//!
//! World coordinates are NIfTI's RAS+ millimetres, the convention of nibabel.
//! A NIfTI file's voxel index `(i, j, k)` maps to array index `[k, j, i]`.

#![warn(missing_docs)]

mod error;
mod fs;
mod geometry;
mod image;
mod lock;
pub mod runtime;
mod sample;

pub use error::{Error, Result};
pub use fs::{write_atomic, write_atomic_with};
pub use geometry::Geometry;
pub use image::{Image, LabelMap};
pub use lock::{DirLock, LOCK_FILE};
pub use sample::{Batch, Sample, TransformRecord};

/// The label value that means "not annotated" in scribbles and partial labels
/// unless a config says otherwise.
pub const DEFAULT_IGNORE_LABEL: u16 = 255;
