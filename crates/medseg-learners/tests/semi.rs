//! Semi-supervised learners: the Mean Teacher's EMA is exact (weights and
//! running statistics), the consistency weight follows the sigmoid ramp-up,
//! and a short run of every method on a tiny phantom executes with a
//! non-zero, finite unsupervised loss.

mod common;

use candle_core::{DType, Device, Tensor};
use medseg_config::ExperimentConfig;
use medseg_learners::semi::{consistency_weight, MeanTeacher, SemiLearner};
use medseg_learners::{
    build_loss, build_net, ema_decay_at, network_config, Learner, LearnerInit, LearnerRegistry,
    StepContext, TensorBatch, Trainer, TrainerBuilder,
};
use medseg_losses::LossTarget;
use medseg_nets::NetRegistry;
use medseg_synth::{write_phantom_dataset, PhantomConfig};
use std::path::Path;

fn config(root: &Path, out: &Path, net: &str, semi: &str, iterations: usize) -> ExperimentConfig {
    common::tiny(
        root,
        out,
        &common::Tiny {
            dataset: "train_csv = \"train_labelled.csv\"\ntrain_unlabelled_csv = \"train_unlabelled.csv\"",
            transforms: r#"{ name = "NormalizeWithMeanStd" }, { name = "RandomCrop", size = [48, 48] }"#,
            net,
            seed: 5,
            iterations,
            section: &format!("[semi]\n{semi}"),
            ..Default::default()
        },
    )
}

fn tiny_phantom(root: &Path) {
    let mut pc = PhantomConfig::cardiac2d();
    pc.slices = 3;
    pc.height = 64;
    pc.width = 64;
    pc.spacing = [10.0, 3.0, 3.0];
    let ds = write_phantom_dataset(&pc, true, 10, 11, root).unwrap();
    assert!(ds.labelled_subjects >= 1);
}

/// The trainer of a semi-supervised config, without a progress bar.
fn semi_trainer(cfg: ExperimentConfig) -> Trainer {
    TrainerBuilder::new(cfg).progress(false).build().unwrap()
}

/// Builds the learner of `cfg` from the built-in registry around a fresh
/// student, as the trainer does.
fn build_learner(cfg: &ExperimentConfig) -> Result<Box<dyn Learner>, medseg_learners::LearnError> {
    let dev = Device::Cpu;
    let nc = network_config(cfg);
    let (vm, net) = build_net(&nc, &dev)?;
    let name = medseg_learners::learner_name(cfg).to_string();
    LearnerRegistry::with_builtins().build(
        &name,
        &LearnerInit {
            config: cfg,
            device: &dev,
            student: &vm,
            student_net: net.as_ref(),
            network_config: &nc,
            networks: &NetRegistry::with_builtins(),
        },
    )
}

fn jsonl(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .collect()
}

#[test]
fn every_method_runs_with_a_finite_nonzero_unsupervised_loss() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    tiny_phantom(&root);
    let cases = [
        ("EntropyMinimization", "UNet2D", None),
        ("MeanTeacher", "UNet2D", Some("teacher")),
        ("UAMT", "UNet2D", Some("teacher")),
        ("CCT", "CCTNet", None),
        ("CPS", "UNet2D", Some("net2")),
        ("URPC", "URPC", None),
        ("MCNet", "MCNet", None),
    ];
    for ((method, net, extra), joint) in cases.into_iter().flat_map(|c| [(c, true), (c, false)]) {
        let out = dir.path().join(format!("{method}_{joint}"));
        // rampup_end = 0 so that the weight is regularize_w from the start;
        // each method once with one forward pass, once with two
        let mc = if method == "UAMT" {
            "mc_dropout_n = 2, "
        } else {
            ""
        };
        let semi = format!(
            "method = \"{method}\"\nregularize_w = 0.5\nrampup_end = 0.0\nparams = {{ {mc}joint_forward = {joint} }}"
        );
        let cfg = config(&root, &out, net, &semi, 2);
        let mut t = semi_trainer(cfg);
        let s = t.run().unwrap();
        assert_eq!(s.iterations, 2, "{method}");
        let log = jsonl(&out);
        assert_eq!(log.len(), 2, "{method}");
        for e in &log {
            let unsup = e["unsup"].as_f64().unwrap();
            let sup = e["sup"].as_f64().unwrap();
            let w = e["weight"].as_f64().unwrap();
            let loss = e["loss"].as_f64().unwrap();
            assert!(unsup.is_finite() && unsup > 0.0, "{method}: unsup {unsup}");
            assert!(sup.is_finite() && sup > 0.0, "{method}: sup {sup}");
            assert_eq!(w, 0.5, "{method}");
            // the logged total is the supervised part plus the weighted term
            let sup_total = if method == "CPS" {
                sup + e["sup2"].as_f64().unwrap()
            } else {
                sup
            };
            assert!(
                (loss - (sup_total + w * unsup)).abs() < 1e-4 * loss.abs().max(1.0),
                "{method}: {loss} vs {sup_total} + {w} * {unsup}"
            );
        }
        let ck = out.join("checkpoints");
        assert!(ck.join("latest.safetensors").is_file(), "{method}");
        if let Some(suffix) = extra {
            assert!(
                ck.join(format!("latest_{suffix}.safetensors")).is_file(),
                "{method}: {suffix} weights not saved"
            );
        }
    }
}

fn random_batch(n: usize, seed: u64, dev: &Device) -> TensorBatch {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let img: Vec<f32> = (0..n * 32 * 32)
        .map(|_| rng.random::<f32>() - 0.5)
        .collect();
    let lab: Vec<u32> = (0..n * 32 * 32)
        .map(|_| rng.random_range(0..4u32))
        .collect();
    let image = Tensor::from_vec(img, (n, 1, 32, 32), dev).unwrap();
    let labels = Tensor::from_vec(lab, (n, 1, 32, 32), dev).unwrap();
    TensorBatch {
        image,
        target: LossTarget::class_map(labels.clone()).with_ignore(255),
        labels: Some(labels),
    }
}

fn snapshot(vm: &candle_nn::VarMap) -> Vec<(String, Vec<f32>)> {
    let data = vm.data().lock().unwrap();
    let mut v: Vec<(String, Vec<f32>)> = data
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A fresh student network, a Mean Teacher bound to it, the configured loss
/// and two random batches (labelled, unlabelled).
struct MtSetup {
    cfg: ExperimentConfig,
    student_vm: candle_nn::VarMap,
    student: Box<dyn medseg_nets::SegNetwork>,
    loss: Box<dyn medseg_losses::Loss>,
    lab: TensorBatch,
    unl: TensorBatch,
}

impl MtSetup {
    fn new(cfg: ExperimentConfig) -> (Self, SemiLearner<MeanTeacher>) {
        let dev = Device::Cpu;
        let nc = network_config(&cfg);
        let (student_vm, student) = build_net(&nc, &dev).unwrap();
        let init = LearnerInit {
            config: &cfg,
            device: &dev,
            student: &student_vm,
            student_net: student.as_ref(),
            network_config: &nc,
            networks: &NetRegistry::with_builtins(),
        };
        let mt = SemiLearner::<MeanTeacher>::new("MeanTeacher", &init).unwrap();
        let loss = build_loss(&cfg.training.loss).unwrap();
        let (lab, unl) = (random_batch(2, 1, &dev), random_batch(2, 2, &dev));
        let s = Self {
            cfg,
            student_vm,
            student,
            loss,
            lab,
            unl,
        };
        (s, mt)
    }

    fn ctx(&self, iteration: usize) -> StepContext<'_> {
        StepContext {
            iteration,
            iterations: 10,
            net: self.student.as_ref(),
            loss: self.loss.as_ref(),
            labelled: &self.lab,
            unlabelled: Some(&self.unl),
            noisy: None,
            config: &self.cfg,
        }
    }
}

#[test]
fn mean_teacher_update_is_an_exact_in_place_ema_of_weights_and_running_stats() {
    let dir = tempfile::tempdir().unwrap();
    let semi = "method = \"MeanTeacher\"\nema_decay = 0.9";
    let cfg = config(dir.path(), &dir.path().join("o"), "UNet2D", semi, 10);
    let (setup, mut mt) = MtSetup::new(cfg);
    let student_vm = &setup.student_vm;
    // same configuration and seed: the teacher starts as the student
    assert_eq!(
        snapshot(mt.method().teacher().varmap()),
        snapshot(student_vm)
    );
    let ctx = setup.ctx(7);
    let t_before = snapshot(mt.method().teacher().varmap());
    let out = mt.train_step(&ctx).unwrap();
    // the teacher's train-mode forward leaves its running statistics alone,
    // while the student's moved
    assert_eq!(snapshot(mt.method().teacher().varmap()), t_before);
    let s_after = snapshot(student_vm);
    let moved = s_after
        .iter()
        .zip(&t_before)
        .filter(|(s, t)| s.0.ends_with("running_mean") && s.1 != t.1)
        .count();
    assert!(moved > 0);
    // a real optimiser-like step on the student: SGD with the step's gradient
    let grads = out.loss.backward().unwrap();
    for v in medseg_nets::trainable_vars(student_vm) {
        if let Some(g) = grads.get(v.as_tensor()) {
            v.set(&(v.as_tensor() - (g * 0.5).unwrap()).unwrap())
                .unwrap();
        }
    }
    let t0 = snapshot(mt.method().teacher().varmap());
    let s1 = snapshot(student_vm);
    let held = mt.method().teacher().varmap().data().lock().unwrap()
        ["encoder.in_conv.conv_conv.0.weight"]
        .as_tensor()
        .clone();
    mt.after_update(&ctx).unwrap();
    let d = ema_decay_at(7, 0.9);
    assert_eq!(d, 0.875);
    let t1 = snapshot(mt.method().teacher().varmap());
    let mut changed = 0;
    for ((a, b), (c, e)) in t0.iter().zip(&s1).zip(&t1) {
        assert_eq!(a.0, b.0);
        assert_eq!(&a.0, c);
        for ((&t, &s), &got) in a.1.iter().zip(&b.1).zip(e) {
            let want = t * d as f32 + s * (1.0 - d) as f32;
            assert_eq!(got, want, "{}", a.0);
            changed += (got != t) as usize;
        }
    }
    assert!(changed > 1000, "only {changed} values moved");
    // in place: a tensor handle taken before the update sees the new values
    let name = "encoder.in_conv.conv_conv.0.weight";
    let now = t1.iter().find(|x| x.0 == name).unwrap();
    assert_eq!(held.flatten_all().unwrap().to_vec1::<f32>().unwrap(), now.1);
}

#[test]
fn consistency_weight_follows_the_sigmoid_rampup() {
    let dir = tempfile::tempdir().unwrap();
    let semi = "method = \"CPS\"\nregularize_w = 0.5\nrampup_start = 0.1\nrampup_end = 0.5";
    let cfg = config(dir.path(), dir.path(), "UNet2D", semi, 100);
    let s = cfg.semi.as_ref().unwrap();
    let e5 = (-5.0f64).exp();
    assert!((consistency_weight(s, 0, 100) - 0.5 * e5).abs() < 1e-15);
    assert!((consistency_weight(s, 10, 100) - 0.5 * e5).abs() < 1e-15);
    // t = (30 - 10) / 40 = 0.5: exp(-5 * 0.25)
    assert!((consistency_weight(s, 30, 100) - 0.5 * (-1.25f64).exp()).abs() < 1e-15);
    // t = (40 - 10) / 40 = 0.75: exp(-5 * 0.0625)
    assert!((consistency_weight(s, 40, 100) - 0.5 * (-0.3125f64).exp()).abs() < 1e-15);
    assert_eq!(consistency_weight(s, 50, 100), 0.5);
    assert_eq!(consistency_weight(s, 99, 100), 0.5);
}

#[test]
fn bad_configs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = |net: &str, semi: &str| {
        let cfg = config(dir.path(), dir.path(), net, semi, 10);
        build_learner(&cfg).err().expect("must fail").to_string()
    };
    // (network, [semi] body, words the error must contain)
    let cases: [(&str, &str, &[&str]); 8] = [
        (
            "UNet2D",
            "method = \"MeanTeacherr\"",
            &["MeanTeacherr", "CPS"],
        ),
        ("UNet2D", "method = \"CCT\"", &["CCTNet", "network.name"]),
        (
            "UNet2D",
            "method = \"UAMT\"\nparams = { mc_dropout_n = 3 }",
            &["mc_dropout_n"],
        ),
        (
            "UNet2D",
            "method = \"MeanTeacher\"\nparams = { teacher_batch_stats = 1 }",
            &["teacher_batch_stats"],
        ),
        (
            "UNet2D",
            "method = \"MeanTeacher\"\nparams = { student_noise_std = -0.1 }",
            &["student_noise_std", ">= 0"],
        ),
        // a misspelt parameter is named, with the ones the method takes
        (
            "UNet2D",
            "method = \"MeanTeacher\"\nparams = { transform_consistancy = true }",
            &["transform_consistancy", "transform_consistency"],
        ),
        (
            "UNet2D",
            "method = \"CPS\"\nparams = { joint_forward = \"no\" }",
            &["joint_forward", "true or false"],
        ),
        ("UNet2D", "method = \"MCNet\"", &["\"MCNet\"", "UNet2D"]),
    ];
    for (net, semi, words) in cases {
        let e = err(net, semi);
        assert!(words.iter().all(|w| e.contains(w)), "{semi}: {e}");
    }
    let e = err("UNet2D", "method = \"CPS\"\nparams = { noise_std = 0.1 }");
    assert!(
        e.contains("noise_std") && e.contains("joint_forward"),
        "{e}"
    );
    // a misspelt method lists the registered ones
    let e = err("UNet2D", "method = \"Cps\"");
    assert!(
        e.contains("\"Cps\"") && e.contains("CPS") && e.contains("MeanTeacher"),
        "{e}"
    );
}

#[test]
fn cps_trains_its_second_network() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    let cfg = config(dir.path(), dir.path(), "UNet2D", "method = \"CPS\"", 10);
    let l = build_learner(&cfg).unwrap();
    let extra = l.extra_params();
    let (vm1, net1) = build_net(&network_config(&cfg), &dev).unwrap();
    // every trainable tensor of a second network, none of the running stats
    assert_eq!(extra.len(), medseg_nets::trainable_vars(&vm1).len());
    assert!(extra.iter().all(|(k, _)| k.starts_with("net2.")));
    let total: usize = extra.iter().map(|(_, v)| v.as_tensor().elem_count()).sum();
    assert_eq!(total, net1.num_parameters());
    // a different initialisation from the first network
    let w1 = vm1.data().lock().unwrap()["encoder.in_conv.conv_conv.0.weight"]
        .as_tensor()
        .clone();
    let w2 = extra
        .iter()
        .find(|(k, _)| k == "net2.encoder.in_conv.conv_conv.0.weight")
        .unwrap()
        .1
        .as_tensor()
        .clone();
    let diff = (w1 - w2)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(diff > 0.0);
}

#[test]
fn mean_teacher_with_an_eval_mode_teacher_runs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    tiny_phantom(&root);
    let out = dir.path().join("mt_eval");
    let semi = "method = \"MeanTeacher\"\nregularize_w = 0.5\nrampup_end = 0.0\nparams = { teacher_batch_stats = false }";
    let cfg = config(&root, &out, "UNet2D", semi, 2);
    let mut t = semi_trainer(cfg);
    assert_eq!(t.run().unwrap().iterations, 2);
    for e in jsonl(&out) {
        let unsup = e["unsup"].as_f64().unwrap();
        assert!(unsup.is_finite() && unsup > 0.0, "unsup {unsup}");
    }
}

/// One Mean Teacher step with the given `semi.params` (dropout off), and the
/// supervised loss of the student's forward pass on the labelled batch alone.
fn mean_teacher_step(params: &str) -> (Vec<(String, f64)>, f64) {
    let dir = tempfile::tempdir().unwrap();
    let semi = format!("method = \"MeanTeacher\"\nrampup_end = 0.0\nparams = {{ {params} }}");
    let mut cfg = config(dir.path(), &dir.path().join("o"), "UNet2D", &semi, 10);
    cfg.network["dropout"] = serde_json::json!([0.0, 0.0, 0.0, 0.0]);
    let (setup, mut mt) = MtSetup::new(cfg);
    let terms = mt.train_step(&setup.ctx(3)).unwrap().terms;
    let (student, loss, lab) = (&setup.student, &setup.loss, &setup.lab);
    let alone = student.forward_t(&lab.image, true).unwrap().logits;
    let sup_alone = loss
        .forward(&medseg_losses::Prediction::logits(alone), &lab.target)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    (terms, sup_alone)
}

fn term(terms: &[(String, f64)], name: &str) -> f64 {
    terms.iter().find(|t| t.0 == name).unwrap().1
}

#[test]
fn mean_teacher_separate_passes_normalise_the_labelled_batch_alone() {
    // joint (default): BatchNorm statistics mix both batches, so the
    // supervised loss differs from that of the labelled batch alone
    let (joint, alone) = mean_teacher_step("");
    assert!(
        (term(&joint, "sup") - alone).abs() > 1e-4,
        "{joint:?} {alone}"
    );
    // separate passes: exactly the labelled batch's own forward pass
    let (sep, alone) = mean_teacher_step("joint_forward = false");
    assert!((term(&sep, "sup") - alone).abs() < 1e-6, "{sep:?} {alone}");
    // student noise changes the student's unlabelled input, hence the
    // consistency loss, but not the supervised loss
    let (noisy, _) = mean_teacher_step("joint_forward = false, student_noise_std = 0.3");
    assert!((term(&noisy, "sup") - term(&sep, "sup")).abs() < 1e-6);
    let (u0, u1) = (term(&sep, "unsup"), term(&noisy, "unsup"));
    assert!(u1.is_finite() && (u1 - u0).abs() > 1e-7, "{u0} {u1}");
    // so does a flip or rotation of the student's unlabelled images
    let (turned, _) = mean_teacher_step("joint_forward = false, transform_consistency = true");
    assert!((term(&turned, "sup") - term(&sep, "sup")).abs() < 1e-6);
    let u2 = term(&turned, "unsup");
    assert!(u2.is_finite() && (u2 - u0).abs() > 1e-7, "{u0} {u2}");
}
