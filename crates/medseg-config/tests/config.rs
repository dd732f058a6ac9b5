//! Loading, overriding and validating experiment configurations.

use medseg_config::{import_pymic, ExperimentConfig, OptimizerKind, ScheduleKind};
use std::path::PathBuf;

const BASE: &str = r#"
[dataset]
root = "data/cardiac2d"
train_csv = "train.csv"
valid_csv = "valid.csv"
class_num = 4
train_transforms = [ { name = "RandomFlip", axes = [1] } ]

[network]
name = "UNet2D"
in_chns = 1
class_num = 4
feature_chns = [8, 16, 32, 64, 128]

[training]
output_dir = "runs/test"
iterations = 50
lr = 0.01
loss = { name = "DiceLoss" }
"#;

fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let p = dir.path().join("exp.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn defaults_and_values() {
    let c = ExperimentConfig::from_toml_str(BASE).unwrap();
    assert_eq!(c.dataset.class_num, 4);
    assert_eq!(c.dataset.ignore_label, 255);
    assert_eq!(c.dataset.train_batch_size, 4);
    assert_eq!(c.training.optimizer, OptimizerKind::Adam);
    assert_eq!(c.training.lr_scheduler, ScheduleKind::Constant);
    assert_eq!(c.training.lr, 0.01);
    assert_eq!(c.inference.overlap, 0.5);
    assert_eq!(c.network["feature_chns"][4], 128);
    assert_eq!(c.dataset.train_transforms[0]["name"], "RandomFlip");
}

#[test]
fn unknown_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        &BASE.replace("iterations = 50", "iterations = 50\nitertions = 3"),
    );
    let e = ExperimentConfig::load(&p, &[]).unwrap_err().to_string();
    assert!(e.contains("itertions"), "{e}");
    assert!(e.contains("training"), "{e}");
    assert!(e.contains("exp.toml"), "{e}");
    let e = ExperimentConfig::from_toml_str(&format!("{BASE}\n[infrence]\noverlap = 0.5\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("infrence"), "{e}");
}

#[test]
fn wrong_type_is_named() {
    let e = ExperimentConfig::from_toml_str(&BASE.replace("lr = 0.01", "lr = \"fast\""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("training.lr"), "{e}");
}

#[test]
fn invalid_value_is_named() {
    let e = ExperimentConfig::from_toml_str(&format!("{BASE}\n[inference]\noverlap = 1.5\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("inference.overlap"), "{e}");
    let e = ExperimentConfig::from_toml_str(
        &BASE.replace("class_num = 4\ntrain", "class_num = 1\ntrain"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("dataset.class_num"), "{e}");
}

#[test]
fn command_line_overrides_keep_types() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, BASE);
    let c = ExperimentConfig::load(
        &p,
        &[
            "training.iterations=7".into(),
            "training.optimizer=sgd".into(),
            "inference.patch_size=[64, 64]".into(),
            "training.nesterov=true".into(),
        ],
    )
    .unwrap();
    assert_eq!(c.training.iterations, 7);
    assert_eq!(c.training.optimizer, OptimizerKind::Sgd);
    assert!(c.training.nesterov);
    assert_eq!(c.inference.patch_size, Some(vec![64, 64]));
    let e = ExperimentConfig::load(&p, &["training.iterations".into()]).unwrap_err();
    assert!(e.to_string().contains("key=value"));
    let e = ExperimentConfig::load(&p, &["training.bogus=1".into()]).unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
}

#[test]
fn environment_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, BASE);
    // The only test that touches MEDSEG_ variables.
    std::env::set_var("MEDSEG_TRAINING__LR", "0.125");
    std::env::set_var("MEDSEG_DATASET__TRAIN_BATCH_SIZE", "2");
    let c = ExperimentConfig::load(&p, &[]);
    let c2 = ExperimentConfig::load(&p, &["training.lr=0.5".into()]);
    std::env::remove_var("MEDSEG_TRAINING__LR");
    std::env::remove_var("MEDSEG_DATASET__TRAIN_BATCH_SIZE");
    let c = c.unwrap();
    assert_eq!(c.training.lr, 0.125);
    assert_eq!(c.dataset.train_batch_size, 2);
    // the command line wins over the environment
    assert_eq!(c2.unwrap().training.lr, 0.5);
}

#[test]
fn missing_file_is_named() {
    let e = ExperimentConfig::load(std::path::Path::new("/nonexistent/exp.toml"), &[]).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/exp.toml"));
}

#[test]
fn hash_tracks_content() {
    let a = ExperimentConfig::from_toml_str(BASE).unwrap();
    let b = ExperimentConfig::from_toml_str(BASE).unwrap();
    let c = ExperimentConfig::from_toml_str(&BASE.replace("lr = 0.01", "lr = 0.02")).unwrap();
    assert_eq!(a.hash(), b.hash());
    assert_ne!(a.hash(), c.hash());
    assert_eq!(a.hash().len(), 64);
    // TOML round trip preserves the config
    let back = ExperimentConfig::from_toml_str(&a.to_toml_string()).unwrap();
    assert_eq!(back, a);
}

#[test]
fn pymic_import_maps_keys_and_reports_the_rest() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pymic_unet2d.cfg"
    ))
    .unwrap();
    let imp = import_pymic(&text).unwrap();
    let cfg =
        ExperimentConfig::from_toml_str(&imp.toml).unwrap_or_else(|e| panic!("{e}\n{}", imp.toml));
    assert_eq!(cfg.dataset.root, PathBuf::from("../../PyMIC_data/JSRT"));
    assert_eq!(cfg.dataset.class_num, 2);
    assert_eq!(cfg.dataset.num_workers, 2);
    assert_eq!(cfg.network["name"], "UNet2D");
    assert_eq!(cfg.network["feature_chns"][2], 64);
    assert_eq!(cfg.training.lr, 1e-3);
    assert_eq!(cfg.training.lr_scheduler, ScheduleKind::Plateau);
    assert_eq!(cfg.training.iterations, 10000);
    assert_eq!(cfg.training.checkpoint_every, 500);
    assert_eq!(cfg.training.loss["name"], "CombinedLoss");
    assert_eq!(cfg.training.loss["terms"][1]["loss"], "CrossEntropyLoss");
    assert_eq!(cfg.training.loss["terms"][0]["weight"], 0.5);
    assert_eq!(cfg.dataset.train_transforms[1]["name"], "RandomCrop");
    assert_eq!(cfg.dataset.train_transforms[1]["output_size"][0], 240);
    assert_eq!(cfg.inference.patch_size, Some(vec![240, 240]));
    assert!((cfg.inference.overlap - 0.5).abs() < 1e-12);
    assert_eq!(
        cfg.inference.largest_component,
        medseg_config::LargestComponent::PerClass
    );
    // network keys pass through to the network registry, which validates them
    assert_eq!(cfg.network["multiscale_pred"], false);
    for k in [
        "training.gpus",
        "dataset.task_type (medseg infers it)",
        "testing.gpus",
    ] {
        assert!(
            imp.unmapped.iter().any(|u| u == k),
            "{k} missing from {:?}",
            imp.unmapped
        );
    }
    assert!(imp
        .unmapped
        .iter()
        .any(|u| u.contains("reducelronplateau_patience")));
}

#[test]
fn pymic_import_rejects_garbage() {
    assert!(import_pymic("not an ini line").is_err());
    assert!(import_pymic("key = 1").is_err());
}
