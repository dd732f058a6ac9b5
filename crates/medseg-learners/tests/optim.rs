//! Optimisers and schedules against PyTorch trajectories
//! (tools/make_optim_fixtures.py).

use candle_core::{DType, Device, Tensor, Var};
use medseg_config::{ExperimentConfig, OptimizerKind, ScheduleKind};
use medseg_learners::{clip_grad_norm, grad_norm, LrSchedule, Optimizer, OptimizerSettings};
use serde_json::Value;

fn fixture() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/optim.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn vecf(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn loss(p: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
    let quad = (a * p.sqr().unwrap()).unwrap().sum_all().unwrap();
    let lin = (b * p).unwrap().sum_all().unwrap();
    let p0 = p.get(0).unwrap();
    let p1 = p.get(1).unwrap();
    let cross = ((p0 * p1).unwrap() * 0.1).unwrap();
    let sin = (p.sin().unwrap().sum_all().unwrap() * 0.05).unwrap();
    (((quad + lin).unwrap() + cross).unwrap() + sin).unwrap()
}

fn settings(
    kind: OptimizerKind,
    momentum: f64,
    nesterov: bool,
    wd: f64,
    betas: [f64; 2],
    eps: f64,
) -> OptimizerSettings {
    OptimizerSettings {
        kind,
        momentum,
        nesterov,
        weight_decay: wd,
        betas,
        eps,
    }
}

#[test]
fn optimisers_follow_pytorch() {
    let f = fixture();
    let dev = Device::Cpu;
    let a = Tensor::new(vecf(&f["a"]).as_slice(), &dev).unwrap();
    let b = Tensor::new(vecf(&f["b"]).as_slice(), &dev).unwrap();
    let cases = [
        (
            "sgd",
            settings(OptimizerKind::Sgd, 0.0, false, 0.0, [0.9, 0.999], 1e-8),
            0.05,
        ),
        (
            "sgd_momentum_wd",
            settings(OptimizerKind::Sgd, 0.9, false, 1e-2, [0.9, 0.999], 1e-8),
            0.05,
        ),
        (
            "sgd_nesterov",
            settings(OptimizerKind::Sgd, 0.9, true, 1e-3, [0.9, 0.999], 1e-8),
            0.05,
        ),
        (
            "adam",
            settings(OptimizerKind::Adam, 0.0, false, 0.0, [0.9, 0.999], 1e-8),
            0.1,
        ),
        (
            "adam_wd",
            settings(OptimizerKind::Adam, 0.0, false, 0.05, [0.8, 0.99], 1e-6),
            0.1,
        ),
        (
            "adamw",
            settings(OptimizerKind::Adamw, 0.0, false, 0.05, [0.9, 0.999], 1e-8),
            0.1,
        ),
    ];
    for (name, s, lr) in cases {
        let p = Var::from_tensor(&Tensor::new(vecf(&f["p0"]).as_slice(), &dev).unwrap()).unwrap();
        let mut opt = Optimizer::new(vec![("p".into(), p.clone())], s);
        for (step, expected) in f["optimizers"][name].as_array().unwrap().iter().enumerate() {
            let grads = loss(p.as_tensor(), &a, &b).backward().unwrap();
            opt.step(&grads, lr).unwrap();
            let got = p.as_tensor().to_vec1::<f64>().unwrap();
            for (g, e) in got.iter().zip(vecf(expected)) {
                assert!(
                    (g - e).abs() < 1e-10 * (1.0 + e.abs()),
                    "{name} step {step}: {got:?} vs {expected}"
                );
            }
        }
    }
}

#[test]
fn optimiser_state_round_trip_resumes_identically() {
    let f = fixture();
    let dev = Device::Cpu;
    let a = Tensor::new(vecf(&f["a"]).as_slice(), &dev).unwrap();
    let b = Tensor::new(vecf(&f["b"]).as_slice(), &dev).unwrap();
    let s = settings(OptimizerKind::Adam, 0.0, false, 0.05, [0.8, 0.99], 1e-6);
    let p = Var::from_tensor(&Tensor::new(vecf(&f["p0"]).as_slice(), &dev).unwrap()).unwrap();
    let mut opt = Optimizer::new(vec![("p".into(), p.clone())], s);
    for _ in 0..4 {
        let g = loss(p.as_tensor(), &a, &b).backward().unwrap();
        opt.step(&g, 0.1).unwrap();
    }
    let state = opt.state().unwrap();
    let q = Var::from_tensor(&p.as_tensor().copy().unwrap()).unwrap();
    let mut opt2 = Optimizer::new(vec![("p".into(), q.clone())], s);
    opt2.load_state(&state).unwrap();
    assert_eq!(opt2.steps_taken(), 4);
    for _ in 0..4 {
        let g = loss(p.as_tensor(), &a, &b).backward().unwrap();
        opt.step(&g, 0.1).unwrap();
        let g = loss(q.as_tensor(), &a, &b).backward().unwrap();
        opt2.step(&g, 0.1).unwrap();
    }
    let expected = vecf(&f["optimizers"]["adam_wd"][7]);
    assert_eq!(
        p.as_tensor().to_vec1::<f64>().unwrap(),
        q.as_tensor().to_vec1::<f64>().unwrap()
    );
    for (g, e) in q.as_tensor().to_vec1::<f64>().unwrap().iter().zip(expected) {
        assert!((g - e).abs() < 1e-10);
    }
}

/// `vecf` as f32 values.
fn vec32(v: &Value) -> Vec<f32> {
    vecf(v).into_iter().map(|x| x as f32).collect()
}

/// Runs `steps` Adam steps on an f32 parameter, on the fused CPU path or
/// (with `candle`) on the candle composition; returns the trajectory.
fn run_f32(
    f: &Value,
    opt: &mut Optimizer,
    p: &Var,
    steps: usize,
    lr: f64,
    candle: bool,
) -> Vec<Vec<f32>> {
    let dev = Device::Cpu;
    let a = Tensor::new(vec32(&f["a"]).as_slice(), &dev).unwrap();
    let b = Tensor::new(vec32(&f["b"]).as_slice(), &dev).unwrap();
    let mut out = Vec::new();
    for _ in 0..steps {
        let grads = loss(p.as_tensor(), &a, &b).backward().unwrap();
        if candle {
            medseg_ops::with_candle_ops(|| opt.step(&grads, lr)).unwrap();
        } else {
            opt.step(&grads, lr).unwrap();
        }
        out.push(p.as_tensor().to_vec1::<f32>().unwrap());
    }
    out
}

#[test]
fn fused_adam_follows_pytorch_in_f32() {
    let f = fixture();
    let dev = Device::Cpu;
    for (name, s) in [
        (
            "adam",
            settings(OptimizerKind::Adam, 0.0, false, 0.0, [0.9, 0.999], 1e-8),
        ),
        (
            "adam_wd",
            settings(OptimizerKind::Adam, 0.0, false, 0.05, [0.8, 0.99], 1e-6),
        ),
        (
            "adamw",
            settings(OptimizerKind::Adamw, 0.0, false, 0.05, [0.9, 0.999], 1e-8),
        ),
    ] {
        let expected = f["optimizers"][name].as_array().unwrap();
        let mut paths = Vec::new();
        for candle in [false, true] {
            let p =
                Var::from_tensor(&Tensor::new(vec32(&f["p0"]).as_slice(), &dev).unwrap()).unwrap();
            let mut opt = Optimizer::new(vec![("p".into(), p.clone())], s);
            let got = run_f32(&f, &mut opt, &p, expected.len(), 0.1, candle);
            for (step, (g, e)) in got.iter().zip(expected).enumerate() {
                for (g, e) in g.iter().zip(vecf(e)) {
                    assert!(
                        (*g as f64 - e).abs() < 1e-5 * (1.0 + e.abs()),
                        "{name} (candle path: {candle}) step {step}: {g} vs {e}"
                    );
                }
            }
            paths.push(got);
        }
        // the fused update and the candle composition agree to f32 rounding
        for (a, b) in paths[0].iter().flatten().zip(paths[1].iter().flatten()) {
            assert!(
                (a - b).abs() <= 1e-6 * (1.0 + a.abs()),
                "{name}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn adam_state_moves_between_fused_and_candle_paths() {
    let f = fixture();
    let dev = Device::Cpu;
    let s = settings(OptimizerKind::Adam, 0.0, false, 0.05, [0.8, 0.99], 1e-6);
    let start =
        || Var::from_tensor(&Tensor::new(vec32(&f["p0"]).as_slice(), &dev).unwrap()).unwrap();
    // reference: eight fused steps
    let p = start();
    let mut opt = Optimizer::new(vec![("p".into(), p.clone())], s);
    let all = run_f32(&f, &mut opt, &p, 8, 0.1, false);
    for first_candle in [false, true] {
        let p = start();
        let mut opt = Optimizer::new(vec![("p".into(), p.clone())], s);
        run_f32(&f, &mut opt, &p, 4, 0.1, first_candle);
        // through a checkpoint's state into a fresh optimiser, then the other path
        let state = opt.state().unwrap();
        assert!(state.contains_key("optim.m.p") && state.contains_key("optim.v.p"));
        let mut opt2 = Optimizer::new(vec![("p".into(), p.clone())], s);
        opt2.load_state(&state).unwrap();
        let rest = run_f32(&f, &mut opt2, &p, 2, 0.1, !first_candle);
        // and on the same optimiser, switching path mid-run
        let rest2 = run_f32(&f, &mut opt2, &p, 2, 0.1, first_candle);
        for (a, b) in rest
            .iter()
            .chain(&rest2)
            .flatten()
            .zip(all[4..].iter().flatten())
        {
            assert!(
                (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                "first path candle {first_candle}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn clipping_scales_to_max_norm() {
    let dev = Device::Cpu;
    let p = Var::from_tensor(&Tensor::new(&[3.0f32, 4.0], &dev).unwrap()).unwrap();
    let params = vec![("p".to_string(), p.clone())];
    // loss = 0.5 |p|^2 -> grad = p, norm 5
    let mut g = (p.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5)
        .unwrap()
        .backward()
        .unwrap();
    assert!((grad_norm(&params, &g).unwrap() - 5.0).abs() < 1e-6);
    let before = clip_grad_norm(&params, &mut g, 1.0).unwrap();
    assert!((before - 5.0).abs() < 1e-6);
    let after = grad_norm(&params, &g).unwrap();
    assert!((after - 1.0).abs() < 1e-5, "{after}");
    let gv = g
        .get(p.as_tensor())
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert!((gv[0] / gv[1] - 0.75).abs() < 1e-6);
    // a norm below the limit is untouched
    let mut g2 = (p.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5)
        .unwrap()
        .backward()
        .unwrap();
    clip_grad_norm(&params, &mut g2, 10.0).unwrap();
    assert!((grad_norm(&params, &g2).unwrap() - 5.0).abs() < 1e-5);
}

fn schedule_cfg(kind: &str, extra: &str) -> LrSchedule {
    let text = format!(
        r#"
[dataset]
root = "d"
train_csv = "t.csv"
class_num = 2
[network]
name = "UNet2D"
[training]
output_dir = "o"
iterations = 30
lr = 0.1
lr_scheduler = "{kind}"
loss = {{ name = "CrossEntropyLoss" }}
{extra}
"#
    );
    LrSchedule::from_config(&ExperimentConfig::from_toml_str(&text).unwrap().training)
}

#[test]
fn schedules_follow_pytorch() {
    let f = fixture();
    let cases = [
        ("step", schedule_cfg("step", "lr_step = 7")),
        (
            "multistep",
            schedule_cfg("multistep", "lr_milestones = [5, 12, 20]\nlr_gamma = 0.3"),
        ),
        ("cosine", schedule_cfg("cosine", "lr_min = 0.001")),
        ("poly", schedule_cfg("poly", "poly_power = 0.9")),
    ];
    for (name, s) in cases {
        for (it, e) in vecf(&f["schedules"][name]).into_iter().enumerate() {
            let got = s.lr(it);
            assert!((got - e).abs() < 1e-9, "{name} it {it}: {got} vs {e}");
        }
    }
}

#[test]
fn warmup_and_plateau() {
    let s = schedule_cfg("constant", "warmup_iterations = 4");
    assert!((s.lr(0) - 0.025).abs() < 1e-15);
    assert!((s.lr(3) - 0.1).abs() < 1e-15);
    assert!((s.lr(10) - 0.1).abs() < 1e-15);
    let mut p = schedule_cfg(
        "plateau",
        "plateau_patience = 2\nlr_gamma = 0.5\nlr_min = 0.02",
    );
    assert!(!p.observe(0.5));
    assert!(!p.observe(0.4));
    assert!(!p.observe(0.5)); // not an improvement (equal)
    assert!(p.observe(0.45)); // third bad validation > patience
    assert!((p.lr(0) - 0.05).abs() < 1e-15);
    assert!(!p.observe(0.9));
    for _ in 0..6 {
        p.observe(0.1);
    }
    assert!(
        (p.lr(0) - 0.02).abs() < 1e-15,
        "floor at lr_min: {}",
        p.lr(0)
    );
    let s = schedule_cfg("poly", "");
    assert_eq!(s.lr(30), 0.0);
    assert_eq!(s.lr(100), 0.0);
    let _ = ScheduleKind::Poly;
}
