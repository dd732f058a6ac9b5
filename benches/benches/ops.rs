//! Criterion benchmarks of the main medseg-ops kernels (CPU f32), forward and
//! forward+backward, at the layer sizes of a 2D UNet on 4x1x256x256 input.
//! `cargo bench -p medseg-benches --bench ops`; side-by-side figures with
//! candle and PyTorch come from `cargo xtask bench ops`.

use candle_core::{Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};
use medseg_ops as ops;

/// Deterministic values in [-scale, scale).
fn det(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

fn forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("ops-forward");
    g.sample_size(10);
    let x = det(&[4, 32, 128, 128], 1, 1.0);
    let k = det(&[32, 32, 3, 3], 2, 0.05);
    let p = ops::Conv2dParams {
        padding: [1, 1],
        ..Default::default()
    };
    g.bench_function("conv2d 3x3 4x32x128x128->32", |b| {
        b.iter(|| ops::conv2d(&x, &k, None, &p).unwrap())
    });
    let big = det(&[4, 16, 256, 256], 3, 1.0);
    let gamma = (det(&[16], 4, 0.5) + 1.0).unwrap();
    let beta = det(&[16], 5, 0.5);
    g.bench_function("leaky_relu 4x16x256x256", |b| {
        b.iter(|| ops::leaky_relu(&big, 0.01).unwrap())
    });
    g.bench_function("bn train + leaky 4x16x256x256", |b| {
        b.iter(|| {
            ops::batch_norm_train(&big, &gamma, &beta, 1e-5, ops::Activation::LeakyRelu(0.01))
                .unwrap()
        })
    });
    g.bench_function("max_pool2d 2 4x16x256x256", |b| {
        b.iter(|| ops::max_pool2d(&big, [2, 2], [2, 2]).unwrap())
    });
    let up = det(&[4, 16, 128, 128], 6, 1.0);
    g.bench_function("bilinear x2 4x16x128x128", |b| {
        b.iter(|| ops::upsample_bilinear2d(&up, [256, 256], false).unwrap())
    });
    let logits = det(&[4, 4, 256, 256], 7, 3.0);
    g.bench_function("log_softmax dim1 4x4x256x256", |b| {
        b.iter(|| ops::log_softmax_channels(&logits).unwrap())
    });
    let v = det(&[1, 16, 32, 64, 64], 8, 1.0);
    g.bench_function("max_pool3d 2 1x16x32x64x64", |b| {
        b.iter(|| ops::max_pool3d(&v, [2, 2, 2], [2, 2, 2]).unwrap())
    });
    let vs = det(&[1, 16, 16, 32, 32], 9, 1.0);
    g.bench_function("trilinear x2 1x16x16x32x32", |b| {
        b.iter(|| ops::upsample_trilinear3d(&vs, [32, 64, 64], false).unwrap())
    });
    g.finish();
}

fn forward_backward(c: &mut Criterion) {
    let mut g = c.benchmark_group("ops-forward-backward");
    g.sample_size(10);
    let big = Var::from_tensor(&det(&[4, 16, 256, 256], 10, 1.0)).unwrap();
    let gamma = Var::from_tensor(&(det(&[16], 11, 0.5) + 1.0).unwrap()).unwrap();
    let beta = Var::from_tensor(&det(&[16], 12, 0.5)).unwrap();
    g.bench_function("bn train + leaky 4x16x256x256", |b| {
        b.iter(|| {
            let (y, _, _) = ops::batch_norm_train(
                big.as_tensor(),
                gamma.as_tensor(),
                beta.as_tensor(),
                1e-5,
                ops::Activation::LeakyRelu(0.01),
            )
            .unwrap();
            y.backward().unwrap()
        })
    });
    g.bench_function("max_pool2d 2 4x16x256x256", |b| {
        b.iter(|| {
            ops::max_pool2d(big.as_tensor(), [2, 2], [2, 2])
                .unwrap()
                .backward()
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, forward, forward_backward);
criterion_main!(benches);
