//! PyMIC import over configs in PyMIC 0.6's format (tests/fixtures/pymic,
//! written for these tests): together they use every section, key,
//! transform, network, loss, scheduler and method that PyMIC_examples'
//! segmentation configs use (tests/fixtures/pymic/published_keys.txt, made
//! by tools/list_pymic_example_keys.py). Each imports; the ones with keys
//! that change the results and cannot be mapped fail unless unmapped keys
//! are allowed, naming those keys; the mapped values follow PyMIC's
//! semantics and defaults.

use medseg_config::{
    import_pymic, Effect, ExperimentConfig, LargestComponent, OptimizerKind, PymicError,
    PymicImport, PymicOptions, ScheduleKind,
};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pymic")
}

fn fixtures() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cfg"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// PyMIC ran from `/work/examples/seg` (paths only; nothing is read there).
fn opts(allow: bool) -> PymicOptions {
    PymicOptions {
        working_dir: PathBuf::from("/work/examples/seg"),
        allow_unmapped: allow,
    }
}

fn import(name: &str) -> (PymicImport, ExperimentConfig) {
    let text = std::fs::read_to_string(fixture_dir().join(name)).unwrap();
    let imp = import_pymic(&text, &opts(false)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let cfg = ExperimentConfig::from_toml_str(&imp.toml)
        .unwrap_or_else(|e| panic!("{name}: {e}\n{}", imp.toml));
    (imp, cfg)
}

fn note<'a>(imp: &'a PymicImport, key: &str) -> &'a medseg_config::PymicNote {
    imp.notes
        .iter()
        .find(|n| n.key == key)
        .unwrap_or_else(|| panic!("no note on {key}: {:#?}", imp.notes))
}

/// The blocking keys each `unmapped_*` fixture must report.
fn expected_blocking(name: &str) -> &'static [&'static str] {
    match name {
        "unmapped_canet.cfg" | "unmapped_lcovnet.cfg" => &["network.net_type"],
        "unmapped_swinunet.cfg" | "unmapped_transunet.cfg" => {
            &["network.net_type", "network.img_size"]
        }
        "unmapped_custom.cfg" => &[
            "network.net_type",
            "training.loss_type",
            "training.myfocaldiceloss_beta",
        ],
        "unmapped_fetal_rescale.cfg" => &["dataset.train_transform"],
        "unmapped_finetune.cfg" => &[
            "network.weights_load_mode",
            "training.ckpt_init_name",
            "training.ckpt_init_mode",
        ],
        "unmapped_trinet.cfg" => &["noisy_label_learning.trinet_select_ratio"],
        n if n.starts_with("unmapped_selfsup") => &[
            "self_supervised_learning.method_name",
            "dataset.task_type",
            "dataset.valid_dir",
            "dataset.test_dir",
            "training.loss_acti_func",
        ],
        _ => &[],
    }
}

#[test]
fn every_fixture_imports_or_names_what_blocks_it() {
    let all = fixtures();
    assert_eq!(all.len(), 34);
    for (name, text) in &all {
        let expected = expected_blocking(name);
        match import_pymic(text, &opts(false)) {
            Ok(imp) => {
                assert!(expected.is_empty(), "{name} imported: {:#?}", imp.notes);
                assert!(imp.blocking().is_empty());
                ExperimentConfig::from_toml_str(&imp.toml)
                    .unwrap_or_else(|e| panic!("{name}: {e}\n{}", imp.toml));
            }
            Err(PymicError::Unmapped(notes)) => {
                assert!(!expected.is_empty(), "{name} blocked: {notes:#?}");
                let blocking: Vec<&str> = notes
                    .iter()
                    .filter(|n| n.effect == Effect::ChangesResults)
                    .map(|n| n.key.as_str())
                    .collect();
                for k in expected {
                    assert!(blocking.contains(k), "{name}: {k} not in {blocking:?}");
                }
                // with unmapped keys allowed the result is still a valid
                // config, except for reconstruction (self-supervised)
                // configs, whose one output channel medseg cannot segment
                let imp = import_pymic(text, &opts(true)).unwrap();
                assert_eq!(imp.blocking().len(), blocking.len());
                let parsed = ExperimentConfig::from_toml_str(&imp.toml);
                if name.starts_with("unmapped_selfsup") {
                    assert!(blocking.contains(&"network.class_num"));
                    let e = parsed.unwrap_err().to_string();
                    assert!(e.contains("dataset.class_num"), "{e}");
                } else {
                    parsed.unwrap_or_else(|e| panic!("{name}: {e}\n{}", imp.toml));
                }
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
}

/// `section.key` of every line of `text`, and `section.key=name` for the
/// keys that name things (as tools/list_pymic_example_keys.py lists them).
fn keys_of(text: &str, out: &mut BTreeSet<String>) {
    const NAMED: [&str; 11] = [
        "net_type",
        "loss_type",
        "lr_scheduler",
        "optimizer",
        "method_name",
        "post_process",
        "train_transform",
        "train_transform_unlab",
        "valid_transform",
        "test_transform",
        "transform",
    ];
    let mut section = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.starts_with('[') && !line.starts_with(' ') && t.ends_with(']') && !t.contains('=') {
            section = t[1..t.len() - 1].to_lowercase();
            continue;
        }
        let (k, v) = t.split_once('=').unwrap();
        let k = k.trim().to_lowercase();
        out.insert(format!("{section}.{k}"));
        if NAMED.contains(&k.as_str()) {
            for n in v.trim().trim_matches(['[', ']']).split(',') {
                let n = n.trim();
                if !n.is_empty() && !n.eq_ignore_ascii_case("none") {
                    out.insert(format!("{section}.{k}={n}"));
                }
            }
        }
    }
}

#[test]
fn fixtures_cover_everything_pymic_examples_uses() {
    let published: BTreeSet<String> =
        std::fs::read_to_string(fixture_dir().join("published_keys.txt"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
    assert!(published.len() > 200);
    let mut ours = BTreeSet::new();
    for (_, text) in fixtures() {
        keys_of(&text, &mut ours);
    }
    let missing: Vec<&String> = published.difference(&ours).collect();
    assert!(missing.is_empty(), "not covered: {missing:?}");
}

#[test]
fn full_2d_config_maps_with_pymic_semantics() {
    let (imp, c) = import("full_jsrt_unet2d.cfg");
    let d = &c.dataset;
    assert_eq!(d.root, Path::new("../data/JSRT"));
    // PyMIC reads manifests from its working folder, medseg from the root
    assert_eq!(d.train_csv, Path::new("../../seg/config/jsrt_train.csv"));
    assert_eq!(d.class_num, 2);
    assert_eq!(d.num_workers, 2);
    let t = &d.train_transforms;
    assert_eq!(t[1]["name"], "RandomForegroundCrop");
    assert_eq!(t[1]["size"], json!([224, 224]));
    assert_eq!(t[1]["foreground_prob"], 0.7);
    assert_eq!(t[1]["classes"], json!([1]));
    assert_eq!(t[2]["axes"], json!([-1, -2]));
    assert_eq!(t[4], json!({"name": "LabelToProbability", "class_num": 2}));
    // the validation list's LabelConvert joins the test list
    let names: Vec<&str> = d
        .test_transforms
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["NormalizeWithMeanStd", "LabelConvert"]);
    assert_eq!(c.network["name"], "UNet2D");
    assert_eq!(c.network["up_mode"], 2);
    let tr = &c.training;
    assert_eq!(tr.output_dir, Path::new("model/unet"));
    assert_eq!(tr.optimizer, OptimizerKind::Adam);
    assert_eq!(tr.lr_scheduler, ScheduleKind::Plateau);
    // patience in validations: 2000 iterations / iter_valid 100
    assert_eq!(tr.plateau_patience, 20);
    assert_eq!(tr.early_stop_patience, Some(5000));
    assert_eq!(tr.checkpoint_every, 500);
    assert!(!tr.resume);
    assert_eq!(tr.loss["name"], "CombinedLoss");
    assert_eq!(
        tr.loss["terms"][0],
        json!({"loss": "DiceLoss", "weight": 0.5})
    );
    let i = &c.inference;
    assert_eq!(i.patch_size, Some(vec![224, 224]));
    assert!((i.overlap - 0.5).abs() < 1e-12);
    assert!(!i.gaussian, "PyMIC averages windows uniformly");
    // KeepLargestComponent's default mode 1: the union of the foreground
    assert_eq!(i.largest_component, LargestComponent::Union);
    assert_eq!(i.checkpoints, vec!["best".to_string()]);
    assert_eq!(
        note(&imp, "training.iter_save").effect,
        Effect::Approximated
    );
    assert_eq!(note(&imp, "training.gpus").effect, Effect::NoEffect);
    assert_eq!(note(&imp, "network.bilinear").effect, Effect::NoEffect);
}

#[test]
fn patch_size_is_pymics_default_crop_pad_and_window() {
    let (imp, c) = import("full_prostate_unet3d.cfg");
    let t = &c.dataset.train_transforms;
    assert_eq!(t[0], json!({"name": "Pad", "size": [64, 96, 96]}));
    assert_eq!(t[1], json!({"name": "RandomCrop", "size": [64, 96, 96]}));
    // PyMIC never flips the depth of a volume [C, D, H, W]
    assert_eq!(t[2]["axes"], json!([-1, -2]));
    assert_eq!(
        note(&imp, "dataset.randomflip_flip_depth").effect,
        Effect::NoEffect
    );
    assert_eq!(t[3]["output_range"], json!([-1.0, 1.0]));
    assert_eq!(t[3]["threshold_lower"], json!([-1000]));
    // probability x probability_per_channel (PyMIC's default 0.5 each)
    assert_eq!(t[4]["p"], 0.25);
    assert_eq!(t[4]["gamma_range"], json!([0.7, 1.5]));
    // GaussianNoise_std and _mean are not read by PyMIC: its defaults hold
    assert_eq!(t[5]["std_range"], json!([0.02, 0.1]));
    assert_eq!(
        note(&imp, "dataset.gaussiannoise_std").effect,
        Effect::NoEffect
    );
    let tr = &c.training;
    assert_eq!(tr.lr_scheduler, ScheduleKind::Multistep);
    assert_eq!(tr.lr_milestones, vec![1500, 3000, 4500]);
    assert_eq!(tr.loss["name"], "DeepSuperviseLoss");
    assert_eq!(tr.loss["base"]["loss"], "CombinedLoss");
    assert_eq!(
        tr.loss["base"]["params"]["terms"][1]["loss"],
        "CrossEntropyLoss"
    );
    assert_eq!(
        note(&imp, "training.deep_supervise_mode").effect,
        Effect::Approximated
    );
    assert_eq!(c.network["multiscale_pred"], true);
    let i = &c.inference;
    // no window size given: patch_size, stride half of it
    assert_eq!(i.patch_size, Some(vec![64, 96, 96]));
    assert!((i.overlap - 0.5).abs() < 1e-12);
    assert_eq!(i.sw_batch_size, 2);
    assert_eq!(i.checkpoints, vec!["latest".to_string()]);
    assert_eq!(i.largest_component, LargestComponent::None);
}

#[test]
fn schedulers_and_intervals() {
    let (imp, c) = import("full_unet2d5.cfg");
    assert_eq!(c.training.lr_scheduler, ScheduleKind::Step);
    assert_eq!(c.training.lr_step, 4000);
    assert_eq!(c.training.output_dir, Path::new("model/unet2d5"));
    assert_eq!(c.network["conv_dims"], json!([2, 2, 3, 3, 3]));
    // strides [8, 32, 32] of [8, 64, 64]: one overlap, the largest
    assert!((c.inference.overlap - 0.5).abs() < 1e-12);
    assert_eq!(
        note(&imp, "testing.sliding_window_stride").effect,
        Effect::Approximated
    );
    // validation crops centrally, testing does not
    assert_eq!(
        note(&imp, "dataset.valid_transform").effect,
        Effect::Approximated
    );
    let (imp, c) = import("full_acdc_unet2d_scse.cfg");
    assert_eq!(c.training.lr_scheduler, ScheduleKind::Poly);
    assert_eq!(c.training.poly_power, 0.8);
    assert_eq!(
        note(&imp, "training.lr_scheduler").effect,
        Effect::Approximated
    );
    assert_eq!(c.network["name"], "UNet_ScSE");
    assert_eq!(c.network["dimension"], 2);
    let (_, c) = import("full_unet3d_scse.cfg");
    assert_eq!(
        (c.network["name"].as_str(), c.network["dimension"].as_u64()),
        (Some("UNet_ScSE"), Some(3))
    );
    let (_, c) = import("full_unet2dpp.cfg");
    assert_eq!(c.network["name"], "UNetpp");
}

#[test]
fn semi_supervised_sections() {
    let (imp, c) = import("semi_cct.cfg");
    let s = c.semi.as_ref().unwrap();
    assert_eq!(s.method, "CCT");
    // ramp-up in iterations -> fractions of iter_max (20000)
    assert!((s.rampup_start - 0.05).abs() < 1e-12);
    assert!((s.rampup_end - 0.75).abs() < 1e-12);
    assert_eq!(s.regularize_w, 0.1);
    assert_eq!(s.params["unsupervised_loss"], "MSE");
    assert_eq!(c.network["name"], "CCTNet");
    assert_eq!(c.network["vat_it"], 2);
    assert_eq!(c.network["uniform_range"], 0.3);
    assert_eq!(
        c.dataset.train_unlabelled_csv.as_deref(),
        Some(Path::new("../../seg/config/unlab.csv"))
    );
    assert_eq!(
        note(&imp, "dataset.train_transform_unlab").effect,
        Effect::NoEffect
    );
    let (_, c) = import("semi_mcnet.cfg");
    assert_eq!(c.network["name"], "MCNet");
    assert_eq!(c.semi.as_ref().unwrap().params["temperature"], 0.1);
    let (_, c) = import("semi_urpc.cfg");
    assert_eq!(c.network["name"], "URPC");
    assert!(c.network.get("multiscale_pred").is_none());
    let (_, c) = import("semi_cps.cfg");
    assert_eq!(c.network["name"], "UNet2D");
    let (_, c) = import("semi_mt.cfg");
    let s = c.semi.unwrap();
    assert_eq!((s.method.as_str(), s.ema_decay), ("MeanTeacher", 0.99));
    let (_, c) = import("semi_em.cfg");
    // PyMIC's default rampup_end is iter_max
    assert_eq!(c.semi.unwrap().method, "EntropyMinimization");
}

#[test]
fn weak_and_noisy_sections() {
    let (_, c) = import("weak_gatedcrf.cfg");
    let w = c.weak.as_ref().unwrap();
    assert_eq!(w.method, "GatedCRF");
    assert_eq!(w.params["radius"], 5);
    assert_eq!(
        w.params["kernels"],
        json!([{"weight": 1.0, "xy": 5.0, "rgb": 0.1}, {"weight": 1.0, "xy": 3.0}])
    );
    // PyMIC's partial labels mark unannotated pixels with class_num
    assert_eq!(c.dataset.ignore_label, 4);
    let p = &c.dataset.train_transforms[3];
    assert_eq!(p["name"], "PartialLabelToProbability");
    assert_eq!(p["ignore_label"], 4);
    let (_, c) = import("weak_mumford.cfg");
    assert_eq!(
        c.weak.unwrap().params,
        json!({"penalty": "l1", "lambda": 1.0})
            .as_object()
            .unwrap()
            .clone()
    );
    let (_, c) = import("weak_dmpls.cfg");
    assert_eq!(c.network["name"], "DualDecoderUNet");

    let (_, c) = import("noisy_dast.cfg");
    let n = c.noisy.as_ref().unwrap();
    assert_eq!(n.method, "DAST");
    assert_eq!(n.params["rank_length"], 20);
    assert_eq!(n.params["select_ratio"], 0.2);
    assert_eq!(
        c.dataset.train_noisy_csv.as_deref(),
        Some(Path::new("../../seg/config/noise.csv"))
    );
    assert_eq!(c.dataset.train_batch_size_noisy, 4);
    let (imp, c) = import("noisy_coteaching.cfg");
    let n = c.noisy.as_ref().unwrap();
    assert!((n.params["forget_rate"].as_f64().unwrap() - 0.2).abs() < 1e-12);
    assert!((n.params["gradual"].as_f64().unwrap() - 0.4).abs() < 1e-12);
    assert_eq!(
        note(&imp, "noisy_label_learning.rampup_start/rampup_end").effect,
        Effect::Approximated
    );
    let terms = &c.training.loss["terms"];
    assert_eq!(
        terms[0],
        json!({"loss": "GeneralizedCELoss", "weight": 1.0, "params": {"q": 0.5}})
    );
    assert_eq!(terms[1]["params"], json!({"gamma": 1.5}));
    assert_eq!(terms[2]["params"], json!({"epsilon": 0.25}));
    assert_eq!(terms[3], json!({"loss": "MAELoss", "weight": 0.5}));
}

#[test]
fn predicted_labels_are_converted_as_pymic_saves_them() {
    let text = std::fs::read_to_string(fixture_dir().join("unmapped_fetal_rescale.cfg")).unwrap();
    let imp = import_pymic(&text, &opts(true)).unwrap();
    let c = ExperimentConfig::from_toml_str(&imp.toml).unwrap();
    assert_eq!(c.inference.output_label_source, vec![0, 1]);
    assert_eq!(c.inference.output_label_target, vec![0, 255]);
    assert!(imp
        .notes
        .iter()
        .all(|n| !n.key.starts_with("testing.label_")));
    // Rescale is left out of every list
    assert!(c
        .dataset
        .test_transforms
        .iter()
        .all(|t| t["name"] != "Rescale"));
    let uneven = text.replace("label_target = [0, 255]", "label_target = [0]");
    let e = import_pymic(&uneven, &opts(true)).unwrap_err();
    assert!(e.to_string().contains("testing.label_target"), "{e}");
}

#[test]
fn unknown_keys_block_and_errors_name_the_key() {
    let base = std::fs::read_to_string(fixture_dir().join("full_jsrt_unet2d.cfg")).unwrap();
    let typo = base.replace(
        "learning_rate = 1e-3",
        "learning_rate = 1e-3\nlearnig_rate = 1",
    );
    match import_pymic(&typo, &opts(false)) {
        Err(PymicError::Unmapped(n)) => assert!(n
            .iter()
            .any(|n| n.key == "training.learnig_rate" && n.effect == Effect::ChangesResults)),
        other => panic!("{other:?}"),
    }
    let no_net = base.replace("net_type = UNet2D", "");
    let e = import_pymic(&no_net, &opts(false)).unwrap_err();
    assert!(e.to_string().contains("network.net_type"), "{e}");
    let sgd = base.replace("optimizer = Adam", "optimizer = SGD");
    let c =
        ExperimentConfig::from_toml_str(&import_pymic(&sgd, &opts(false)).unwrap().toml).unwrap();
    // PyMIC's SGD is Nesterov's unless told otherwise
    assert_eq!(
        (c.training.optimizer, c.training.nesterov),
        (OptimizerKind::Sgd, true)
    );
    let rms = base.replace("optimizer = Adam", "optimizer = RMSprop");
    assert!(matches!(
        import_pymic(&rms, &opts(false)),
        Err(PymicError::Unmapped(_))
    ));
    assert!(matches!(
        import_pymic("not an ini line", &opts(false)),
        Err(PymicError::Syntax(_))
    ));
    assert!(matches!(
        import_pymic("k = 1", &opts(false)),
        Err(PymicError::Syntax(_))
    ));
}
