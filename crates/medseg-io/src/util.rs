//! Small helpers: file-name handling.

use medseg_core::{Error, Result};
use std::path::Path;

/// The file formats medseg reads and writes, told by the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// NIfTI, `.nii` or `.nii.gz`.
    Nifti,
    /// PNG.
    Png,
    /// JPEG, `.jpg` or `.jpeg`.
    Jpeg,
    /// TIFF, `.tif` or `.tiff`.
    Tiff,
}

impl FileFormat {
    /// The format of a path by its (case-insensitive) extension.
    ///
    /// # Errors
    /// [`Error::Format`] naming the file for an unknown extension.
    pub fn of(path: &Path) -> Result<FileFormat> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let f = if name.ends_with(".nii") || name.ends_with(".nii.gz") {
            FileFormat::Nifti
        } else if name.ends_with(".png") {
            FileFormat::Png
        } else if name.ends_with(".jpg") || name.ends_with(".jpeg") {
            FileFormat::Jpeg
        } else if name.ends_with(".tif") || name.ends_with(".tiff") {
            FileFormat::Tiff
        } else {
            return Err(Error::format(
                path,
                "unknown file type; expected .nii, .nii.gz, .png, .jpg, .jpeg, .tif or .tiff",
            ));
        };
        Ok(f)
    }
}

/// The file name without its image extension (`case01.nii.gz` -> `case01`).
pub fn file_stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    for ext in [
        ".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gz",
    ] {
        if lower.ends_with(ext) && lower.len() > ext.len() {
            return name[..name.len() - ext.len()].to_string();
        }
    }
    name
}
