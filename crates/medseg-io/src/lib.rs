#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod dataset;
mod dtype;
mod loader;
mod manifest;
pub mod nifti;
pub mod raster;
mod util;

pub use dataset::{
    Dataset, LabelledDataset, PartialLabelDataset, ScribbleDataset, UnlabelledDataset,
};
pub use dtype::DataType;
pub use loader::{identity_transform, sample_rng, EpochIter, Loader, LoaderConfig, TransformFn};
pub use manifest::{Manifest, ManifestRow};
pub use util::{file_stem, FileFormat};

use medseg_core::{Error, Image, LabelMap, Result};
use std::path::Path;

/// Reads an image by its extension: `.nii`/`.nii.gz` (any supported data
/// type, scaling applied, 4D as channels, see [`nifti`]) or
/// `.png`/`.jpg`/`.jpeg`/`.tif`/`.tiff` (2D, `[C, H, W]`, see [`raster`]).
///
/// # Errors
/// [`Error::Io`] or [`Error::Format`] naming the file.
pub fn read_image(path: &Path) -> Result<Image> {
    match FileFormat::of(path)? {
        FileFormat::Nifti => nifti::read_nifti(path).map(|(im, _)| im),
        _ => raster::read_raster(path),
    }
}

/// Reads a label map (one channel of integers in `0..=65535`) by extension.
///
/// # Errors
/// [`Error::Format`] naming the file for non-integer or out-of-range values,
/// more than one channel, or any read error of [`read_image`].
pub fn read_label(path: &Path) -> Result<LabelMap> {
    match FileFormat::of(path)? {
        FileFormat::Nifti => nifti::read_nifti_label(path).map(|(l, _)| l),
        _ => raster::read_raster_label(path),
    }
}

/// Writes an image by extension: `.nii`/`.nii.gz` with the chosen data type
/// (qform and sform from the geometry, codes 1) or `.png` (2D, `uint8` or
/// `uint16`). The file is written to a temporary file and renamed.
///
/// To keep an input file's qform/sform exactly, use [`nifti::write_nifti`]
/// with its header as reference.
///
/// # Errors
/// [`Error::Format`] for JPEG/TIFF (read-only) or what the format cannot
/// hold; [`Error::Io`] on write failure.
pub fn write_image(path: &Path, image: &Image, dtype: DataType) -> Result<()> {
    match FileFormat::of(path)? {
        FileFormat::Nifti => nifti::write_nifti(path, image, dtype, None),
        FileFormat::Png => raster::write_png(path, image, dtype),
        _ => Err(Error::format(
            path,
            "JPEG and TIFF are read-only; write .png, .nii or .nii.gz",
        )),
    }
}

/// Writes a label map by extension: NIfTI as `uint8` when every value is
/// below 256, else `uint16`; PNG as 8- or 16-bit grey likewise.
///
/// # Errors
/// As [`write_image`].
pub fn write_label(path: &Path, label: &LabelMap) -> Result<()> {
    match FileFormat::of(path)? {
        FileFormat::Nifti => nifti::write_nifti_label(path, label, None),
        FileFormat::Png => raster::write_png_label(path, label),
        _ => Err(Error::format(
            path,
            "JPEG and TIFF are read-only; write .png, .nii or .nii.gz",
        )),
    }
}
