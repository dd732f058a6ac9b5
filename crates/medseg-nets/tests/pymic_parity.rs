//! Parity with PyMIC 0.6.2 (and, for R2UNet, R2AttentionUNet and ResUNet,
//! PyTorch transcriptions of their reference implementations): weights
//! exported by tools/make_pymic_weights.py
//! load by name and give PyMIC's outputs to 1e-4, in eval and train mode,
//! with the same BatchNorm running-statistics update; parameter counts of
//! the default configurations equal PyMIC's.

mod common;

use candle_nn::VarMap;
use common::{
    build, check_running_stats, fixtures, import_weights, load_io, max_abs_diff, read_json,
};
use medseg_nets::{import_pytorch, SegNetwork};
use serde_json::{json, Value};

fn reference() -> Value {
    read_json("pymic_reference.json")
}

fn net_name(case: &str) -> &'static str {
    if case.starts_with("attention") {
        "AttentionUNet"
    } else if case.starts_with("unetpp") {
        "UNetpp"
    } else if case.starts_with("unet2d5") {
        "UNet2D5"
    } else if case.starts_with("unet_scse") {
        "UNet_ScSE"
    } else if case.starts_with("coplenet") {
        "COPLENet"
    } else if case.starts_with("r2unet") {
        "R2UNet"
    } else if case.starts_with("r2attunet") {
        "R2AttentionUNet"
    } else if case.starts_with("resunet") {
        "ResUNet"
    } else if case.starts_with("unet3plus") {
        "UNet3Plus"
    } else {
        "UNet"
    }
}

/// The reference architectures without PyMIC versions have no dropout.
fn no_dropout_if_absent(config: &mut Value) {
    if config.get("dropout").is_none() {
        if let Some(f) = config.get("feature_chns").and_then(|f| f.as_array()) {
            config["dropout"] = json!(vec![0.0; f.len()]);
        }
    }
}

fn build_case(case: &str, cfg: &Value) -> (VarMap, Box<dyn SegNetwork>) {
    let mut config = cfg.clone();
    config["name"] = json!(net_name(case));
    no_dropout_if_absent(&mut config);
    build(&config)
}

fn run_case(case: &str) {
    let r = reference();
    let info = &r["cases"][case];
    let (varmap, net) = build_case(case, &info["config"]);
    assert_eq!(
        net.num_parameters() as u64,
        info["num_parameters"].as_u64().unwrap(),
        "{case}: parameter count"
    );
    import_weights(&varmap, case);
    let io = load_io(case);
    let x = &io["input"];
    let out = net.forward_t(x, false).unwrap();
    let d = max_abs_diff(&out.logits, &io["eval"]);
    assert!(d < 1e-4, "{case}: eval logits differ by {d}");
    let n_deep = io.keys().filter(|k| k.starts_with("eval_deep")).count();
    assert_eq!(out.deep.len(), n_deep, "{case}: deep outputs");
    for (i, t) in out.deep.iter().enumerate() {
        let d = max_abs_diff(t, &io[&format!("eval_deep{i}")]);
        assert!(d < 1e-4, "{case}: deep output {i} differs by {d}");
    }
    if let Some(train_ref) = io.get("train") {
        let out = net.forward_t(x, true).unwrap();
        let d = max_abs_diff(&out.logits, train_ref);
        assert!(d < 1e-4, "{case}: train logits differ by {d}");
        assert!(check_running_stats(&varmap, &io, case, 1e-4) > 0);
    }
}

#[test]
fn unet2d_bilinear_matches_pymic() {
    run_case("unet2d_bilinear");
}

#[test]
fn unet2d_transconv_deep_supervision_matches_pymic() {
    run_case("unet2d_transconv_deep");
}

#[test]
fn attention_unet2d_matches_pymic() {
    run_case("attention_unet2d");
}

#[test]
fn unetpp2d_matches_pymic() {
    run_case("unetpp2d");
}

#[test]
fn unet3d_transconv_matches_pymic() {
    run_case("unet3d_transconv");
}

#[test]
fn attention_unet3d_trilinear_matches_pymic() {
    run_case("attention_unet3d");
}

#[test]
fn unet2d5_matches_pymic() {
    run_case("unet2d5");
}

#[test]
fn unet_scse2d_matches_pymic() {
    run_case("unet_scse2d");
}

#[test]
fn coplenet2d_matches_pymic() {
    run_case("coplenet2d");
}

#[test]
fn r2unet2d_matches_reference() {
    run_case("r2unet2d");
}

#[test]
fn r2attunet2d_matches_reference() {
    run_case("r2attunet2d");
}

#[test]
fn resunet2d_matches_reference() {
    run_case("resunet2d");
}

#[test]
fn unet3plus2d_matches_reference() {
    run_case("unet3plus2d");
}

#[test]
fn default_parameter_counts_equal_pymic() {
    let r = reference();
    for (name, info) in r["defaults"].as_object().unwrap() {
        let mut config = info["config"].clone();
        config["name"] = json!(if name.starts_with("AttentionUNet") {
            "AttentionUNet"
        } else if name.starts_with("UNetpp") {
            "UNetpp"
        } else if [
            "UNet2D5",
            "UNet_ScSE",
            "COPLENet",
            "R2UNet",
            "R2AttentionUNet",
            "ResUNet",
            "UNet3Plus",
        ]
        .contains(&name.as_str())
        {
            name.as_str()
        } else {
            "UNet"
        });
        no_dropout_if_absent(&mut config);
        let (varmap, net) = build(&config);
        assert_eq!(
            net.num_parameters() as u64,
            info["num_parameters"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(medseg_nets::count_parameters(&varmap), net.num_parameters());
    }
}

#[test]
fn import_names_missing_and_unexpected_tensors() {
    // A UNet with other feature sizes cannot take the fixture's weights.
    let r = reference();
    let mut cfg = r["cases"]["unet2d_bilinear"]["config"].clone();
    cfg["feature_chns"] = json!([2, 4, 4, 8, 16]);
    let (varmap, _net) = build_case("unet2d_bilinear", &cfg);
    let err = import_pytorch(
        &fixtures().join("unet2d_bilinear.weights.safetensors"),
        &varmap,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("mis-shaped"), "{err}");
    assert!(
        err.contains("encoder.down4.maxpool_conv.1.conv_conv.0.weight"),
        "{err}"
    );
    // An AttentionUNet has gates that a UNet checkpoint lacks.
    let cfg = r["cases"]["attention_unet2d"]["config"].clone();
    let (varmap, _net) = build_case("attention_unet2d", &cfg);
    let err = import_pytorch(
        &fixtures().join("unet2d_bilinear.weights.safetensors"),
        &varmap,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("missing tensors"), "{err}");
    assert!(err.contains("decoder.up1.ag.conv1_l.weight"), "{err}");
}
