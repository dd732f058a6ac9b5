//! Self-supervised pre-training: MoCo's momentum encoder and queue, the
//! engine end to end for every built-in method, and `network.pretrained`
//! (with `network.freeze_encoder`) in a training run.

mod common;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use common::{phantom, tiny, Tiny};
use medseg_learners::selfsup::{moco::MoCo, PretrainInit, Pretrainer, SelfSupMethod};
use medseg_learners::{Optimizer, OptimizerSettings, TrainerBuilder};
use medseg_nets::NetRegistry;

const VIEWS: &str = r#"
[pretrain]
method = "METHOD"
iterations = 3
batch_size = 4
view_transforms = [
    { name = "RandomFlip", axes = [1, 2], p = 0.5 },
    { name = "GaussianNoise", std_range = [0.0, 0.1], p = 0.5 },
]
params = PARAMS
"#;

fn section(method: &str, params: &str) -> String {
    VIEWS.replace("METHOD", method).replace("PARAMS", params)
}

fn values(vm: &VarMap) -> Vec<(String, Vec<f32>)> {
    let data = vm.data().lock().unwrap();
    let mut v: Vec<(String, Vec<f32>)> = data
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn moco_key_encoder_is_the_exact_ema_and_the_queue_takes_the_keys() {
    let (dir, root) = phantom(2, 32);
    let sec = section(
        "MoCo",
        "{ queue_size = 6, momentum = 0.9, proj_dim = 8, hidden_dim = 16 }",
    );
    let cfg = tiny(
        &root,
        &dir.path().join("out"),
        &Tiny {
            section: &sec,
            ..Default::default()
        },
    );
    let dev = Device::Cpu;
    let networks = NetRegistry::with_builtins();
    let pre = Pretrainer::new(cfg.clone());
    let init = PretrainInit {
        config: &cfg,
        device: &dev,
        networks: &networks,
        network_config: pre.network_table(),
    };
    let mut m = MoCo::new(&init).unwrap();
    let snap = |vars: &[candle_core::Var]| -> Vec<Vec<f32>> {
        vars.iter()
            .map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    };
    // the key encoder starts as a copy of the query encoder
    let q0 = snap(&m.query_vars().unwrap());
    let k0 = snap(&m.key_vars().unwrap());
    assert_eq!(q0, k0);
    assert!(q0.len() > 4);

    let mut opt = Optimizer::new(
        m.params().unwrap(),
        OptimizerSettings::from_config(&cfg.training),
    );
    let mut pushed_keys = Vec::new();
    let mut k_prev = k0;
    for it in 0..3 {
        let v1 = Tensor::randn(0f32, 1.0, (4, 1, 32, 32), &dev).unwrap();
        let v2 = Tensor::randn(0f32, 1.0, (4, 1, 32, 32), &dev).unwrap();
        let out = m.step(&[v1, v2], it).unwrap();
        let grads = out.loss.backward().unwrap();
        opt.step(&grads, 0.05).unwrap();
        let q_new = snap(&m.query_vars().unwrap());
        assert_ne!(q_new, snap(&m.key_vars().unwrap()), "the query moved");
        m.after_update(it).unwrap();
        let k_new = snap(&m.key_vars().unwrap());
        // theta_k = m theta_k + (1 - m) theta_q, tensor by tensor
        for ((kp, kn), qn) in k_prev.iter().zip(&k_new).zip(&q_new) {
            let want: Vec<f32> = kp.iter().zip(qn).map(|(k, q)| 0.9 * k + 0.1 * q).collect();
            assert!(max_diff(&want, kn) < 1e-6);
        }
        k_prev = k_new;
        // the queue holds this step's keys last, unit length
        let held = m.queue().last_keys();
        assert_eq!(m.queue().pushed(), 4 * (it as u64 + 1));
        let last4 = &held[held.len() - 4..];
        for k in last4 {
            let n: f32 = k.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-5);
        }
        pushed_keys.extend(last4.to_vec());
        // capacity 6: the last 6 keys pushed, oldest first
        let want = &pushed_keys[pushed_keys.len().saturating_sub(6)..];
        assert_eq!(held, want);
    }
}

#[test]
fn every_method_pretrains_and_its_encoder_loads_into_a_training_run() {
    let (dir, root) = phantom(2, 32);
    for (method, params) in [
        ("MoCo", "{ queue_size = 16, proj_dim = 8, hidden_dim = 16 }"),
        ("SimCLR", "{ proj_dim = 8, hidden_dim = 16 }"),
        ("ModelGenesis", "{}"),
    ] {
        let out = dir.path().join(method);
        let mut sec = section(method, params);
        if method == "ModelGenesis" {
            sec = sec.replace(
                "{ name = \"RandomFlip\", axes = [1, 2], p = 0.5 },",
                "{ name = \"NonLinearTransform\", p = 0.9 }, { name = \"LocalShuffling\", p = 0.5, block_range = [20, 40] }, { name = \"InOutPainting\", p = 0.9 },",
            );
        }
        let cfg = tiny(
            &root,
            &out,
            &Tiny {
                section: &sec,
                ..Default::default()
            },
        );
        let s = Pretrainer::new(cfg.clone()).run().unwrap();
        assert_eq!(s.iterations, 3);
        assert!(s.first_loss.is_finite() && s.final_loss.is_finite());
        assert!(s.encoder_path.exists(), "{method}");
        assert!(out.join("pretrain/train_log.csv").exists());
        let enc = {
            let b = std::fs::read(&s.encoder_path).unwrap();
            let st = safetensors::SafeTensors::deserialize(&b).unwrap();
            let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
            names.sort();
            names
        };
        assert_eq!(enc.len(), s.encoder_tensors);
        assert!(
            enc.iter().all(|n| n.starts_with("encoder.")),
            "{method}: {enc:?}"
        );

        // fine-tuning with the encoder frozen for longer than the run:
        // the encoder stays the file's, the decoder learns
        let mut ft = tiny(
            &root,
            &out.join("ft"),
            &Tiny {
                iterations: 3,
                ..Default::default()
            },
        );
        ft.network["pretrained"] = serde_json::json!(s.encoder_path.to_str().unwrap());
        ft.network["freeze_encoder"] = serde_json::json!(5);
        let mut trainer = TrainerBuilder::new(ft.clone()).build().unwrap();
        let before = values(trainer.varmap());
        let file = candle_core::safetensors::load(&s.encoder_path, &Device::Cpu).unwrap();
        for (k, v) in &before {
            if let Some(t) = file.get(k) {
                let f: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                assert_eq!(&f, v, "{method}: {k} not loaded");
            }
        }
        trainer.run().unwrap();
        let after = values(trainer.varmap());
        for ((k, a), (_, b)) in before.iter().zip(&after) {
            let is_stat = k.ends_with("running_mean") || k.ends_with("running_var");
            if k.starts_with("encoder.") && !is_stat {
                assert_eq!(a, b, "{method}: frozen {k} moved");
            }
        }
        assert!(
            before
                .iter()
                .zip(&after)
                .any(|((k, a), (_, b))| k.starts_with("decoder.") && a != b),
            "{method}: the decoder did not learn"
        );

        // without freezing, the encoder learns too
        ft.network["freeze_encoder"] = serde_json::json!(0);
        ft.training.output_dir = out.join("ft2");
        let mut trainer = TrainerBuilder::new(ft).build().unwrap();
        let before = values(trainer.varmap());
        trainer.run().unwrap();
        let after = values(trainer.varmap());
        assert!(before
            .iter()
            .zip(&after)
            .any(|((k, a), (_, b))| k.starts_with("encoder.") && a != b));
    }
}

#[test]
fn pretraining_errors_name_what_is_wrong() {
    let (dir, root) = phantom(2, 32);
    let out = dir.path().join("o");
    // no [pretrain] section
    let cfg = tiny(&root, &out, &Tiny::default());
    let e = Pretrainer::new(cfg).run().unwrap_err().to_string();
    assert!(e.contains("[pretrain]"), "{e}");
    // unknown method
    let cfg = tiny(
        &root,
        &out,
        &Tiny {
            section: &section("BYOL", "{}"),
            ..Default::default()
        },
    );
    let e = Pretrainer::new(cfg).run().unwrap_err().to_string();
    assert!(e.contains("BYOL") && e.contains("MoCo"), "{e}");
    // misspelt parameter
    let cfg = tiny(
        &root,
        &out,
        &Tiny {
            section: &section("MoCo", "{ queue = 8 }"),
            ..Default::default()
        },
    );
    let e = Pretrainer::new(cfg).run().unwrap_err().to_string();
    assert!(e.contains("pretrain.params") && e.contains("queue"), "{e}");
    // views of different sizes (a rescale without a crop back)
    let sec = section("SimCLR", "{}").replace(
        "{ name = \"RandomFlip\", axes = [1, 2], p = 0.5 },",
        "{ name = \"RandomRescale\", ratio_range = [0.5, 1.5], p = 1.0 },",
    );
    let cfg = tiny(
        &root,
        &out,
        &Tiny {
            section: &sec,
            ..Default::default()
        },
    );
    let e = Pretrainer::new(cfg).run().unwrap_err().to_string();
    assert!(e.contains("differ in shape"), "{e}");
    // a pretrained file that does not fit the network
    let mut cfg = tiny(&root, &out, &Tiny::default());
    let bad = dir.path().join("bad.safetensors");
    let t = Tensor::zeros((3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &[("encoder.in_conv.conv_conv.0.weight".to_string(), t)]
            .into_iter()
            .collect(),
        &bad,
    )
    .unwrap();
    cfg.network["pretrained"] = serde_json::json!(bad.to_str().unwrap());
    let e = TrainerBuilder::new(cfg).build().err().unwrap().to_string();
    assert!(
        e.contains("bad.safetensors") && e.contains("another shape"),
        "{e}"
    );
}
