//! SETR: parity with a PyTorch transcription of JMedSeg's `SETRModel`
//! (fixtures by tools/make_hardnet_setr_fixtures.py), the default parameter
//! count, input sizes, the encoder, the summary's multiply-adds and
//! configuration errors.

mod common;

use candle_core::{DType, Device};
use common::{
    build, build_with, check_running_stats, config_error, import_weights, load_io, max_abs,
    max_abs_diff, pattern, read_json, shape_of,
};
use medseg_nets::{summarize, SETRConfig};
use serde_json::{json, Value};

fn reference() -> Value {
    read_json("hardnet_setr_reference.json")["setr"].clone()
}

fn tiny_config() -> Value {
    let mut c = reference()["tiny"]["config"].clone();
    c["name"] = json!("SETR");
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
    assert_eq!(n_bn, 3);
    assert_eq!(
        (varmap.all_vars().len() + n_bn) as u64,
        r["tiny"]["num_tensors"].as_u64().unwrap()
    );
    import_weights(&varmap, "setr_tiny");
    let io = load_io("setr_tiny");
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
    let checked = check_running_stats(&varmap, &io, "setr_tiny", 1e-4);
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
    config["name"] = json!("SETR");
    let (varmap, net) = build(&config);
    let want = r["default"]["num_parameters"].as_u64().unwrap();
    assert_eq!(want, 64_557_441);
    assert_eq!(net.num_parameters() as u64, want);
    assert_eq!(net.parameters().len(), varmap.all_vars().len());
    let names: Vec<&str> = net.parameters().iter().map(|p| p.name.as_str()).collect();
    for n in [
        "encoder_2d.bert_model.dense.dense.weight",
        "encoder_2d.bert_model.dense.LayerNorm.gamma",
        "encoder_2d.bert_model.embeddings.position_embeddings.weight",
        "encoder_2d.bert_model.encoder.layer.7.attention.self.value.bias",
        "encoder_2d.bert_model.encoder.layer.0.attention.output.LayerNorm.beta",
        "encoder_2d.bert_model.encoder.layer.3.intermediate.dense.weight",
        "encoder_2d.bert_model.encoder.layer.3.output.dense.weight",
        "encoder_2d.final_dense.weight",
        "decoder_2d.decoder_4.1.running_var",
        "decoder_2d.final_out.weight",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    let pos = net
        .parameters()
        .iter()
        .find(|p| p.name.ends_with("position_embeddings.weight"))
        .unwrap();
    assert_eq!(
        pos.shape.iter().product::<usize>() as u64,
        r["default"]["num_parameters_position_embeddings"]
            .as_u64()
            .unwrap()
    );
    assert_eq!(
        net.encoder_prefixes(),
        vec!["encoder_2d.bert_model.".to_string()]
    );
    let typed = SETRConfig::new(3, 1);
    assert_eq!(
        serde_json::to_value(&typed).unwrap(),
        serde_json::to_value(
            serde_json::from_value::<SETRConfig>(json!({
                "name": "SETR", "in_chns": 3, "class_num": 1
            }))
            .unwrap()
        )
        .unwrap()
    );
}

#[test]
fn encoder_maps_and_summary_macs() {
    let (_vm, net) = build(&tiny_config());
    let x = pattern(&[1, 2, 32, 48]);
    let maps = net.encode(&x, false).unwrap().unwrap();
    let dims: Vec<Vec<usize>> = maps.iter().map(|f| f.dims().to_vec()).collect();
    assert_eq!(dims, vec![vec![1, 16, 2, 3]; 2]);
    let s = summarize(net.as_ref(), &[1, 2, 32, 48], &Device::Cpu).unwrap();
    // linear layers are counted: the patch embedding alone is 6 tokens x 512 x 16
    let emb = s
        .layers
        .iter()
        .find(|l| l.name == "encoder_2d.bert_model.dense.dense")
        .unwrap();
    assert_eq!(emb.kind, "Linear");
    assert_eq!(emb.macs, 6 * 512 * 16);
    assert!(s.layers.iter().any(|l| l.kind == "Attention"));
    let linear: u64 = s
        .layers
        .iter()
        .filter(|l| l.kind == "Linear")
        .map(|l| l.macs)
        .sum();
    // per layer: q, k, v, out 4 x 16 x 16, intermediate 2 x 16 x 24, per token
    let want = 6 * (512 * 16 + 2 * (4 * 16 * 16 + 2 * 16 * 24) + 16 * 64);
    assert_eq!(linear, want as u64);
}

#[test]
fn input_sizes_and_config_errors() {
    let (_vm, net) = build(&tiny_config());
    // 16 x 16 patches, at most 16 of them: 4 per axis
    let size = net.input_size();
    assert_eq!(size.multiple, vec![16, 16]);
    assert_eq!(size.maximum, Some(vec![64, 64]));
    let y = net.forward(&pattern(&[1, 2, 64, 16])).unwrap();
    assert_eq!(y.dims(), &[1, 3, 64, 16]);
    let y5 = net.forward(&pattern(&[1, 2, 2, 16, 32])).unwrap();
    assert_eq!(y5.dims(), &[1, 3, 2, 16, 32]);
    let err = net
        .forward(&pattern(&[1, 2, 24, 32]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiples of the patch size"), "{err}");
    let err = net
        .forward(&pattern(&[1, 2, 16, 16 * 17]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("position embeddings"), "{err}");
    let err = net
        .forward(&pattern(&[1, 3, 32, 32]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("input channels"), "{err}");
    let (_vm, def) = build(&json!({"name": "SETR", "in_chns": 1, "class_num": 4}));
    assert_eq!(def.input_size().maximum, Some(vec![704, 704]));

    let mut c = tiny_config();
    c["hidden"] = json!(8);
    assert!(config_error(&c).contains("hidden"));
    for (key, val) in [
        ("patch_size", json!([12, 16])),
        ("patch_size", json!([16])),
        ("sample_rate", json!(2)),
        ("decode_features", json!([])),
        ("num_attention_heads", json!(3)),
        ("hidden_size", json!(0)),
        ("num_hidden_layers", json!(0)),
        ("intermediate_size", json!(0)),
        ("max_position_embeddings", json!(0)),
        ("dropout", json!(1.0)),
        ("attention_dropout", json!(-0.1)),
        ("dimension", json!(3)),
        ("in_chns", json!(0)),
        ("class_num", json!(0)),
    ] {
        let mut c = tiny_config();
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(key), "{key} = {val}: {e}");
    }
    for (key, val) in [("hidden_size", json!("big")), ("dropout", json!("x"))] {
        let mut c = tiny_config();
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(key), "{key} = {val}: {e}");
    }
}
