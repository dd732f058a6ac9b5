//! Large and hostile NIfTI input: a small file that declares a huge volume
//! (or a gzip bomb) is refused from its header under the reading limit,
//! and otherwise fails at the truncation without holding more than the
//! decoded array; voxel data are decoded in chunks, straight into the
//! image, with the same values as the whole-file path had.

use flate2::write::GzEncoder;
use flate2::Compression;
use medseg_core::{Geometry, Image};
use medseg_io::nifti::{
    nifti_statistics, read_nifti, read_nifti_header, read_nifti_label_with, read_nifti_with,
    write_nifti, NiftiHeader, ReadLimits, LIMIT_ENV,
};
use medseg_io::DataType;
use ndarray::{ArrayD, IxDyn};
use std::io::Write;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A NIfTI-1 header of a fixture with `dim` and `datatype`/`bitpix`
/// replaced, followed by `payload` voxel bytes, gzip-compressed.
fn hostile(path: &Path, dims: [i16; 3], datatype: i16, bitpix: i16, payload: &[u8]) {
    let good = std::fs::read(fixture("be_int16.nii")).unwrap();
    // be_int16.nii is big-endian: patch in its byte order
    let mut head = good[..352].to_vec();
    head[40..42].copy_from_slice(&3i16.to_be_bytes());
    for (k, d) in dims.iter().enumerate() {
        head[42 + 2 * k..44 + 2 * k].copy_from_slice(&d.to_be_bytes());
    }
    head[70..72].copy_from_slice(&datatype.to_be_bytes());
    head[72..74].copy_from_slice(&bitpix.to_be_bytes());
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    e.write_all(&head).unwrap();
    e.write_all(payload).unwrap();
    std::fs::write(path, e.finish().unwrap()).unwrap();
}

#[test]
fn a_declared_volume_over_the_limit_is_refused_from_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.nii.gz");
    // 1024 x 1024 x 1024 float32 (4 GiB decoded) in a file of a few hundred bytes
    hostile(&p, [1024, 1024, 1024], 16, 32, &[0u8; 64]);
    assert!(std::fs::metadata(&p).unwrap().len() < 1000);
    // the header alone reads at once
    let h: NiftiHeader = read_nifti_header(&p).unwrap();
    assert_eq!(h.file_shape(), vec![1024, 1024, 1024]);
    let limits = ReadLimits { max_bytes: 1 << 30 };
    let e = read_nifti_with(&p, &limits).unwrap_err().to_string();
    assert!(e.contains("huge.nii.gz"), "{e}");
    assert!(
        e.contains("[1024, 1024, 1024]") && e.contains("float32"),
        "{e}"
    );
    assert!(e.contains("4294967296 bytes once decoded"), "{e}");
    assert!(e.contains(&format!("limit of {} bytes", 1u64 << 30)), "{e}");
    assert!(e.contains(LIMIT_ENV), "{e}");
    let e = read_nifti_label_with(&p, &limits).unwrap_err().to_string();
    assert!(e.contains("2147483648 bytes once decoded"), "{e}");
    // under a limit that allows it, the missing data is a truncation error
    // (the 4 GiB array is allocated zeroed, and only its first chunk touched)
    let limits = ReadLimits { max_bytes: 8 << 30 };
    let e = read_nifti_with(&p, &limits).unwrap_err().to_string();
    assert!(e.contains("huge.nii.gz"), "{e}");
    assert!(e.contains("64 bytes of voxel data"), "{e}");
    assert!(e.contains("need 4294967296"), "{e}");
}

#[test]
fn a_gzip_bomb_is_refused_before_it_is_decompressed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bomb.nii.gz");
    // 1024 x 1024 x 128 uint8 zeros: 128 MiB of voxels, 512 MiB as float32,
    // in a file of about 130 KB
    hostile(&p, [1024, 1024, 128], 2, 8, &vec![0u8; 1024 * 1024 * 128]);
    assert!(std::fs::metadata(&p).unwrap().len() < 1 << 20);
    let limits = ReadLimits {
        max_bytes: 256 << 20,
    };
    let e = read_nifti_with(&p, &limits).unwrap_err().to_string();
    assert!(
        e.contains("bomb.nii.gz") && e.contains("reading limit"),
        "{e}"
    );
    // statistics stream in constant memory and need no limit
    let (_, min, max, mean, n) = nifti_statistics(&p).unwrap();
    assert_eq!((min, max, mean, n), (0.0, 0.0, 0.0, 1024 * 1024 * 128));
}

#[test]
fn chunked_decoding_equals_the_written_values_across_chunk_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    // 7 x 301 x 299 values: several 1 MiB chunks for every data type, and
    // chunk boundaries that do not fall on rows or slices
    let shape = [1usize, 7, 301, 299];
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 2001) as f32 - 1000.0)
        .collect();
    let img = Image::new(
        ArrayD::from_shape_vec(IxDyn(&shape), data.clone()).unwrap(),
        Geometry::identity(),
    )
    .unwrap();
    for (dt, name) in [
        (DataType::I16, "a.nii.gz"),
        (DataType::F32, "b.nii"),
        (DataType::F64, "c.nii.gz"),
        (DataType::I32, "d.nii"),
    ] {
        let p = dir.path().join(name);
        write_nifti(&p, &img, dt, None).unwrap();
        let (back, _) = read_nifti(&p).unwrap();
        assert_eq!(back.data.shape(), &shape);
        assert_eq!(back.data.as_slice().unwrap(), &data[..], "{name}");
        let (_, min, max, mean, count) = nifti_statistics(&p).unwrap();
        let want_mean = data.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        assert_eq!((min, max, count), (-1000.0, 1000.0, n), "{name}");
        assert!((mean - want_mean).abs() < 1e-9, "{name}");
    }
    // a truncated uncompressed file fails from its size, before reading
    let p = dir.path().join("b.nii");
    let bytes = std::fs::read(&p).unwrap();
    let cut = dir.path().join("cut.nii");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let e = read_nifti(&cut).unwrap_err().to_string();
    assert!(e.contains("cut.nii") && e.contains("truncated"), "{e}");
}

#[test]
fn statistics_equal_those_of_the_decoded_fixtures() {
    for name in [
        "be_int16.nii",
        "scaled_int16.nii.gz",
        "sform_only_f64.nii",
        "rgb24.nii",
        "nifti2_u32.nii.gz",
        "four_d_f32.nii.gz",
    ] {
        let (img, _) = read_nifti(&fixture(name)).unwrap();
        let v: Vec<f64> = img.data.iter().map(|&x| x as f64).collect();
        let (_, min, max, mean, n) = nifti_statistics(&fixture(name)).unwrap();
        assert_eq!(n, v.len(), "{name}");
        assert_eq!(
            min,
            v.iter().cloned().fold(f64::INFINITY, f64::min),
            "{name}"
        );
        assert_eq!(
            max,
            v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            "{name}"
        );
        let m = v.iter().sum::<f64>() / v.len() as f64;
        assert!(
            (mean - m).abs() <= 1e-9 * m.abs().max(1.0),
            "{name}: {mean} vs {m}"
        );
    }
}
