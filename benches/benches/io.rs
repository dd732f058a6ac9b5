//! Criterion benchmarks of medseg-io: reading and writing a 256x256x180
//! int16 CT-like volume as `.nii.gz` and `.nii`.
//!
//! `cargo bench -p medseg-benches --bench io`. The side-by-side comparison
//! with nibabel on the same file is `cargo xtask bench io`.

use criterion::{criterion_group, criterion_main, Criterion};
use medseg_core::{Geometry, Image};
use medseg_io::{read_image, write_image, DataType};
use ndarray::{ArrayD, IxDyn};
use std::hint::black_box;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The same phantom as medseg-io's `bench_read` example.
fn phantom() -> Image {
    let (d, h, w) = (180usize, 256usize, 256usize);
    let data = ArrayD::from_shape_fn(IxDyn(&[1, d, h, w]), |ix| {
        let (z, y, x) = (ix[1] as f64, ix[2] as f64, ix[3] as f64);
        let r = ((x - 128.0) / 110.0).powi(2) + ((y - 128.0) / 85.0).powi(2);
        let noise = (splitmix((ix[1] * h * w + ix[2] * w + ix[3]) as u64) % 41) as f64 - 20.0;
        let v = if r > 1.0 {
            -1000.0 + noise * 0.2
        } else if r > 0.8 {
            700.0 + 60.0 * (z / 30.0).sin() + noise
        } else {
            40.0 + 30.0 * (x / 20.0).sin() * (y / 25.0).cos() + noise
        };
        v.round() as f32
    });
    Image::new(data, Geometry::with_spacing([1.5, 0.8, 0.8])).expect("valid shape")
}

fn io(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let image = phantom();
    let gz = dir.path().join("ct.nii.gz");
    let raw = dir.path().join("ct.nii");
    write_image(&gz, &image, DataType::I16).expect("write");
    write_image(&raw, &image, DataType::I16).expect("write");

    let mut g = c.benchmark_group("nifti_256x256x180_int16");
    g.sample_size(10);
    g.bench_function("read_nii_gz", |b| {
        b.iter(|| black_box(read_image(&gz).expect("read")))
    });
    g.bench_function("read_nii", |b| {
        b.iter(|| black_box(read_image(&raw).expect("read")))
    });
    g.bench_function("write_nii_gz", |b| {
        b.iter(|| write_image(&gz, &image, DataType::I16).expect("write"))
    });
    g.finish();
}

criterion_group!(benches, io);
criterion_main!(benches);
