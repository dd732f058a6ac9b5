//! Criterion benchmarks of medseg-transforms: time per sample of a 3D
//! augmentation pipeline on a 128x128x128 volume (image + label), and of its
//! steps one by one. `cargo xtask bench transforms` runs these beside the
//! equivalent MONAI dictionary transforms (tools/bench_monai_transforms.py).
//!
//! Cases (names shared with the Python side):
//! - `crop96`: RandomCrop 96^3 out of 128^3
//! - `flip`: RandomFlip over the three axes, p = 1 per axis, on 128^3
//! - `rotate`: RandomRotate, three planes up to 15 degrees, p = 1, on 128^3
//! - `elastic`: ElasticDeformation, control points every 24 voxels, p = 1, on 128^3
//! - `pipeline`: crop 96^3 + flip + rotate + elastic (the training augmentation)

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use medseg_core::{Geometry, Image, LabelMap, Sample};
use medseg_transforms::{
    ElasticDeformation, Interp, Pipeline, RandomCrop, RandomFlip, RandomRotate, Transform,
};
use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const N: usize = 128;

fn volume() -> Sample {
    let shape = [1, N, N, N];
    let c = (N as f32 - 1.0) / 2.0;
    let img = ArrayD::from_shape_fn(IxDyn(&shape), |i| {
        let (z, y, x) = (i[1] as f32 - c, i[2] as f32 - c, i[3] as f32 - c);
        ((z * 0.1).sin() + (y * 0.07).cos()) * 100.0 + x
    });
    let lab = ArrayD::from_shape_fn(IxDyn(&shape), |i| {
        let (z, y, x) = (i[1] as f32 - c, i[2] as f32 - c, i[3] as f32 - c);
        let r = (z * z + y * y + x * x).sqrt();
        if r < 20.0 {
            2u16
        } else if r < 40.0 {
            1
        } else {
            0
        }
    });
    let g = Geometry::identity();
    Sample::new("bench", Image::new(img, g).unwrap())
        .with_label(LabelMap::new(lab, g).unwrap())
        .unwrap()
}

fn crop() -> Box<dyn Transform> {
    Box::new(RandomCrop {
        size: vec![96, 96, 96],
        image_fill: 0.0,
        label_fill: 0,
    })
}

fn flip() -> Box<dyn Transform> {
    Box::new(RandomFlip { axes: None, p: 1.0 })
}

fn rotate() -> Box<dyn Transform> {
    Box::new(RandomRotate {
        angle_range_d: Some([-15.0, 15.0]),
        angle_range_h: Some([-15.0, 15.0]),
        angle_range_w: Some([-15.0, 15.0]),
        p: 1.0,
        image_interp: Interp::Linear,
        image_fill: 0.0,
        label_fill: 0,
    })
}

fn elastic() -> Box<dyn Transform> {
    Box::new(ElasticDeformation {
        grid_spacing: 24.0,
        magnitude_range: [2.0, 4.0],
        p: 1.0,
        image_interp: Interp::Linear,
        image_fill: 0.0,
        label_fill: 0,
    })
}

fn pipeline(steps: Vec<Box<dyn Transform>>) -> Pipeline {
    let mut p = Pipeline::new();
    for s in steps {
        p.push(s, None);
    }
    p
}

fn cases() -> Vec<(&'static str, Pipeline)> {
    vec![
        ("crop96", pipeline(vec![crop()])),
        ("flip", pipeline(vec![flip()])),
        ("rotate", pipeline(vec![rotate()])),
        ("elastic", pipeline(vec![elastic()])),
        (
            "pipeline",
            pipeline(vec![crop(), flip(), rotate(), elastic()]),
        ),
    ]
}

fn transforms(c: &mut Criterion) {
    let sample = volume();
    let mut group = c.benchmark_group("transforms_3d_128");
    group.sample_size(10);
    for (name, pipeline) in cases() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        group.bench_function(name, |b| {
            b.iter_batched(
                || sample.clone(),
                |s| pipeline.apply(s, &mut rng).unwrap(),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, transforms);
criterion_main!(benches);
