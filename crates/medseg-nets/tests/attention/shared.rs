//! Checks shared by tests/danet.rs, tests/ocnet.rs and tests/ocrnet.rs
//! (fixtures by tools/make_attention_fixtures.py, a PyTorch transcription of
//! JMedSeg's models).

use candle_core::DType;
use serde_json::{json, Value};

use crate::common::{
    build, build_with, check_running_stats, config_error, import_weights, load_io, max_abs,
    max_abs_diff, pattern, read_json, shape_of,
};

/// The reference JSON of `key` (`danet`, `ocnet`, `ocrnet`).
pub fn reference(key: &str) -> Value {
    read_json("attention_reference.json")[key].clone()
}

/// The tiny fixture configuration under the registry name `name`.
pub fn tiny_config(key: &str, name: &str) -> Value {
    let mut c = reference(key)["tiny"]["config"].clone();
    c["name"] = json!(name);
    c
}

fn rel(got: &candle_core::Tensor, want: &candle_core::Tensor) -> f32 {
    max_abs_diff(got, want) / max_abs(want)
}

/// Eval, odd-size eval and train parity with the fixture of `key` and the
/// BatchNorm running statistics after the train pass; returns the relative
/// maximum differences (eval, odd, train).
pub fn parity(key: &str, name: &str, dtype: DType) -> (f32, f32, f32) {
    let r = reference(key);
    let (varmap, net) = build_with(&tiny_config(key, name), dtype);
    assert_eq!(
        net.num_parameters() as u64,
        r["tiny"]["num_parameters"].as_u64().unwrap()
    );
    assert_eq!(
        varmap.all_vars().len() as u64,
        r["tiny"]["num_tensors"].as_u64().unwrap()
    );
    let case = format!("{key}_tiny");
    import_weights(&varmap, &case);
    let io = load_io(&case);
    let x = pattern(&shape_of(&r["tiny"]["input_shape"]))
        .to_dtype(dtype)
        .unwrap();
    assert!(max_abs(&io["eval"]) > 0.1, "degenerate reference output");
    let y = net.forward_t(&x, false).unwrap();
    assert!(y.deep.is_empty() && y.aux.is_empty());
    let de = rel(&y.logits, &io["eval"]);
    assert!(
        de < 1e-4,
        "{name} {dtype:?} eval logits differ by {de} (relative)"
    );
    let xo = pattern(&shape_of(&r["tiny"]["odd_input_shape"]))
        .to_dtype(dtype)
        .unwrap();
    let yo = net.forward(&xo).unwrap();
    let dodd = rel(&yo, &io["eval_odd"]);
    assert!(
        dodd < 1e-4,
        "{name} {dtype:?} odd-size logits differ by {dodd}"
    );
    let yt = net.forward_t(&x, true).unwrap().logits;
    let dt = rel(&yt, &io["train"]);
    assert!(
        dt < 1e-4,
        "{name} {dtype:?} train logits differ by {dt} (relative)"
    );
    assert!(max_abs_diff(&y.logits, &io["train"]) > 1e-2);
    let checked = check_running_stats(&varmap, &io, &case, 1e-4);
    let stats = net.parameters().iter().filter(|p| !p.trainable).count();
    assert!(stats > 0);
    assert_eq!(checked, stats);
    println!("{name} {dtype:?}: relative max differences eval {de:e}, odd {dodd:e}, train {dt:e}");
    (de, dodd, dt)
}

/// The default configuration (JMedSeg's: ResNet-101, output stride 16, 3
/// inputs, 2 classes) has the reference's parameter count `want`; the
/// backbone is exposed as the encoder.
pub fn default_count(key: &str, name: &str, want: u64) {
    let r = reference(key);
    let mut config = r["default"]["config"].clone();
    config["name"] = json!(name);
    let (varmap, net) = build(&config);
    assert_eq!(r["default"]["num_parameters"].as_u64().unwrap(), want);
    assert_eq!(net.num_parameters() as u64, want);
    assert_eq!(net.parameters().len(), varmap.all_vars().len());
    let backbone: usize = net
        .parameters()
        .iter()
        .filter(|p| p.trainable && p.name.starts_with("backbone."))
        .map(|p| p.shape.iter().product::<usize>())
        .sum();
    assert_eq!(
        backbone as u64,
        r["default"]["num_parameters_backbone"].as_u64().unwrap()
    );
    assert_eq!(net.encoder_prefixes(), vec!["backbone.".to_string()]);
    // resnet50
    let mut c50 = config.clone();
    c50["backbone"] = json!("resnet50");
    let (_vm, n50) = build(&c50);
    assert_eq!(
        n50.num_parameters() as u64,
        r["default"]["num_parameters_resnet50"].as_u64().unwrap()
    );
}

/// Input sizes, 5D folding, encoder maps, configuration errors and the
/// defaults' round trip.
pub fn sizes_and_errors(key: &str, name: &str) {
    let cfg = tiny_config(key, name);
    let (_vm, net) = build(&cfg);
    assert_eq!(net.input_size().multiple, vec![1, 1]);
    for shape in [[1, 2, 1, 1], [1, 2, 9, 23], [2, 2, 16, 16]] {
        let y = net.forward(&pattern(&shape)).unwrap();
        assert_eq!(y.dims(), &[shape[0], 3, shape[2], shape[3]]);
    }
    let y5 = net.forward(&pattern(&[1, 2, 3, 16, 16])).unwrap();
    assert_eq!(y5.dims(), &[1, 3, 3, 16, 16]);
    let err = net
        .forward(&pattern(&[1, 3, 16, 16]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("input channels"), "{err}");
    let os = cfg["output_stride"].as_u64().unwrap() as usize;
    let w = cfg["backbone_width"].as_u64().unwrap() as usize;
    let feats = net
        .encode(&pattern(&[1, 2, 32, 32]), false)
        .unwrap()
        .unwrap();
    let dims: Vec<Vec<usize>> = feats.iter().map(|f| f.dims().to_vec()).collect();
    assert_eq!(
        dims,
        vec![
            vec![1, 4 * w, 8, 8],
            vec![1, 8 * w, 4, 4],
            vec![1, 16 * w, 32 / os, 32 / os],
            vec![1, 32 * w, 32 / os, 32 / os]
        ]
    );

    let mut c = cfg.clone();
    c["output_strid"] = json!(8);
    assert!(config_error(&c).contains("output_strid"));
    for (k, val) in [
        ("backbone", json!("resnet34")),
        ("output_stride", json!(32)),
        ("backbone_blocks", json!([1, 1])),
        ("backbone_blocks", json!([1, 0, 1])),
        ("backbone_width", json!(0)),
        ("dropout", json!(1.0)),
        ("dimension", json!(3)),
        ("in_chns", json!(0)),
        ("class_num", json!(0)),
    ] {
        let mut c = cfg.clone();
        c[k] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(k), "{k} = {val}: {e}");
    }
    for (k, val) in [("output_stride", json!("16")), ("dropout", json!("none"))] {
        let mut c = cfg.clone();
        c[k] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(&format!("`{k}`")), "{k} = {val}: {e}");
    }
    // defaults filled in, round trip (a small width keeps it quick)
    let (_vm, net) = build(&json!({"name": name, "in_chns": 1, "class_num": 2,
        "backbone_width": 2}));
    let cfg = net.config();
    assert_eq!(cfg["backbone"], json!("resnet101"));
    assert_eq!(cfg["output_stride"], json!(16));
    assert!(cfg.get("backbone_blocks").is_none());
    let (_vm2, again) = build(&cfg);
    assert_eq!(again.config(), cfg);
}
