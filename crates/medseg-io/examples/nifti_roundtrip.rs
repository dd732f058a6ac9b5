//! Reads a NIfTI file and writes it again with the input header as reference
//! (used by tools/make_nifti_fixtures.py --check to verify in nibabel that
//! medseg-written files keep the affine, codes and values).
//!
//! `cargo run -p medseg-io --example nifti_roundtrip -- IN.nii.gz OUT.nii.gz`

use medseg_io::nifti::{read_nifti, write_nifti};
use medseg_io::DataType;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, dst] = args.as_slice() else {
        return Err("usage: nifti_roundtrip IN OUT".into());
    };
    let (image, header) = read_nifti(Path::new(src))?;
    // scaled integers are written as float so no value is rounded
    let dtype = match (header.data_type(), header.scaling()) {
        (Some(DataType::Rgb24), _) | (_, Some(_)) | (None, _) => DataType::F32,
        (Some(t), None) => t,
    };
    write_nifti(Path::new(dst), &image, dtype, Some(&header))?;
    Ok(())
}
