//! The fused Adam step against the update written out in f64.

use candle_core::{DType, Device, Tensor};
use medseg_ops::{adam_applies, adam_step, AdamHyper};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Adam / AdamW in f64, element by element, as PyTorch documents it.
fn reference(p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64], h: &AdamHyper) {
    let bc1 = 1.0 - h.beta1.powi(h.step);
    let bc2 = 1.0 - h.beta2.powi(h.step);
    for i in 0..p.len() {
        let mut gi = g[i];
        if h.decoupled {
            p[i] *= 1.0 - h.lr * h.weight_decay;
        } else {
            gi += h.weight_decay * p[i];
        }
        m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * gi;
        v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * gi * gi;
        p[i] -= h.lr / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + h.eps);
    }
}

fn random(n: usize, rng: &mut ChaCha8Rng, scale: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

#[test]
fn fused_adam_follows_the_f64_update() {
    let dev = Device::Cpu;
    // several rayon chunks and a ragged tail
    let n = 17 * 2900;
    for (decoupled, weight_decay, betas, eps) in [
        (false, 0.0, (0.9, 0.999), 1e-8),
        (false, 0.05, (0.8, 0.99), 1e-6),
        (true, 0.05, (0.9, 0.999), 1e-8),
    ] {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut p64 = random(n, &mut rng, 1.0);
        let (mut m64, mut v64) = (vec![0.0; n], vec![0.0; n]);
        let p = Tensor::from_vec(
            p64.iter().map(|&x| x as f32).collect::<Vec<_>>(),
            (2900, 17),
            &dev,
        )
        .unwrap();
        let (mut m, mut v) = (vec![0f32; n], vec![0f32; n]);
        for step in 1..=5 {
            // gradients exactly representable in f32, so both sides see the same
            let g64: Vec<f64> = random(n, &mut rng, 0.5)
                .into_iter()
                .map(|x| x as f32 as f64)
                .collect();
            let g = Tensor::from_vec(
                g64.iter().map(|&x| x as f32).collect::<Vec<_>>(),
                (2900, 17),
                &dev,
            )
            .unwrap();
            let h = AdamHyper {
                lr: 0.01 * step as f64,
                beta1: betas.0,
                beta2: betas.1,
                eps,
                weight_decay,
                decoupled,
                step,
            };
            assert!(adam_applies(&p, &g));
            adam_step(&p, &g, &mut m, &mut v, &h).unwrap();
            reference(&mut p64, &g64, &mut m64, &mut v64, &h);
            let got = p.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let mut worst = 0f64;
            for i in 0..n {
                worst = worst.max((got[i] as f64 - p64[i]).abs() / (1.0 + p64[i].abs()));
                worst = worst.max((m[i] as f64 - m64[i]).abs());
                worst = worst.max((v[i] as f64 - v64[i]).abs());
            }
            assert!(
                worst < 1e-5,
                "decoupled {decoupled}, wd {weight_decay}, step {step}: error {worst}"
            );
        }
    }
}

#[test]
fn fused_adam_rejects_what_it_cannot_update() {
    let dev = Device::Cpu;
    let p = Tensor::zeros((4, 3), DType::F32, &dev).unwrap();
    let g = Tensor::ones((4, 3), DType::F32, &dev).unwrap();
    let h = AdamHyper {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        decoupled: false,
        step: 1,
    };
    let (mut m, mut v) = (vec![0f32; 11], vec![0f32; 12]);
    let err = adam_step(&p, &g, &mut m, &mut v, &h).unwrap_err();
    assert!(err.to_string().contains("moments 11 and 12"), "{err}");
    let p64 = p.to_dtype(DType::F64).unwrap();
    assert!(!adam_applies(&p64, &g));
    let (mut m, mut v) = (vec![0f32; 12], vec![0f32; 12]);
    let err = adam_step(&p64, &g, &mut m, &mut v, &h).unwrap_err();
    assert!(err.to_string().contains("f32 CPU"), "{err}");
    // nothing was written
    assert!(m.iter().chain(&v).all(|&x| x == 0.0));
    assert!(medseg_ops::with_candle_ops(|| !adam_applies(&p, &g)));
    // a transposed (strided) gradient is made contiguous first
    let gt = Tensor::arange(0f32, 12.0, &dev)
        .unwrap()
        .reshape((3, 4))
        .unwrap()
        .t()
        .unwrap();
    adam_step(&p, &gt, &mut m, &mut v, &h).unwrap();
    let expect = gt.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (mi, gi) in m.iter().zip(&expect) {
        assert!((mi - 0.1 * gi).abs() < 1e-6, "{mi} vs {gi}");
    }
}
