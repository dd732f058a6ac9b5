//! Loading, overriding and validating experiment configurations.

use medseg_config::{ExperimentConfig, OptimizerKind, ScheduleKind};
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
    // process settings with the same prefix are not read as config keys
    // (as overrides they would be unknown top-level keys, an error)
    for k in medseg_config::RUNTIME_ENV {
        std::env::set_var(k, "0");
    }
    let c = ExperimentConfig::load(&p, &[]);
    let c2 = ExperimentConfig::load(&p, &["training.lr=0.5".into()]);
    std::env::remove_var("MEDSEG_TRAINING__LR");
    std::env::remove_var("MEDSEG_DATASET__TRAIN_BATCH_SIZE");
    for k in medseg_config::RUNTIME_ENV {
        std::env::remove_var(k);
    }
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
fn output_label_conversion_is_checked() {
    let ok = format!(
        "{BASE}\n[inference]\noutput_label_source = [0, 1]\noutput_label_target = [0, 255]\n"
    );
    let c = ExperimentConfig::from_toml_str(&ok).unwrap();
    assert_eq!(c.inference.output_label_target, vec![0, 255]);
    let uneven = ok.replace("[0, 255]", "[0]");
    let e = ExperimentConfig::from_toml_str(&uneven)
        .unwrap_err()
        .to_string();
    assert!(e.contains("inference.output_label_target"), "{e}");
    let twice = ok.replace(
        "output_label_source = [0, 1]",
        "output_label_source = [1, 1]",
    );
    let e = ExperimentConfig::from_toml_str(&twice)
        .unwrap_err()
        .to_string();
    assert!(e.contains("inference.output_label_source"), "{e}");
    // absent by default, and not written, so configs keep their hashes
    let plain = ExperimentConfig::from_toml_str(BASE).unwrap();
    assert!(!plain.to_toml_string().contains("output_label"));
}
