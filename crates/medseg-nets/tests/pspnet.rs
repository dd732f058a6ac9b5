//! PSPNet: parity with segmentation_models_pytorch's `PSPNet` (fixtures by
//! tools/make_smp_fixtures.py, which builds the model with smp itself), the
//! default parameter count, input sizes and configuration errors.

mod common;

use candle_core::{DType, Device};
use common::{
    build, build_with, check_running_stats, config_error, import_weights, load_io, max_abs,
    max_abs_diff, pattern, read_json, shape_of,
};
use medseg_nets::{PSPNet, PSPNetConfig};
use serde_json::{json, Value};

fn reference() -> Value {
    read_json("smp_reference.json")["pspnet"].clone()
}

fn tiny_config() -> Value {
    let mut c = reference()["tiny"]["config"].clone();
    c["name"] = json!("PSPNet");
    c
}

fn check(dtype: DType) -> (f32, f32) {
    let r = reference();
    let (varmap, net) = build_with(&tiny_config(), dtype);
    assert_eq!(
        net.num_parameters() as u64,
        r["tiny"]["num_parameters"].as_u64().unwrap()
    );
    assert_eq!(
        varmap.all_vars().len() as u64,
        r["tiny"]["num_tensors"].as_u64().unwrap()
    );
    import_weights(&varmap, "pspnet_tiny");
    let io = load_io("pspnet_tiny");
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
    let checked = check_running_stats(&varmap, &io, "pspnet_tiny", 1e-4);
    // stem, layer1 2 x 2, layer2 2 + downsample, PSP bins 2, 3, 6, conv
    assert_eq!(checked, 2 * (1 + 4 + 3 + 3 + 1));
    println!("{dtype:?}: relative max differences eval {de:e}, train {dt:e}");
    (de, dt)
}

#[test]
fn matches_smp_in_eval_and_train_mode_with_running_stats() {
    check(DType::F32);
}

/// In f64 the network runs on candle's own ops instead of the `medseg-ops`
/// kernels; both give smp's outputs.
#[test]
fn candle_fallback_path_matches_smp() {
    check(DType::F64);
}

#[test]
fn default_parameter_count_equals_the_part_of_smp_the_output_uses() {
    let r = reference();
    let mut config = r["default"]["config"].clone();
    config["name"] = json!("PSPNet");
    let (varmap, net) = build(&config);
    let want = r["default"]["num_parameters"].as_u64().unwrap();
    assert_eq!(want, 1_501_217);
    assert_eq!(net.num_parameters() as u64, want);
    // smp also holds the unused layer3 and layer4 of its ResNet-34
    assert_eq!(
        r["default"]["num_parameters_smp_total"].as_u64().unwrap(),
        21_437_985
    );
    assert_eq!(net.parameters().len(), varmap.all_vars().len());
    let names: Vec<&str> = net.parameters().iter().map(|p| p.name.as_str()).collect();
    for n in [
        "encoder.conv1.weight",
        "encoder.layer2.0.downsample.0.weight",
        "decoder.psp.blocks.0.pool.1.0.bias",
        "decoder.psp.blocks.3.pool.1.1.running_var",
        "decoder.conv.0.weight",
        "segmentation_head.0.bias",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    assert!(!names.iter().any(|n| n.starts_with("encoder.layer3")));
    assert!(!names.contains(&"decoder.psp.blocks.0.pool.1.1.weight"));
    assert_eq!(net.encoder_prefixes(), vec!["encoder.".to_string()]);
    let x = pattern(&[1, 3, 32, 40]);
    let feats = net.encode(&x, false).unwrap().unwrap();
    let dims: Vec<Vec<usize>> = feats.iter().map(|f| f.dims().to_vec()).collect();
    assert_eq!(
        dims,
        vec![vec![1, 64, 16, 20], vec![1, 64, 8, 10], vec![1, 128, 4, 5]]
    );
}

#[test]
fn input_sizes_and_config_errors() {
    let (_vm, net) = build(&tiny_config());
    assert_eq!(net.input_size().multiple, vec![8, 8]);
    let y = net.forward(&pattern(&[1, 2, 8, 24])).unwrap();
    assert_eq!(y.dims(), &[1, 2, 8, 24]);
    let y5 = net.forward(&pattern(&[1, 2, 3, 16, 16])).unwrap();
    assert_eq!(y5.dims(), &[1, 2, 3, 16, 16]);
    let err = net
        .forward(&pattern(&[1, 2, 12, 16]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiples of 8"), "{err}");
    let err = net
        .forward(&pattern(&[1, 3, 16, 16]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("input channels"), "{err}");

    let mut c = tiny_config();
    c["psp_channels"] = json!(8);
    assert!(config_error(&c).contains("psp_channels"));
    for (key, val) in [
        ("encoder_depth", json!(6)),
        ("encoder_depth", json!(1)),
        ("encoder_channels", json!([4, 8, 8])),
        ("encoder_blocks", json!([1, 0, 1, 1])),
        ("psp_dropout", json!(1.0)),
        ("upsampling", json!(4)),
        ("dimension", json!(3)),
        ("in_chns", json!(0)),
        ("class_num", json!(0)),
        ("psp_out_channels", json!(0)),
    ] {
        let mut c = tiny_config();
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(key), "{key} = {val}: {e}");
    }
    for (key, val) in [("in_chns", json!("two")), ("psp_use_batchnorm", json!(1))] {
        let mut c = tiny_config();
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(&format!("`{key}`")), "{key} = {val}: {e}");
    }
    // defaults filled in, round trip
    let (_vm, net) = build(&json!({"name": "PSPNet", "in_chns": 1, "class_num": 2}));
    let want = serde_json::to_value(PSPNetConfig::new(1, 2)).unwrap();
    assert_eq!(net.config(), want);
    let (_vm2, again) = build(&net.config());
    assert_eq!(again.config(), net.config());
    // depth 4 with upsampling 16 builds
    let mut c = tiny_config();
    c["encoder_depth"] = json!(4);
    c["upsampling"] = json!(16);
    let (_vm3, net4) = build(&c);
    assert_eq!(
        net4.forward(&pattern(&[1, 2, 16, 32])).unwrap().dims(),
        &[1, 2, 16, 32]
    );
    let mut cfg = PSPNetConfig::new(1, 2);
    cfg.upsampling = 2;
    let vb = candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu);
    let err = PSPNet::new(cfg, vb).err().unwrap().to_string();
    assert!(err.contains("upsampling"), "{err}");
}
