//! HarDNet-MSEG: parity with a PyTorch transcription of JMedSeg's
//! `HarDMSEG` (fixtures by tools/make_hardnet_setr_fixtures.py), the default
//! parameter count, input sizes, the encoder and configuration errors.

mod common;

use candle_core::{DType, Device};
use common::{
    build, build_with, check_running_stats, config_error, import_weights, load_io, max_abs,
    max_abs_diff, pattern, read_json, shape_of,
};
use medseg_nets::{summarize, HarDNetMSEGConfig};
use serde_json::{json, Value};

fn reference() -> Value {
    read_json("hardnet_setr_reference.json")["hardnet_mseg"].clone()
}

fn tiny_config() -> Value {
    let mut c = reference()["tiny"]["config"].clone();
    c["name"] = json!("HarDNetMSEG");
    c
}

fn check(dtype: DType) {
    let r = reference();
    let (varmap, net) = build_with(&tiny_config(), dtype);
    assert_eq!(
        net.num_parameters() as u64,
        r["tiny"]["num_parameters"].as_u64().unwrap()
    );
    // the fixture also holds num_batches_tracked, one per BatchNorm
    let n_bn = varmap
        .data()
        .lock()
        .unwrap()
        .keys()
        .filter(|k| k.ends_with("running_mean"))
        .count();
    assert_eq!(
        (varmap.all_vars().len() + n_bn) as u64,
        r["tiny"]["num_tensors"].as_u64().unwrap()
    );
    import_weights(&varmap, "hardnet_mseg_tiny");
    let io = load_io("hardnet_mseg_tiny");
    let x = pattern(&shape_of(&r["tiny"]["input_shape"]))
        .to_dtype(dtype)
        .unwrap();
    let scale = max_abs(&io["eval"]);
    assert!(scale > 0.1, "degenerate reference output");
    let y = net.forward_t(&x, false).unwrap();
    assert!(y.deep.is_empty() && y.aux.is_empty());
    let de = max_abs_diff(&y.logits, &io["eval"]) / scale;
    assert!(de < 1e-4, "{dtype:?} eval logits differ by {de} (relative)");
    let yt = net.forward_t(&x, true).unwrap().logits;
    let dt = max_abs_diff(&yt, &io["train"]) / max_abs(&io["train"]);
    assert!(
        dt < 1e-4,
        "{dtype:?} train logits differ by {dt} (relative)"
    );
    assert!(max_abs_diff(&y.logits, &io["train"]) > 1e-2);
    let checked = check_running_stats(&varmap, &io, "hardnet_mseg_tiny", 1e-4);
    assert_eq!(checked, 2 * n_bn);
    println!("{dtype:?}: relative max differences eval {de:e}, train {dt:e}");
}

#[test]
fn matches_reference_in_eval_and_train_mode_with_running_stats() {
    check(DType::F32);
}

/// In f64 the network runs on candle's own ops instead of the `medseg-ops`
/// kernels.
#[test]
fn candle_fallback_path_matches_reference() {
    check(DType::F64);
}

#[test]
fn default_parameter_count_equals_reference() {
    let r = reference();
    let mut config = r["default"]["config"].clone();
    config["name"] = json!("HarDNet-MSEG");
    let (varmap, net) = build(&config);
    let want = r["default"]["num_parameters"].as_u64().unwrap();
    assert_eq!(want, 17_423_934);
    assert_eq!(net.num_parameters() as u64, want);
    assert_eq!(net.parameters().len(), varmap.all_vars().len());
    let backbone: usize = net
        .parameters()
        .iter()
        .filter(|p| p.trainable && p.name.starts_with("hardnet."))
        .map(|p| p.shape.iter().product::<usize>())
        .sum();
    assert_eq!(
        backbone as u64,
        r["default"]["num_parameters_hardnet68"].as_u64().unwrap()
    );
    assert_eq!(backbone, 16_540_348);
    let names: Vec<&str> = net.parameters().iter().map(|p| p.name.as_str()).collect();
    for n in [
        "hardnet.base.0.conv.weight",
        "hardnet.base.3.layers.7.norm.running_var",
        "hardnet.base.15.conv.weight",
        "rfb2_1.branch3.2.conv.weight",
        "rfb4_1.conv_res.bn.bias",
        "agg1.conv5.weight",
        "agg1.conv5.bias",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    assert_eq!(net.encoder_prefixes(), vec!["hardnet.".to_string()]);
    let typed = HarDNetMSEGConfig::new(3, 2);
    assert_eq!(
        serde_json::to_value(&typed).unwrap()["block_layers"],
        json!([8, 16, 16, 16, 4])
    );
}

#[test]
fn encoder_features_and_summary() {
    let r = reference();
    let (_vm, net) = build(&tiny_config());
    let x = pattern(&shape_of(&r["tiny"]["input_shape"]));
    let feats = net.encode(&x, false).unwrap().unwrap();
    assert_eq!(feats.len(), 5);
    // the reference returns transitions 0, 2, 3 and 4 (`base.4, 9, 12, 15`)
    let dims: Vec<Vec<usize>> = [0, 2, 3, 4]
        .iter()
        .map(|&i| feats[i].dims().to_vec())
        .collect();
    assert_eq!(feats[1].dims(), &[1, 16, 8, 12]);
    let want: Vec<Vec<usize>> = r["tiny"]["feature_shapes"]
        .as_array()
        .unwrap()
        .iter()
        .map(shape_of)
        .collect();
    assert_eq!(dims, want);
    let s = summarize(net.as_ref(), &[1, 2, 64, 64], &Device::Cpu).unwrap();
    assert!(s.total_macs > 0);
    assert!(s.layers.iter().any(|l| l.name == "rfb2_1.branch1.1.conv"));
}

#[test]
fn input_sizes_and_config_errors() {
    let (_vm, net) = build(&tiny_config());
    assert_eq!(net.input_size().multiple, vec![32, 32]);
    let y = net.forward(&pattern(&[1, 2, 32, 64])).unwrap();
    assert_eq!(y.dims(), &[1, 3, 32, 64]);
    let y5 = net.forward(&pattern(&[1, 2, 2, 32, 32])).unwrap();
    assert_eq!(y5.dims(), &[1, 3, 2, 32, 32]);
    let err = net
        .forward(&pattern(&[1, 2, 48, 64]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiples of 32"), "{err}");
    let err = net
        .forward(&pattern(&[1, 3, 32, 32]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("input channels"), "{err}");

    let mut c = tiny_config();
    c["channels"] = json!(8);
    assert!(config_error(&c).contains("channels"));
    for (key, val) in [
        ("channel", json!(0)),
        ("first_chns", json!([8])),
        ("block_chns", json!([8, 8, 8, 8])),
        ("growth_rates", json!([4, 4, 0, 4, 4])),
        ("block_layers", json!([1, 1, 1, 1, 1, 1])),
        ("grmul", json!(-1.0)),
        ("dimension", json!(3)),
        ("in_chns", json!(0)),
        ("class_num", json!(0)),
    ] {
        let mut c = tiny_config();
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(key), "{key} = {val}: {e}");
    }
    for (key, val) in [("in_chns", json!("two")), ("grmul", json!("x"))] {
        let mut c = tiny_config();
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(key), "{key} = {val}: {e}");
    }
}
