//! Small helpers: atomic writes and file-name handling.

use medseg_core::{Error, Result};
use std::io::{BufWriter, Write};
use std::path::Path;

/// Writes a file through `write` into a temporary file in the destination's
/// folder, then renames it over `path`, so that readers never see a partial
/// file and a failed write leaves no debris.
pub(crate) fn atomic_write<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".medseg-tmp-");
    // ordinary file permissions (0o666 less the umask), not the temp file's 0o600
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let tmp = builder.tempfile_in(dir).map_err(|e| Error::io(path, e))?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        write(&mut w).map_err(|e| Error::io(path, e))?;
        w.flush().map_err(|e| Error::io(path, e))?;
    }
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

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
