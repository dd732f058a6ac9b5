//! D-LinkNet 34 (the authors' `DinkNet34`, as JMedSeg's
//! `model/dlink_jittor.py`): parity with a PyTorch transcription (fixtures
//! by tools/make_light_hrnet_dlink_fixtures.py), BatchNorm running
//! statistics, the default parameter count, accepted input sizes and
//! configuration errors.

mod common;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use common::{
    build, build_with, check_running_stats, config_error, import_weights, load_io, max_abs,
    max_abs_diff, pattern, read_json, shape_of,
};
use medseg_nets::{count_parameters, DLinkNet, DLinkNetConfig};
use serde_json::{json, Value};

fn reference() -> Value {
    read_json("dlinknet_reference.json")
}

fn tiny_config() -> Value {
    let mut c = reference()["tiny"]["config"].clone();
    c["name"] = json!("DLinkNet");
    c
}

#[test]
fn matches_reference_in_eval_and_train_mode_with_running_stats() {
    let r = reference();
    let shape = shape_of(&r["tiny"]["input_shape"]);
    for dtype in [DType::F32, DType::F64] {
        let (varmap, net) = build_with(&tiny_config(), dtype);
        assert_eq!(
            net.num_parameters() as u64,
            r["tiny"]["num_parameters"].as_u64().unwrap()
        );
        import_weights(&varmap, "dlinknet_tiny");
        let io = load_io("dlinknet_tiny");
        let x = pattern(&shape).to_dtype(dtype).unwrap();
        let y = net.forward_t(&x, false).unwrap();
        assert!(y.deep.is_empty() && y.aux.is_empty());
        let scale = max_abs(&io["eval"]);
        assert!(scale > 0.1, "degenerate reference output");
        let d = max_abs_diff(&y.logits, &io["eval"]) / scale;
        eprintln!("{dtype:?} eval: relative max difference {d:e}");
        assert!(d < 1e-4, "{dtype:?} eval logits differ by {d} (relative)");
        let yt = net.forward_t(&x, true).unwrap().logits;
        let d = max_abs_diff(&yt, &io["train"]) / max_abs(&io["train"]);
        eprintln!("{dtype:?} train: relative max difference {d:e}");
        assert!(d < 1e-4, "{dtype:?} train logits differ by {d} (relative)");
        assert!(max_abs_diff(&y.logits, &io["train"]) > 1e-2);
        let checked = check_running_stats(&varmap, &io, "dlinknet_tiny", 1e-4);
        // 2 per BatchNorm: stem, 6 blocks x 2, 3 downsamples, 4 decoders x 3
        assert_eq!(checked, 2 * (1 + 2 * 6 + 3 + 4 * 3));
    }
}

#[test]
fn default_parameter_count_equals_reference() {
    let r = reference();
    let mut config = r["default"]["config"].clone();
    config["name"] = json!("D-LinkNet");
    let (varmap, net) = build(&config);
    let want = r["default"]["num_parameters"].as_u64().unwrap();
    assert_eq!(want, 31_096_129);
    assert_eq!(net.num_parameters() as u64, want);
    assert_eq!(count_parameters(&varmap) as u64, want);
    let enc: usize = net
        .parameters()
        .iter()
        .filter(|p| {
            p.trainable
                && net
                    .encoder_prefixes()
                    .iter()
                    .any(|e| p.name.starts_with(e.as_str()))
        })
        .map(|p| p.shape.iter().product::<usize>())
        .sum();
    assert_eq!(
        enc as u64,
        r["default"]["num_parameters_resnet34_encoder"]
            .as_u64()
            .unwrap()
    );
    assert_eq!(enc, 21_284_672);
    let names: Vec<&str> = net.parameters().iter().map(|p| p.name.as_str()).collect();
    for n in [
        "firstconv.weight",
        "encoder3.5.bn2.running_var",
        "dblock.dilate4.bias",
        "decoder4.deconv2.weight",
        "finaldeconv1.weight",
        "finalconv3.bias",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    let data = varmap.data().lock().unwrap();
    for n in 1..=4 {
        assert_eq!(
            max_abs(data[&format!("dblock.dilate{n}.bias")].as_tensor()),
            0.0
        );
    }
}

#[test]
fn input_sizes_multiples_of_32_work_and_others_are_refused() {
    let (_vm, net) = build(&tiny_config());
    let y = net.forward(&pattern(&[1, 2, 32, 96])).unwrap();
    assert_eq!(y.dims(), &[1, 3, 32, 96]);
    let y5 = net.forward(&pattern(&[1, 2, 2, 32, 32])).unwrap();
    assert_eq!(y5.dims(), &[1, 3, 2, 32, 32]);
    assert_eq!(net.input_size().multiple, vec![32, 32]);
    let feats = net
        .encode(&pattern(&[1, 2, 64, 64]), false)
        .unwrap()
        .unwrap();
    assert_eq!(feats.len(), 5);
    assert_eq!(feats[4].dims(), &[1, 16, 2, 2]);
    for shape in [[1, 2, 48, 32], [1, 2, 32, 40]] {
        let err = net.forward(&pattern(&shape)).unwrap_err().to_string();
        assert!(err.contains("multiples of 32"), "{shape:?}: {err}");
    }
    let err = net
        .forward(&pattern(&[1, 3, 32, 32]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("input channels"), "{err}");
}

#[test]
fn config_errors_name_the_key_and_config_round_trips() {
    let mut c = tiny_config();
    c["feature_chn"] = json!([4, 8, 8, 16]);
    assert!(config_error(&c).contains("feature_chn"));
    for (key, val) in [
        ("feature_chns", json!([4, 8, 16])),
        ("feature_chns", json!([4, 8, 2, 16])),
        ("block_nums", json!([1, 0, 1, 1])),
        ("dimension", json!(3)),
        ("in_chns", json!(0)),
        ("class_num", json!(0)),
    ] {
        let mut c = tiny_config();
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(key), "{key} = {val}: {e}");
    }
    let mut c = tiny_config();
    c["block_nums"] = json!(3);
    assert!(config_error(&c).contains("`block_nums`"));
    let (_vm, net) = build(&json!({"name": "DLinkNet", "in_chns": 1, "class_num": 4}));
    assert_eq!(
        net.config(),
        serde_json::to_value(DLinkNetConfig::new(1, 4)).unwrap()
    );
    let mut cfg = DLinkNetConfig::new(1, 2);
    cfg.feature_chns = vec![64, 128];
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let err = DLinkNet::new(cfg, vb).err().unwrap().to_string();
    assert!(err.contains("feature_chns"), "{err}");
}
