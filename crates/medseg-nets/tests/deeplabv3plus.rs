//! DeepLabV3+: parity with segmentation_models_pytorch's `DeepLabV3Plus`
//! (fixtures by tools/make_smp_fixtures.py, which builds the model with smp
//! itself) at output strides 16 and 8, separable and plain ASPP, the default
//! parameter count, input sizes and configuration errors.

mod common;

use candle_core::{DType, Device};
use common::{
    build, build_with, check_running_stats, config_error, import_weights, load_io, max_abs,
    max_abs_diff, pattern, read_json, shape_of,
};
use medseg_nets::{DeepLabV3Plus, DeepLabV3PlusConfig};
use serde_json::{json, Value};

fn reference() -> Value {
    read_json("smp_reference.json")["deeplabv3plus"].clone()
}

fn tiny_config(case: &str) -> Value {
    let mut c = reference()[case]["config"].clone();
    c["name"] = json!("DeepLabV3+");
    c
}

fn check(case: &str, fixture: &str, dtype: DType) {
    let r = reference();
    let (varmap, net) = build_with(&tiny_config(case), dtype);
    assert_eq!(
        net.num_parameters() as u64,
        r[case]["num_parameters"].as_u64().unwrap()
    );
    assert_eq!(
        varmap.all_vars().len() as u64,
        r[case]["num_tensors"].as_u64().unwrap()
    );
    import_weights(&varmap, fixture);
    let io = load_io(fixture);
    let x = pattern(&shape_of(&r[case]["input_shape"]))
        .to_dtype(dtype)
        .unwrap();
    let scale = max_abs(&io["eval"]);
    assert!(scale > 0.1, "degenerate reference output");
    let y = net.forward_t(&x, false).unwrap();
    let de = max_abs_diff(&y.logits, &io["eval"]) / scale;
    assert!(
        de < 1e-4,
        "{case} {dtype:?}: eval logits differ by {de} (relative)"
    );
    let yt = net.forward_t(&x, true).unwrap().logits;
    let dt = max_abs_diff(&yt, &io["train"]) / max_abs(&io["train"]);
    assert!(
        dt < 1e-4,
        "{case} {dtype:?}: train logits differ by {dt} (relative)"
    );
    assert!(max_abs_diff(&y.logits, &io["train"]) > 1e-2);
    let checked = check_running_stats(&varmap, &io, fixture, 1e-4);
    // encoder: stem + 6 blocks x 2 + 3 downsamples; decoder: 5 ASPP
    // branches, project, aspp.2, block1, block2
    assert_eq!(checked, 2 * (1 + 12 + 3 + 5 + 1 + 1 + 2));
    println!("{case} {dtype:?}: relative max differences eval {de:e}, train {dt:e}");
}

#[test]
fn matches_smp_at_output_stride_16_separable() {
    check("tiny", "deeplabv3plus_tiny", DType::F32);
}

#[test]
fn matches_smp_at_output_stride_8_plain_aspp() {
    check("tiny_os8", "deeplabv3plus_os8_tiny", DType::F32);
}

/// In f64 the dilated and depthwise convolutions take the candle
/// composition of `medseg_ops::conv2d`; the result is smp's too.
#[test]
fn candle_fallback_path_matches_smp() {
    check("tiny", "deeplabv3plus_tiny", DType::F64);
}

#[test]
fn default_parameter_count_equals_smp() {
    let r = reference();
    let mut config = r["default"]["config"].clone();
    config["name"] = json!("DeepLabV3Plus");
    let (varmap, net) = build(&config);
    let want = r["default"]["num_parameters"].as_u64().unwrap();
    assert_eq!(want, 22_437_457);
    assert_eq!(net.num_parameters() as u64, want);
    assert_eq!(net.parameters().len(), varmap.all_vars().len());
    let find = |n: &str| {
        net.parameters()
            .iter()
            .find(|p| p.name == n)
            .unwrap_or_else(|| panic!("{n} missing"))
            .shape
            .clone()
    };
    assert_eq!(
        find("decoder.aspp.0.convs.1.0.0.weight"),
        vec![512, 1, 3, 3]
    );
    assert_eq!(
        find("decoder.aspp.0.convs.1.0.1.weight"),
        vec![256, 512, 1, 1]
    );
    assert_eq!(
        find("decoder.aspp.0.convs.4.1.weight"),
        vec![256, 512, 1, 1]
    );
    assert_eq!(
        find("decoder.aspp.0.project.0.weight"),
        vec![256, 1280, 1, 1]
    );
    assert_eq!(find("decoder.block1.0.weight"), vec![48, 64, 1, 1]);
    assert_eq!(find("decoder.block2.0.0.weight"), vec![304, 1, 3, 3]);
    assert_eq!(find("segmentation_head.0.weight"), vec![1, 256, 1, 1]);
    assert_eq!(
        find("encoder.layer4.0.downsample.0.weight"),
        vec![512, 256, 1, 1]
    );
    let x = pattern(&[1, 3, 32, 48]);
    let feats = net.encode(&x, false).unwrap().unwrap();
    let sizes: Vec<Vec<usize>> = feats.iter().map(|f| f.dims()[1..].to_vec()).collect();
    assert_eq!(
        sizes,
        vec![
            vec![64, 16, 24],
            vec![64, 8, 12],
            vec![128, 4, 6],
            vec![256, 2, 3],
            vec![512, 2, 3]
        ]
    );
    assert_eq!(net.forward(&x).unwrap().dims(), &[1, 1, 32, 48]);
}

#[test]
fn input_sizes_and_config_errors() {
    let (_vm, net) = build(&tiny_config("tiny"));
    assert_eq!(net.input_size().multiple, vec![16, 16]);
    let err = net
        .forward(&pattern(&[1, 2, 24, 16]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiples of 16"), "{err}");
    let y5 = net.forward(&pattern(&[1, 2, 2, 16, 32])).unwrap();
    assert_eq!(y5.dims(), &[1, 2, 2, 16, 32]);

    let mut c = tiny_config("tiny");
    c["atrous_rates"] = json!([1, 2, 3]);
    assert!(config_error(&c).contains("atrous_rates"));
    for (key, val) in [
        ("encoder_output_stride", json!(32)),
        ("decoder_atrous_rates", json!([1, 2])),
        ("decoder_atrous_rates", json!([1, 0, 2])),
        ("decoder_aspp_dropout", json!(-0.1)),
        ("decoder_channels", json!(0)),
        ("encoder_channels", json!([4, 8, 8])),
        ("encoder_blocks", json!([1, 1, 0, 1])),
        ("upsampling", json!(8)),
        ("dimension", json!(3)),
        ("class_num", json!(0)),
    ] {
        let mut c = tiny_config("tiny");
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(key), "{key} = {val}: {e}");
    }
    for (key, val) in [
        ("decoder_aspp_separable", json!("yes")),
        ("decoder_atrous_rates", json!(12)),
    ] {
        let mut c = tiny_config("tiny");
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(&format!("`{key}`")), "{key} = {val}: {e}");
    }
    // both registry names, defaults filled in, round trip
    let (_vm, net) = build(&json!({"name": "DeepLabV3Plus", "in_chns": 1, "class_num": 2}));
    let want = serde_json::to_value(DeepLabV3PlusConfig::new(1, 2)).unwrap();
    assert_eq!(net.config(), want);
    let (_vm2, again) = build(&net.config());
    assert_eq!(again.config(), net.config());
    let mut cfg = DeepLabV3PlusConfig::new(1, 2);
    cfg.encoder_output_stride = 4;
    let vb = candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu);
    let err = DeepLabV3Plus::new(cfg, vb).err().unwrap().to_string();
    assert!(err.contains("encoder_output_stride"), "{err}");
}
