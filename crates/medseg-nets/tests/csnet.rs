//! CS-Net: parity with a PyTorch transcription of JMedSeg's `model/CSNet.py`
//! (the authors' `model/csnet.py`; fixtures by
//! tools/make_u2net_csnet_fixtures.py), BatchNorm running statistics, the
//! default parameter count, input sizes and configuration errors.

mod common;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use common::{
    build, build_with, check_running_stats, config_error, import_weights, load_io, max_abs,
    max_abs_diff, pattern, read_json, shape_of,
};
use medseg_nets::{build_network, CSNet, CSNetConfig};
use serde_json::{json, Value};

fn reference() -> Value {
    read_json("u2net_csnet_reference.json")["csnet"].clone()
}

fn tiny_config() -> Value {
    let mut c = reference()["tiny"]["config"].clone();
    c["name"] = json!("CSNet");
    c
}

fn check(dtype: DType) -> (f32, f32) {
    let r = reference();
    let (varmap, net) = build_with(&tiny_config(), dtype);
    assert_eq!(
        net.num_parameters() as u64,
        r["tiny"]["num_parameters"].as_u64().unwrap()
    );
    // the state dict also holds one num_batches_tracked per BatchNorm
    let bns = net
        .parameters()
        .iter()
        .filter(|p| p.name.ends_with("running_mean"))
        .count() as u64;
    assert_eq!(bns, 2 * 5 + 2 + 2 * 4);
    assert_eq!(
        varmap.all_vars().len() as u64 + bns,
        r["tiny"]["num_tensors"].as_u64().unwrap()
    );
    import_weights(&varmap, "csnet_tiny");
    let io = load_io("csnet_tiny");
    let x = pattern(&shape_of(&r["tiny"]["input_shape"]))
        .to_dtype(dtype)
        .unwrap();
    let scale = max_abs(&io["eval"]);
    assert!(scale > 0.1, "degenerate reference output");
    let y = net.forward_t(&x, false).unwrap();
    assert!(y.deep.is_empty() && y.aux.is_empty());
    let de = max_abs_diff(&y.logits, &io["eval"]) / scale;
    assert!(de < 1e-4, "{dtype:?} eval logits differ by {de} (relative)");
    let other = pattern(&shape_of(&r["tiny"]["odd_input_shape"]))
        .to_dtype(dtype)
        .unwrap();
    let yo = net.forward(&other).unwrap();
    let dother = max_abs_diff(&yo, &io["eval_odd"]) / max_abs(&io["eval_odd"]);
    assert!(dother < 1e-4, "{dtype:?} 16x80 logits differ by {dother}");
    let yt = net.forward_t(&x, true).unwrap().logits;
    let dt = max_abs_diff(&yt, &io["train"]) / max_abs(&io["train"]);
    assert!(
        dt < 1e-4,
        "{dtype:?} train logits differ by {dt} (relative)"
    );
    assert!(max_abs_diff(&y.logits, &io["train"]) > 1e-2);
    let checked = check_running_stats(&varmap, &io, "csnet_tiny", 1e-4);
    assert_eq!(checked as u64, 2 * bns);
    println!("{dtype:?}: relative max differences eval {de:e}, 16x80 {dother:e}, train {dt:e}");
    (de, dt)
}

#[test]
fn matches_pytorch_in_eval_and_train_mode_with_running_stats() {
    check(DType::F32);
}

/// In f64 the network runs on candle's own ops instead of the `medseg-ops`
/// kernels; both give PyTorch's outputs.
#[test]
fn candle_fallback_path_matches_pytorch() {
    check(DType::F64);
}

#[test]
fn default_parameter_count_equals_the_references() {
    let r = reference();
    let want = r["default"]["num_parameters"].as_u64().unwrap();
    assert_eq!(want, 8_925_636);
    let count = |i: usize, c: usize| {
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        build_network(&json!({"name": "CSNet", "in_chns": i, "class_num": c}), vb)
            .unwrap()
            .num_parameters()
    };
    assert_eq!(count(3, 2) as u64, want);
    // the documented formula (the zoo's 1 input channel, 4 classes)
    assert_eq!(count(1, 4), 8_925_636 - 640 + 66);
    let (varmap, net) = build(&tiny_config());
    assert_eq!(net.parameters().len(), varmap.all_vars().len());
    let names: Vec<&str> = net.parameters().iter().map(|p| p.name.as_str()).collect();
    for n in [
        "enc_input.conv1x1.weight",
        "encoder4.bn2.running_var",
        "affinity_attention.sab.query.0.weight",
        "affinity_attention.sab.key.1.running_mean",
        "affinity_attention.sab.value.bias",
        "affinity_attention.sab.gamma",
        "affinity_attention.cab.gamma",
        "attention_fuse.weight",
        "decoder4.conv.3.weight",
        "deconv1.bias",
        "final.weight",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    assert_eq!(
        net.encoder_prefixes(),
        vec![
            "enc_input.",
            "encoder1.",
            "encoder2.",
            "encoder3.",
            "encoder4."
        ]
    );
    let feats = net
        .encode(&pattern(&[1, 2, 32, 48]), false)
        .unwrap()
        .unwrap();
    let dims: Vec<Vec<usize>> = feats.iter().map(|f| f.dims().to_vec()).collect();
    assert_eq!(
        dims,
        vec![
            vec![1, 4, 32, 48],
            vec![1, 8, 16, 24],
            vec![1, 8, 8, 12],
            vec![1, 16, 4, 6],
            vec![1, 16, 2, 3]
        ]
    );
}

#[test]
fn input_sizes_and_config_errors() {
    let (_vm, net) = build(&tiny_config());
    assert_eq!(net.input_size().multiple, vec![16, 16]);
    let y5 = net.forward(&pattern(&[1, 2, 3, 16, 32])).unwrap();
    assert_eq!(y5.dims(), &[1, 3, 3, 16, 32]);
    let err = net
        .forward(&pattern(&[1, 2, 24, 16]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiples of 16"), "{err}");
    let err = net
        .forward(&pattern(&[1, 3, 16, 16]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("input channels"), "{err}");

    let mut c = tiny_config();
    c["feature_chnz"] = json!([4, 8, 8, 16, 16]);
    assert!(config_error(&c).contains("feature_chnz"));
    for (key, val) in [
        ("feature_chns", json!([4, 8, 8, 16])),
        ("feature_chns", json!([4, 8, 0, 16, 16])),
        ("feature_chns", json!([4, 8, 8, 16, 4])),
        ("dimension", json!(3)),
        ("in_chns", json!(0)),
        ("class_num", json!(0)),
    ] {
        let mut c = tiny_config();
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(key), "{key} = {val}: {e}");
    }
    for (key, val) in [("class_num", json!(-1)), ("feature_chns", json!("wide"))] {
        let mut c = tiny_config();
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(&format!("`{key}`")), "{key} = {val}: {e}");
    }
    // defaults filled in, round trip, the alias
    let (_vm, net) = build(&json!({"name": "CS-Net", "in_chns": 1, "class_num": 2}));
    let mut want = serde_json::to_value(CSNetConfig::new(1, 2)).unwrap();
    want["name"] = json!("CS-Net");
    assert_eq!(net.config(), want);
    let (_vm2, again) = build(&net.config());
    assert_eq!(again.config(), net.config());
    let mut cfg = CSNetConfig::new(1, 2);
    cfg.feature_chns = vec![8; 4];
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let err = CSNet::new(cfg, vb).err().unwrap().to_string();
    assert!(err.contains("feature_chns"), "{err}");
}
