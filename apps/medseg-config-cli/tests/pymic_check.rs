//! The two commands a PyMIC user runs, on every PyMIC fixture of
//! medseg-config: `medseg-config import-pymic` (from the folder PyMIC ran
//! in), then `medseg-config check` on the result, which fails while the
//! data is missing and passes once the manifests PyMIC's config names (at
//! PyMIC's paths) and the tiny images they list exist. The translated
//! network, loss and regulariser also build in medseg's registries.

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use medseg_config::ExperimentConfig;
use medseg_core::{Geometry, Image, LabelMap};
use ndarray::{ArrayD, IxDyn};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/medseg-config/tests/fixtures/pymic")
}

fn cli(cwd: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medseg-config"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes the manifests of `cfg` (relative to the root, as medseg reads
/// them) with one tiny case each, and the images they name.
fn make_data(cwd: &Path, cfg: &ExperimentConfig) {
    let root = cwd.join(&cfg.dataset.root);
    std::fs::create_dir_all(&root).unwrap();
    let g = Geometry::identity();
    let image = Image::new(ArrayD::from_elem(IxDyn(&[1, 4, 16, 16]), 1.0), g).unwrap();
    let label = LabelMap::new(ArrayD::zeros(IxDyn(&[1, 4, 16, 16])), g).unwrap();
    medseg_io::write_image(&root.join("img.nii.gz"), &image, medseg_io::DataType::F32).unwrap();
    medseg_io::write_label(&root.join("lab.nii.gz"), &label).unwrap();
    let d = &cfg.dataset;
    for m in [
        Some(&d.train_csv),
        d.valid_csv.as_ref(),
        d.test_csv.as_ref(),
        d.train_unlabelled_csv.as_ref(),
        d.train_noisy_csv.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        let p = root.join(m);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "image,label\nimg.nii.gz,lab.nii.gz\n").unwrap();
    }
}

fn builds(cfg: &ExperimentConfig) -> Result<(), String> {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    medseg_nets::build_network(&cfg.network, vb).map_err(|e| format!("network: {e}"))?;
    let losses = medseg_losses::LossRegistry::with_builtins();
    let spec = |v: &Value| {
        let mut m = v.as_object().unwrap().clone();
        let name = m.remove("name").unwrap();
        (name.as_str().unwrap().to_string(), Value::Object(m))
    };
    let (name, params) = spec(&cfg.training.loss);
    losses
        .build(&name, &params)
        .map_err(|e| format!("loss: {e}"))?;
    // the weak regularisers are built from their loss's parameters
    if let Some(w) = &cfg.weak {
        let loss = match w.method.as_str() {
            "GatedCRF" => Some("GatedCRFLoss"),
            "MumfordShah" => Some("MumfordShahLoss"),
            _ => None,
        };
        if let Some(l) = loss {
            losses
                .build(l, &Value::Object(w.params.clone()))
                .map_err(|e| format!("weak.params: {e}"))?;
        }
    }
    Ok(())
}

#[test]
fn import_then_check_every_pymic_fixture() {
    let mut names: Vec<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cfg") && !n.starts_with("unmapped_selfsup"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 30);
    let mut built = 0;
    for name in &names {
        let tmp = tempfile::tempdir().unwrap();
        // PyMIC ran in <tmp>/seg, with its config in config/; data in <tmp>/data
        let cwd = tmp.path().join("seg");
        std::fs::create_dir_all(cwd.join("config")).unwrap();
        std::fs::copy(fixture_dir().join(name), cwd.join("config").join(name)).unwrap();
        let cfg_arg = format!("config/{name}");
        let unmapped = name.starts_with("unmapped_");
        let (ok, err) = cli(&cwd, &["import-pymic", &cfg_arg, "--out", "exp.toml"]);
        assert_eq!(ok, !unmapped, "{name}: {err}");
        if unmapped {
            assert!(err.contains("--allow-unmapped"), "{name}: {err}");
            let (ok, err) = cli(
                &cwd,
                &[
                    "import-pymic",
                    &cfg_arg,
                    "--out",
                    "exp.toml",
                    "--allow-unmapped",
                ],
            );
            assert!(ok, "{name}: {err}");
            assert!(err.contains("(changes results)"), "{name}: {err}");
        }
        let (ok, err) = cli(&cwd, &["check", "exp.toml"]);
        assert!(
            !ok && err.contains("dataset.root"),
            "{name} without data: {err}"
        );
        let cfg = ExperimentConfig::load(&cwd.join("exp.toml"), &[]).unwrap();
        make_data(&cwd, &cfg);
        let (ok, err) = cli(&cwd, &["check", "exp.toml"]);
        assert!(ok, "{name}: {err}");
        assert!(
            err.contains("manifest(s) and the files they name exist"),
            "{err}"
        );
        match builds(&cfg) {
            Ok(()) => built += 1,
            // the networks and loss medseg lacks (kept by name for users'
            // own registrations)
            Err(e) => assert!(
                [
                    "unmapped_canet.cfg",
                    "unmapped_lcovnet.cfg",
                    "unmapped_swinunet.cfg",
                    "unmapped_transunet.cfg",
                    "unmapped_custom.cfg"
                ]
                .contains(&name.as_str()),
                "{name}: {e}"
            ),
        }
    }
    assert_eq!(built, 25);
}

#[test]
fn check_names_a_missing_image() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path().join("seg");
    std::fs::create_dir_all(cwd.join("config")).unwrap();
    let name = "full_jsrt_unet2d.cfg";
    std::fs::copy(fixture_dir().join(name), cwd.join("config").join(name)).unwrap();
    let (ok, err) = cli(
        &cwd,
        &[
            "import-pymic",
            &format!("config/{name}"),
            "--out",
            "exp.toml",
        ],
    );
    assert!(ok, "{err}");
    let cfg = ExperimentConfig::load(&cwd.join("exp.toml"), &[]).unwrap();
    make_data(&cwd, &cfg);
    std::fs::remove_file(cwd.join(&cfg.dataset.root).join("lab.nii.gz")).unwrap();
    let (ok, err) = cli(&cwd, &["check", "exp.toml"]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("dataset.train_csv") && err.contains("lab.nii.gz"),
        "{err}"
    );
}
