//! Criterion benchmarks of medseg-transforms' screen-photo transforms: time
//! per 2D picture of 512 x 512 (a CT slice), grey `[1, 512, 512]` and RGB
//! `[3, 512, 512]`, image + label.
//!
//! Cases: `perspective` (RandomPerspective, distortion 0.5), `jpeg`
//! (JpegQuality at quality 50), `moire`, `cast` (ScreenColorCast),
//! `jitter` (ColorJitter, all four for RGB), `screen_photo` (the
//! ScreenPhoto chain at severity 0.5).
//!
//! `cargo bench -p medseg-benches --bench photo`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use medseg_core::{Geometry, Image, LabelMap, Sample};
use medseg_transforms::build_pipeline;
use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

const N: usize = 512;

fn picture(c: usize) -> Sample {
    let h = (N as f32 - 1.0) / 2.0;
    let img = ArrayD::from_shape_fn(IxDyn(&[c, N, N]), |i| {
        let (y, x) = (i[1] as f32 - h, i[2] as f32 - h);
        ((y * 0.05).sin() + (x * 0.03).cos()) * 300.0 + 40.0 * i[0] as f32
    });
    let lab = ArrayD::from_shape_fn(IxDyn(&[1, N, N]), |i| {
        let (y, x) = (i[1] as f32 - h, i[2] as f32 - h);
        u16::from(y * y + x * x < 150.0 * 150.0)
    });
    let g = Geometry::identity();
    Sample::new("bench", Image::new(img, g).unwrap())
        .with_label(LabelMap::new(lab, g).unwrap())
        .unwrap()
}

fn photo(c: &mut Criterion) {
    let cases = [
        (
            "perspective",
            json!({"name": "RandomPerspective", "distortion_scale": 0.5, "p": 1.0}),
        ),
        (
            "jpeg",
            json!({"name": "JpegQuality", "quality_range": [50, 50], "p": 1.0}),
        ),
        ("moire", json!({"name": "Moire", "p": 1.0})),
        ("cast", json!({"name": "ScreenColorCast", "p": 1.0})),
        (
            "jitter",
            json!({"name": "ColorJitter", "brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.1}),
        ),
        (
            "screen_photo",
            json!({"name": "ScreenPhoto", "severity": 0.5}),
        ),
    ];
    for (channels, group_name) in [(1, "photo_grey_512"), (3, "photo_rgb_512")] {
        let sample = picture(channels);
        let mut group = c.benchmark_group(group_name);
        group.sample_size(10);
        for (name, spec) in &cases {
            let pipeline = build_pipeline(std::slice::from_ref(spec)).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            group.bench_function(*name, |b| {
                b.iter_batched(
                    || sample.clone(),
                    |s| pipeline.apply(s, &mut rng).unwrap(),
                    BatchSize::LargeInput,
                )
            });
        }
        group.finish();
    }
}

criterion_group!(benches, photo);
criterion_main!(benches);
