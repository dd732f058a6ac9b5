//! End-to-end: a few iterations on a tiny phantom. The loss falls, a
//! checkpoint round-trips, inference reproduces the validation score, a run
//! resumes from its latest checkpoint, and the same seed gives the same run.

use medseg_config::ExperimentConfig;
use medseg_infer::{Predictor, SlidingWindow};
use medseg_learners::{read_manifest, test_pipeline, Trainer, TrainerBuilder, ValidationSet};
use medseg_synth::{write_phantom_dataset, PhantomConfig};
use std::path::Path;

fn tiny_config(
    root: &Path,
    out: &Path,
    iterations: usize,
    valid_every: usize,
    extra: &str,
) -> ExperimentConfig {
    let text = format!(
        r#"
[dataset]
root = "{root}"
train_csv = "train.csv"
valid_csv = "valid.csv"
test_csv = "test.csv"
class_num = 4
train_batch_size = 4
num_workers = 2
train_transforms = [{{ name = "NormalizeWithMeanStd" }}, {{ name = "RandomFlip", axes = [2], p = 0.5 }}]
test_transforms = [{{ name = "NormalizeWithMeanStd" }}]

[network]
name = "UNet2D"
in_chns = 1
class_num = 4
feature_chns = [4, 8, 16, 32, 64]
dropout = [0.0, 0.0, 0.0, 0.0, 0.0]

[training]
output_dir = "{out}"
iterations = {iterations}
validate_every = {valid_every}
seed = 3
lr = 0.01
loss = {{ name = "CombinedLoss", terms = [{{ loss = "DiceLoss", weight = 0.5 }}, {{ loss = "CrossEntropyLoss", weight = 0.5 }}] }}
{extra}
"#,
        root = root.display(),
        out = out.display()
    );
    ExperimentConfig::from_toml_str(&text).unwrap()
}

/// The supervised trainer of `cfg`, without a progress bar.
fn supervised(cfg: ExperimentConfig) -> medseg_learners::Result<Trainer> {
    TrainerBuilder::new(cfg)
        .learner("supervised")
        .progress(false)
        .build()
}

fn tiny_phantom(root: &Path) {
    let mut pc = PhantomConfig::cardiac2d();
    pc.slices = 4;
    pc.height = 64;
    pc.width = 64;
    pc.spacing = [10.0, 3.0, 3.0];
    let ds = write_phantom_dataset(&pc, true, 6, 11, root).unwrap();
    assert_eq!(ds.images, 24);
    assert_eq!(ds.subjects.iter().sum::<usize>(), 6);
}

#[test]
fn train_checkpoint_infer_resume() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    tiny_phantom(&root);
    let out = dir.path().join("run");
    let cfg = tiny_config(&root, &out, 40, 20, "");
    let mut t = supervised(cfg.clone()).unwrap();
    let s = t.run().unwrap();
    assert_eq!(s.iterations, 40);
    assert!(
        s.final_loss < s.first_loss,
        "loss did not fall: {} -> {}",
        s.first_loss,
        s.final_loss
    );
    let best = s.best.clone().expect("validation ran");
    assert_eq!(best.class_dice.len(), 3);
    assert!(best.mean_dice > 0.0 && best.mean_dice <= 1.0);
    for f in [
        "train_log.csv",
        "valid_log.csv",
        "log.jsonl",
        "curves_loss.png",
        "curves_dice.png",
        "config.toml",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let ck = out.join("checkpoints");
    for f in [
        "best.safetensors",
        "best.json",
        "latest.safetensors",
        "latest.json",
        "latest_optim.safetensors",
    ] {
        assert!(ck.join(f).is_file(), "{f} missing");
    }
    let valid_lines = std::fs::read_to_string(out.join("valid_log.csv"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(valid_lines, 1 + 2);

    // the best checkpoint, loaded afresh, reproduces the validation score
    let (_vm, net) =
        medseg_nets::load_network(&ck.join("best.safetensors"), &candle_core::Device::Cpu).unwrap();
    let vs = ValidationSet::load(
        read_manifest(&cfg, Path::new("valid.csv")).unwrap(),
        &test_pipeline(&cfg).unwrap(),
        4,
        255,
    )
    .unwrap();
    let pred = Predictor::new(
        vec![net.as_ref()],
        candle_core::Device::Cpu,
        SlidingWindow::default(),
        false,
    )
    .unwrap();
    let dice = vs.evaluate(&pred, 4, 255).unwrap();
    let mean = dice.iter().sum::<f64>() / 3.0;
    assert!(
        (mean - best.mean_dice).abs() < 1e-9,
        "reloaded {mean} vs during training {}",
        best.mean_dice
    );

    // resume: 40 -> 50 iterations, logs appended
    let cfg2 = tiny_config(&root, &out, 50, 20, "resume = true");
    let mut t2 = supervised(cfg2).unwrap();
    let s2 = t2.run().unwrap();
    assert_eq!(s2.iterations, 50);
    let train_lines = std::fs::read_to_string(out.join("train_log.csv"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(train_lines, 1 + 50);
}

#[test]
fn same_seed_same_run_and_bad_config_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    tiny_phantom(&root);
    let mut logs = Vec::new();
    for k in 0..2 {
        let out = dir.path().join(format!("run{k}"));
        let mut t = supervised(tiny_config(&root, &out, 6, 0, "")).unwrap();
        t.run().unwrap();
        logs.push(std::fs::read_to_string(out.join("train_log.csv")).unwrap());
    }
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[0].lines().count(), 7);

    // a class count that does not match the network is named
    let mut cfg = tiny_config(&root, &dir.path().join("bad"), 2, 0, "");
    cfg.network["class_num"] = serde_json::json!(3);
    let e = supervised(cfg).err().expect("must fail").to_string();
    assert!(e.contains("class_num"), "{e}");
    // an unknown loss is named
    let mut cfg = tiny_config(&root, &dir.path().join("bad2"), 2, 0, "");
    cfg.training.loss = serde_json::json!({"name": "DiceLos"});
    let e = supervised(cfg).err().expect("must fail").to_string();
    assert!(e.contains("DiceLos"), "{e}");
}

#[test]
fn early_stopping_and_out_of_range_labels() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    tiny_phantom(&root);
    // a frozen network never improves after the first validation: stop at 2 x validate_every
    let out = dir.path().join("stop");
    let mut cfg = tiny_config(&root, &out, 40, 5, "early_stop_patience = 5");
    cfg.training.lr = 1e-12;
    // no running statistics: with a negligible rate the network does not change
    cfg.network["norm_type"] = serde_json::json!("instance_norm");
    let mut t = supervised(cfg).unwrap();
    let s = t.run().unwrap();
    assert!(s.early_stopped);
    assert_eq!(s.iterations, 10, "stopped at {}", s.iterations);
    assert_eq!(s.best.unwrap().iteration, 5);
    assert!(out.join("checkpoints/latest.json").is_file());

    // a label value >= class_num is an error naming the case and the value
    let mut cfg = tiny_config(&root, &dir.path().join("bad"), 4, 0, "");
    cfg.dataset.class_num = 3;
    cfg.network["class_num"] = serde_json::json!(3);
    let mut t = supervised(cfg).unwrap();
    let e = t.run().unwrap_err().to_string();
    assert!(e.contains("label value 3 is out of range"), "{e}");
    assert!(e.contains("subject"), "{e}");
}
