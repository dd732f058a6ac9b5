//! TernausUNet: parity with a PyTorch transcription of the reference
//! `UNet11` (fixtures by tools/make_ternaus_fixtures.py), the default
//! parameter count, accepted input sizes, configuration errors and a
//! checkpoint round trip.

mod common;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use common::{
    build, build_with, config_error, import_weights, load_io, max_abs, max_abs_diff, pattern,
    read_json, shape_of,
};
use medseg_nets::{
    count_parameters, load_network, save_checkpoint, TernausUNet, TernausUNetConfig,
};
use serde_json::{json, Value};

fn reference() -> Value {
    read_json("ternaus_reference.json")
}

fn tiny_config() -> Value {
    let mut c = reference()["tiny"]["config"].clone();
    c["name"] = json!("TernausUNet");
    c
}

#[test]
fn matches_reference() {
    let r = reference();
    let (varmap, net) = build(&tiny_config());
    assert_eq!(
        net.num_parameters() as u64,
        r["tiny"]["num_parameters"].as_u64().unwrap()
    );
    assert_eq!(
        net.parameters().len() as u64,
        r["tiny"]["num_tensors"].as_u64().unwrap()
    );
    import_weights(&varmap, "ternaus_tiny");
    let io = load_io("ternaus_tiny");
    let x = pattern(&shape_of(&r["tiny"]["input_shape"]));
    let y = net.forward_t(&x, false).unwrap();
    assert!(y.deep.is_empty() && y.aux.is_empty());
    let scale = max_abs(&io["eval"]);
    assert!(scale > 0.1, "degenerate reference output");
    let d = max_abs_diff(&y.logits, &io["eval"]) / scale;
    eprintln!("TernausUNet eval: max relative difference {d:e}");
    assert!(d < 1e-4, "eval logits differ by {d} (relative)");
    // no BatchNorm and no dropout: train mode computes the same
    let yt = net.forward_t(&x, true).unwrap().logits;
    assert_eq!(max_abs_diff(&yt, &y.logits), 0.0);

    // the candle composition path (f64) too
    let (vm64, net64) = build_with(&tiny_config(), DType::F64);
    import_weights(&vm64, "ternaus_tiny");
    let y64 = net64.forward(&x.to_dtype(DType::F64).unwrap()).unwrap();
    let d = max_abs_diff(&y64, &io["eval"]) / scale;
    assert!(d < 1e-4, "f64 eval logits differ by {d} (relative)");
}

#[test]
fn default_parameter_count_equals_reference() {
    let r = reference();
    let mut config = r["default"]["config"].clone();
    config["name"] = json!("TernausUNet");
    let (varmap, net) = build(&config);
    let want = r["default"]["num_parameters"].as_u64().unwrap();
    assert_eq!(want, 22_927_393);
    assert_eq!(net.num_parameters() as u64, want);
    assert_eq!(count_parameters(&varmap) as u64, want);
    let enc: usize = net
        .parameters()
        .iter()
        .filter(|p| p.name.starts_with("encoder."))
        .map(|p| p.shape.iter().product::<usize>())
        .sum();
    assert_eq!(
        enc as u64,
        r["default"]["num_parameters_vgg11_encoder"]
            .as_u64()
            .unwrap()
    );
    let names: Vec<&str> = net.parameters().iter().map(|p| p.name.as_str()).collect();
    // torchvision's vgg11 feature indices of the eight convolutions
    for i in [0, 3, 6, 8, 11, 13, 16, 18] {
        let n = format!("encoder.{i}.weight");
        assert!(names.contains(&n.as_str()), "{n} missing");
    }
    let find = |n: &str| {
        net.parameters()
            .iter()
            .find(|p| p.name == n)
            .unwrap()
            .shape
            .clone()
    };
    assert_eq!(find("center.block.0.conv.weight"), vec![512, 512, 3, 3]);
    assert_eq!(find("dec5.block.0.conv.weight"), vec![512, 768, 3, 3]);
    assert_eq!(find("dec5.block.1.weight"), vec![512, 256, 3, 3]);
    assert_eq!(find("dec2.block.1.weight"), vec![128, 32, 3, 3]);
    assert_eq!(find("dec1.conv.weight"), vec![32, 96, 3, 3]);
    assert_eq!(find("final.weight"), vec![1, 32, 1, 1]);
    assert_eq!(net.encoder_prefixes(), vec!["encoder.".to_string()]);
    assert_eq!(net.input_size(), medseg_nets::InputSize::pooled(2, 5));
}

#[test]
fn input_sizes_multiples_of_32_work_and_others_are_refused() {
    let (_vm, net) = build(&tiny_config());
    let y = net.forward(&pattern(&[2, 2, 32, 96])).unwrap();
    assert_eq!(y.dims(), &[2, 2, 32, 96]);
    let x5 = pattern(&[1, 2, 2, 32, 32]);
    let y5 = net.forward(&x5).unwrap();
    assert_eq!(y5.dims(), &[1, 2, 2, 32, 32]);
    let slice1 = x5.narrow(2, 1, 1).unwrap().squeeze(2).unwrap();
    let d = max_abs_diff(
        &net.forward(&slice1).unwrap(),
        &y5.narrow(2, 1, 1).unwrap().squeeze(2).unwrap(),
    );
    assert!(d < 1e-5, "folded slice differs by {d}");
    let feats = net
        .encode(&pattern(&[1, 2, 64, 32]), false)
        .unwrap()
        .unwrap();
    let chans: Vec<usize> = feats.iter().map(|f| f.dim(1).unwrap()).collect();
    assert_eq!(chans, vec![4, 8, 8, 16, 16]);
    assert_eq!(feats[4].dims(), &[1, 16, 4, 2]);
    for shape in [[1, 2, 48, 64], [1, 2, 64, 40], [1, 2, 11, 7]] {
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
    c["filters"] = json!(4);
    assert!(config_error(&c).contains("filters"));
    for (key, val) in [
        ("feature_chns", json!([4, 8, 16, 16])),
        ("feature_chns", json!([4, 0, 8, 16, 16])),
        ("num_filters", json!(0)),
        ("dimension", json!(3)),
        ("in_chns", json!(0)),
        ("class_num", json!(0)),
    ] {
        let mut c = tiny_config();
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(key), "{key} = {val}: {e}");
    }
    for (key, val) in [("num_filters", json!(-3)), ("feature_chns", json!("wide"))] {
        let mut c = tiny_config();
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(&format!("`{key}`")), "{key} = {val}: {e}");
    }
    let (_vm, net) = build(&json!({"name": "TernausUNet", "in_chns": 1, "class_num": 2}));
    assert_eq!(
        net.config(),
        serde_json::to_value(TernausUNetConfig::new(1, 2)).unwrap()
    );
    assert_eq!(net.config()["num_filters"], json!(32));
    let mut cfg = TernausUNetConfig::new(1, 2);
    cfg.num_filters = 0;
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let err = TernausUNet::new(cfg, vb).err().unwrap().to_string();
    assert!(err.contains("num_filters"), "{err}");
}

#[test]
fn checkpoint_round_trip_and_gradients_reach_the_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ternaus.safetensors");
    let mut config = tiny_config();
    config["seed"] = json!(9);
    let (vm, net) = build(&config);
    let x = pattern(&[1, 2, 32, 32]);
    let y = net.forward(&x).unwrap();
    let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    {
        let data = vm.data().lock().unwrap();
        for n in ["encoder.0.weight", "center.block.1.weight", "final.bias"] {
            let g = grads.get(data[n].as_tensor()).expect(n);
            assert!(max_abs(g) > 0.0, "{n}: no gradient");
        }
    }
    save_checkpoint(&path, &vm, &net.config()).unwrap();
    let (_vm2, net2) = load_network(&path, &Device::Cpu).unwrap();
    assert_eq!(max_abs_diff(&net2.forward(&x).unwrap(), &y), 0.0);
}
