//! Criterion benchmarks of medseg-metrics: HD95 + ASSD on a 3D pair, a full
//! multi-class `evaluate_case`, and the exact EDT.
//!
//! ```text
//! cargo bench -p medseg-benches --bench metrics
//! ```
//! The side-by-side comparison with MedPy and MONAI is `cargo xtask bench metrics`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use medseg_metrics::{
    distance_transform, evaluate_case, surface_distances, AssdDefinition, Connectivity,
    Hd95Definition, MetricOptions,
};
use ndarray::Array3;

/// Two overlapping ellipsoids with bumpy surfaces (labels 1 and 2 inside).
fn pair(shape: [usize; 3], spacing: [f64; 3]) -> (Array3<u16>, Array3<u16>) {
    let blob = |shift: f64, phase: f64| {
        let c = shape.map(|n| 0.5 * n as f64);
        Array3::from_shape_fn(shape, |(d, h, w)| {
            let x = [
                (d as f64 - c[0] - shift) * spacing[0],
                (h as f64 - c[1] + 2.0 * shift) * spacing[1],
                (w as f64 - c[2] - shift) * spacing[2],
            ];
            let r = [
                0.33 * shape[0] as f64 * spacing[0],
                0.33 * shape[1] as f64 * spacing[1],
                0.3 * shape[2] as f64 * spacing[2],
            ];
            let rho =
                ((x[0] / r[0]).powi(2) + (x[1] / r[1]).powi(2) + (x[2] / r[2]).powi(2)).sqrt();
            let bump = 0.06 * (5.0 * x[1].atan2(x[2]) + phase).sin();
            if rho <= 0.5 + bump {
                2
            } else if rho <= 1.0 + bump {
                1
            } else {
                0
            }
        })
    };
    (blob(1.0, 0.7), blob(0.0, 0.0))
}

fn bench_metrics(c: &mut Criterion) {
    let spacing = [2.0, 0.8, 0.8];
    let mut group = c.benchmark_group("metrics");
    group.sample_size(10);
    for shape in [[64, 128, 128], [128, 256, 256]] {
        let (pred, gt) = pair(shape, spacing);
        let name = format!("{}x{}x{}", shape[0], shape[1], shape[2]);
        let opts = MetricOptions::default();
        group.bench_function(format!("hd95+assd/{name}"), |b| {
            b.iter(|| {
                let sd = surface_distances(
                    pred.view().into_dyn(),
                    gt.view().into_dyn(),
                    1,
                    &spacing,
                    Connectivity::Face,
                )
                .unwrap();
                let e = &opts.distance_empty;
                black_box((
                    sd.percentile_hausdorff(95.0, Hd95Definition::Pooled, e),
                    sd.assd(AssdDefinition::PooledMean, e),
                ))
            })
        });
        group.bench_function(format!("evaluate_case_2_classes/{name}"), |b| {
            b.iter(|| {
                black_box(
                    evaluate_case(
                        pred.view().into_dyn(),
                        gt.view().into_dyn(),
                        &spacing,
                        &[1, 2],
                        &opts,
                    )
                    .unwrap(),
                )
            })
        });
    }
    let (_, gt) = pair([64, 128, 128], spacing);
    let features = gt.mapv(|v| v == 2);
    group.bench_function("distance_transform/64x128x128", |b| {
        b.iter(|| black_box(distance_transform(features.view().into_dyn(), &spacing).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, bench_metrics);
criterion_main!(benches);
