//! LightNet (JMedSeg `model/LightNet.py`): parity with a PyTorch
//! transcription (fixtures by tools/make_light_hrnet_dlink_fixtures.py), the
//! default parameter count, accepted input sizes and configuration errors.

mod common;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use common::{
    build, build_with, config_error, import_weights, load_io, max_abs, max_abs_diff, pattern,
    read_json, shape_of,
};
use medseg_nets::{count_parameters, LightNet, LightNetConfig};
use serde_json::{json, Value};

fn reference() -> Value {
    read_json("lightnet_reference.json")
}

fn tiny_config() -> Value {
    let mut c = reference()["tiny"]["config"].clone();
    c["name"] = json!("LightNet");
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
        import_weights(&varmap, "lightnet_tiny");
        let io = load_io("lightnet_tiny");
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
    config["name"] = json!("LightNet");
    let (varmap, net) = build(&config);
    let want = r["default"]["num_parameters"].as_u64().unwrap();
    assert_eq!(want, 2_836_802);
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
    assert_eq!(find("embed.0.conv.weight"), vec![64, 1, 4, 4]);
    assert_eq!(find("embed.4.conv.weight"), vec![1024, 16, 3, 3]);
    assert_eq!(find("layers.15.norm.norm.weight"), vec![1024]);
    assert_eq!(find("fuse.6.conv.weight"), vec![1024, 16, 1, 1]);
    assert_eq!(find("decode.0.conv.weight"), vec![512, 32, 1, 1]);
    assert_eq!(find("decode.2.conv.weight"), vec![256, 2, 4, 4]);
}

#[test]
fn input_channels_are_summed_and_sizes_must_be_multiples_of_4() {
    let (_vm, net) = build(&tiny_config());
    // two input channels summed to one: [a, b] and [a + b, 0] agree
    let x = pattern(&[1, 2, 16, 24]);
    let s = x.sum_keepdim(1).unwrap();
    let x2 = candle_core::Tensor::cat(&[&s, &s.zeros_like().unwrap()], 1).unwrap();
    let d = max_abs_diff(&net.forward(&x).unwrap(), &net.forward(&x2).unwrap());
    assert!(d < 1e-5, "{d}");
    assert_eq!(net.forward(&x).unwrap().dims(), &[1, 3, 16, 24]);
    let y5 = net.forward(&pattern(&[1, 2, 2, 16, 16])).unwrap();
    assert_eq!(y5.dims(), &[1, 3, 2, 16, 16]);
    assert_eq!(net.encode(&x, false).unwrap().unwrap().len(), 8);
    for shape in [[1, 2, 30, 32], [1, 2, 32, 18]] {
        let err = net.forward(&pattern(&shape)).unwrap_err().to_string();
        assert!(err.contains("multiples of 4"), "{shape:?}: {err}");
    }
}

#[test]
fn config_errors_name_the_key_and_config_round_trips() {
    let mut c = tiny_config();
    c["dropout"] = json!(0.1);
    assert!(config_error(&c).contains("dropout"));
    for (key, val) in [
        ("group_width", json!(1)),
        ("dimension", json!(3)),
        ("in_chns", json!(0)),
        ("class_num", json!(0)),
    ] {
        let mut c = tiny_config();
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(key), "{key} = {val}: {e}");
    }
    let (_vm, net) = build(&json!({"name": "LightNet", "in_chns": 1, "class_num": 4}));
    assert_eq!(
        net.config(),
        serde_json::to_value(LightNetConfig::new(1, 4)).unwrap()
    );
    let mut cfg = LightNetConfig::new(1, 2);
    cfg.group_width = 7;
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let err = LightNet::new(cfg, vb).err().unwrap().to_string();
    assert!(err.contains("group_width"), "{err}");
}
