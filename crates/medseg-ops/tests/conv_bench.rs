//! Ad-hoc timing of the conv kernels against candle on the UNet layer shapes
//! (batch 4, 256x256, features 16..256). Ignored by default; run with
//! `cargo test --release -p medseg-ops --test conv_bench -- --ignored --nocapture`.

use candle_core::{Device, Tensor};
use medseg_ops::{
    conv2d, conv2d_input_grad, conv2d_weight_grad, conv_transpose2d, Conv2dParams,
    ConvTranspose2dParams,
};
use std::time::Instant;

/// Process CPU time (user + system) in ms, from /proc/self/stat (10 ms ticks).
fn cpu_ms() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) * 10.0
}

/// Median wall ms (or CPU ms per call over all iterations with CONV_BENCH_CPU set,
/// which is less sensitive to other load on a shared machine).
fn median_ms(iters: usize, mut f: impl FnMut() -> Tensor) -> f64 {
    let _ = f();
    let c0 = cpu_ms();
    let mut v: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            let y = f();
            drop(y);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    if std::env::var("CONV_BENCH_CPU").is_ok() {
        return (cpu_ms() - c0) / iters as f64;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[test]
#[ignore]
fn bench_unet_convs() {
    let dev = Device::Cpu;
    let filter = std::env::var("CONV_BENCH_CANDLE").is_ok();
    let iters: usize = std::env::var("CONV_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    // (cin, cout, size)
    let layers = [
        (1usize, 16usize, 256usize),
        (16, 16, 256),
        (16, 32, 128),
        (32, 32, 128),
        (32, 64, 64),
        (64, 64, 64),
        (64, 128, 32),
        (128, 128, 32),
        (128, 256, 16),
        (256, 256, 16),
        (256, 128, 32),
        (128, 64, 64),
        (64, 32, 128),
        (32, 16, 256),
        (64, 64, 128),
    ];
    let p = Conv2dParams {
        padding: [1, 1],
        ..Default::default()
    };
    let (mut tf, mut tdx, mut tdw) = (0.0, 0.0, 0.0);
    let (mut cf, mut cdx, mut cdw) = (0.0, 0.0, 0.0);
    println!(
        "{:>18} {:>9} {:>9} {:>9} | candle {:>9} {:>9} {:>9}",
        "layer", "fwd", "dx", "dw", "fwd", "dx", "dw"
    );
    let only = std::env::var("CONV_BENCH_LAYER").ok();
    for &(cin, cout, s) in &layers {
        if only
            .as_ref()
            .is_some_and(|o| *o != format!("{cin}->{cout}@{s}"))
        {
            continue;
        }
        let x = Tensor::randn(0f32, 1.0, (4, cin, s, s), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.1, (cout, cin, 3, 3), &dev).unwrap();
        let gy = Tensor::randn(0f32, 1.0, (4, cout, s, s), &dev).unwrap();
        let f = median_ms(iters, || conv2d(&x, &w, None, &p).unwrap());
        let dx = median_ms(iters, || conv2d_input_grad(&gy, &w, [s, s], &p).unwrap());
        let dw = median_ms(iters, || conv2d_weight_grad(&x, &gy, [3, 3], &p).unwrap());
        tf += f;
        tdx += if cin > 1 { dx } else { 0.0 };
        tdw += dw;
        let (mut a, mut b, mut c) = (f64::NAN, f64::NAN, f64::NAN);
        if filter {
            a = median_ms(iters, || x.conv2d(&w, 1, 1, 1, 1).unwrap());
            b = median_ms(iters, || gy.conv_transpose2d(&w, 1, 0, 1, 1).unwrap());
            c = median_ms(iters, || {
                x.transpose(0, 1)
                    .unwrap()
                    .conv2d(&gy.transpose(0, 1).unwrap(), 1, 1, 1, 1)
                    .unwrap()
                    .transpose(0, 1)
                    .unwrap()
            });
            cf += a;
            cdx += if cin > 1 { b } else { 0.0 };
            cdw += c;
        }
        println!(
            "{:>18} {f:9.2} {dx:9.2} {dw:9.2} | candle {a:9.2} {b:9.2} {c:9.2}",
            format!("{cin}->{cout}@{s}")
        );
    }
    println!(
        "{:>18} {tf:9.2} {tdx:9.2} {tdw:9.2} | candle {cf:9.2} {cdx:9.2} {cdw:9.2}",
        "total(ms)"
    );
    let tp = ConvTranspose2dParams {
        stride: [2, 2],
        ..Default::default()
    };
    for &(cin, cout, s) in &[
        (256usize, 128usize, 16usize),
        (128, 64, 32),
        (64, 32, 64),
        (32, 16, 128),
    ] {
        let x = Tensor::randn(0f32, 1.0, (4, cin, s, s), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.1, (cin, cout, 2, 2), &dev).unwrap();
        let gy = Tensor::randn(0f32, 1.0, (4, cout, 2 * s, 2 * s), &dev).unwrap();
        let f = median_ms(iters, || conv_transpose2d(&x, &w, None, &tp).unwrap());
        let cp = Conv2dParams {
            stride: [2, 2],
            ..Default::default()
        };
        let dx = median_ms(iters, || conv2d(&gy, &w, None, &cp).unwrap());
        let dw = median_ms(iters, || conv2d_weight_grad(&gy, &x, [2, 2], &cp).unwrap());
        let c = if filter {
            median_ms(iters, || x.conv_transpose2d(&w, 0, 0, 2, 1).unwrap())
        } else {
            f64::NAN
        };
        println!(
            "{:>18} {f:9.2} {dx:9.2} {dw:9.2} | candle {c:9.2}",
            format!("up {cin}->{cout}@{s}")
        );
    }
}
