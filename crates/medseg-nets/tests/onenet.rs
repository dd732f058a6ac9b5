//! OneNet (JMedSeg `model/OneNet.py`): parity with a PyTorch transcription
//! (fixtures by tools/make_light_hrnet_dlink_fixtures.py), the default
//! parameter count, accepted input sizes and configuration errors.

mod common;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use common::{
    build, build_with, config_error, import_weights, load_io, max_abs, max_abs_diff, pattern,
    read_json, shape_of,
};
use medseg_nets::{count_parameters, OneNet, OneNetConfig};
use serde_json::{json, Value};

fn reference() -> Value {
    read_json("onenet_reference.json")
}

fn tiny_config() -> Value {
    let mut c = reference()["tiny"]["config"].clone();
    c["name"] = json!("OneNet");
    c
}

#[test]
fn matches_reference_in_eval_and_train_mode() {
    let r = reference();
    let shape = shape_of(&r["tiny"]["input_shape"]);
    for dtype in [DType::F32, DType::F64] {
        let (varmap, net) = build_with(&tiny_config(), dtype);
        assert_eq!(
            net.num_parameters() as u64,
            r["tiny"]["num_parameters"].as_u64().unwrap()
        );
        import_weights(&varmap, "onenet_tiny");
        let io = load_io("onenet_tiny");
        let x = pattern(&shape).to_dtype(dtype).unwrap();
        for (train, key) in [(false, "eval"), (true, "train")] {
            let y = net.forward_t(&x, train).unwrap();
            assert!(y.deep.is_empty() && y.aux.is_empty());
            let scale = max_abs(&io[key]);
            assert!(scale > 0.5, "degenerate reference output");
            let d = max_abs_diff(&y.logits, &io[key]) / scale;
            eprintln!("{dtype:?} {key}: relative max difference {d:e}");
            assert!(d < 1e-4, "{dtype:?} {key} logits differ by {d} (relative)");
        }
    }
}

#[test]
fn default_parameter_count_equals_reference() {
    let r = reference();
    let mut config = r["default"]["config"].clone();
    config["name"] = json!("OneNet");
    let (varmap, net) = build(&config);
    let want = r["default"]["num_parameters"].as_u64().unwrap();
    assert_eq!(want, 4_765_826);
    assert_eq!(net.num_parameters() as u64, want);
    assert_eq!(count_parameters(&varmap) as u64, want);
    assert_eq!(net.parameters().len(), varmap.all_vars().len());
    let find = |n: &str| {
        net.parameters()
            .iter()
            .find(|p| p.name == n)
            .unwrap_or_else(|| panic!("{n} missing"))
            .shape
            .clone()
    };
    assert_eq!(find("embed.conv.weight"), vec![128, 3, 4, 4]);
    assert_eq!(find("map.2.conv.weight"), vec![1024, 16, 3, 3]);
    assert_eq!(find("layers.15.conv.weight"), vec![1024, 16, 3, 3]);
    assert_eq!(find("layers.15.norm.norm.weight"), vec![1024]);
    assert_eq!(find("fuse.0.weight"), vec![256, 8192, 1, 1]);
    assert_eq!(find("fuse.1.norm.bias"), vec![256]);
    assert_eq!(find("fuse.4.conv.weight"), vec![256, 2, 4, 4]);
    // the encoder's prefixes cover everything but the head
    let enc = net.encoder_prefixes();
    let head: Vec<_> = net
        .parameters()
        .iter()
        .filter(|p| !enc.iter().any(|e| p.name.starts_with(e.as_str())))
        .map(|p| p.name.clone())
        .collect();
    assert!(head.iter().all(|n| n.starts_with("fuse.")), "{head:?}");
}

#[test]
fn input_sizes_multiples_of_4_work_and_others_are_refused() {
    let (_vm, net) = build(&tiny_config());
    let y = net.forward(&pattern(&[1, 2, 96, 40])).unwrap();
    assert_eq!(y.dims(), &[1, 3, 96, 40]);
    let y5 = net.forward(&pattern(&[1, 2, 2, 16, 16])).unwrap();
    assert_eq!(y5.dims(), &[1, 3, 2, 16, 16]);
    let feats = net
        .encode(&pattern(&[1, 2, 16, 16]), false)
        .unwrap()
        .unwrap();
    assert_eq!(feats.len(), 8);
    assert_eq!(feats[0].dims(), &[1, 128, 4, 4]);
    assert_eq!(net.input_size().multiple, vec![4, 4]);
    for shape in [[1, 2, 30, 32], [1, 2, 32, 18]] {
        let err = net.forward(&pattern(&shape)).unwrap_err().to_string();
        assert!(err.contains("multiples of 4"), "{shape:?}: {err}");
    }
    let err = net
        .forward(&pattern(&[1, 3, 16, 16]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("input channels"), "{err}");
}

#[test]
fn config_errors_name_the_key_and_config_round_trips() {
    let mut c = tiny_config();
    c["group_widht"] = json!(2);
    assert!(config_error(&c).contains("group_widht"));
    for (key, val) in [
        ("group_width", json!(3)),
        ("group_width", json!(0)),
        ("dropout", json!(1.0)),
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
    c["group_width"] = json!("wide");
    assert!(config_error(&c).contains("`group_width`"));
    let (_vm, net) = build(&json!({"name": "OneNet", "in_chns": 1, "class_num": 4}));
    assert_eq!(
        net.config(),
        serde_json::to_value(OneNetConfig::new(1, 4)).unwrap()
    );
    let mut cfg = OneNetConfig::new(1, 2);
    cfg.group_width = 5;
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let err = OneNet::new(cfg, vb).err().unwrap().to_string();
    assert!(err.contains("group_width"), "{err}");
}

#[test]
fn summary_counts_the_grouped_convolutions() {
    let (_vm, net) = build(&tiny_config());
    let shape = [1, 2, 16, 16];
    let s = medseg_nets::summarize(net.as_ref(), &shape, &Device::Cpu).unwrap();
    assert_eq!(s.total_params, net.num_parameters());
    // layers.0: 128 channels in 64 groups of 2, 3x3, on 4x4 pixels
    let l0 = s.layers.iter().find(|l| l.name == "layers.0.conv").unwrap();
    assert_eq!(l0.macs, (128 * 16 * 2 * 9) as u64);
    assert!(s.layers.iter().any(|l| l.kind == "ConvTranspose2d"));
}
