//! Reads a NIfTI file and writes it again with the input header as reference
//! (used by tools/make_nifti_fixtures.py --check to verify in nibabel that
//! medseg-written files keep the affine, codes and values).
//!
//! `cargo run -p medseg-io --example nifti_roundtrip -- IN.nii.gz OUT.nii.gz [--fresh]`

use medseg_io::nifti::{read_nifti, write_nifti};
use medseg_io::DataType;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (src, dst, fresh) = match args.as_slice() {
        [s, d] => (s, d, false),
        [s, d, f] if f == "--fresh" => (s, d, true),
        _ => return Err("usage: nifti_roundtrip IN OUT [--fresh]".into()),
    };
    let (image, header) = read_nifti(Path::new(src))?;
    // scaled integers are written as float so no value is rounded
    let dtype = match (header.data_type(), header.scaling()) {
        (Some(DataType::Rgb24), _) | (_, Some(_)) | (None, _) => DataType::F32,
        (Some(t), None) => t,
    };
    // --fresh: no reference header, forms recomputed from the geometry alone
    let reference = if fresh { None } else { Some(&header) };
    write_nifti(Path::new(dst), &image, dtype, reference)?;
    Ok(())
}
