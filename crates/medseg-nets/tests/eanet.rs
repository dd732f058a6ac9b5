//! EANet: parity with a PyTorch transcription of JMedSeg's `model/EANet.py`
//! (fixtures by tools/make_eanet_fixtures.py), the default parameter count,
//! input sizes, the GroupNorm layout of its backbone and configuration
//! errors.

mod common;

use candle_core::{DType, Device};
use common::{build, config_error, fixture_parity, pattern, read_json};
use medseg_nets::EANetConfig;
use serde_json::{json, Value};

fn reference() -> Value {
    read_json("eanet_reference.json")
}

fn tiny_config() -> Value {
    let mut c = reference()["tiny"]["config"].clone();
    c["name"] = json!("EANet");
    c
}

#[test]
fn matches_reference_in_f32_and_on_the_candle_path_in_f64() {
    for dtype in [DType::F32, DType::F64] {
        let d = fixture_parity(&reference(), "eanet_tiny", "EANet", dtype, 1e-4);
        assert_eq!(d.len(), 3, "eval, train and eval_odd compared");
    }
}

#[test]
fn default_parameter_count_equals_the_transcription() {
    let r = reference();
    let mut config = r["default"]["config"].clone();
    config["name"] = json!("EANet");
    let (varmap, net) = build(&config);
    // EANet(num_classes=2) of JMedSeg's EANet.py, counted on the PyTorch
    // transcription and, by the same count, on EANet.py itself run in
    // Jittor 1.3.11 (backbone 42,623,936, fc0 9,438,208, head 591,360, fc1
    // 1,180,160, fc2 2,050). The comment in EANet.py states 53,242,818:
    // 592,896 fewer, exactly the external-attention head plus the
    // NormLayers of fc0 (1,024) and fc1 (512), so it predates them.
    let want = r["default"]["num_parameters"].as_u64().unwrap();
    assert_eq!(want, 53_835_714);
    assert_eq!(net.num_parameters() as u64, want);
    assert_eq!(net.parameters().len(), varmap.all_vars().len());
    let sum = |prefix: &str| -> usize {
        net.parameters()
            .iter()
            .filter(|p| p.name.starts_with(prefix))
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    };
    assert_eq!(
        sum("backbone.") as u64,
        r["default"]["num_parameters_backbone"].as_u64().unwrap()
    );
    assert_eq!(sum("head."), 591_360);
    assert_eq!(sum("fc0.bn.") + sum("fc1.0.bn."), 1_536);
    assert_eq!(net.encoder_prefixes(), vec!["backbone.".to_string()]);
    // no BatchNorm anywhere: every norm is JMedSeg's GroupNorm NormLayer
    assert!(net.parameters().iter().all(|p| p.trainable));
    let find = |n: &str| {
        net.parameters()
            .iter()
            .find(|p| p.name == n)
            .unwrap_or_else(|| panic!("{n} missing"))
            .shape
            .clone()
    };
    assert_eq!(find("backbone.bn1.norm.weight"), vec![128]);
    assert_eq!(find("backbone.layer4.0.downsample.1.norm.bias"), vec![2048]);
    assert_eq!(find("head.linear_0.weight"), vec![64, 512, 1]);
    assert_eq!(find("head.linear_1.weight"), vec![512, 64, 1]);
    assert_eq!(find("fc1.0.deconv.weight"), vec![512, 256, 3, 3]);
    assert_eq!(find("out_conv.weight"), vec![256, 2, 2, 2]);
    let mut c50 = config.clone();
    c50["backbone"] = json!("resnet50");
    let (_vm, n50) = build(&c50);
    assert_eq!(
        n50.num_parameters() as u64,
        r["default"]["num_parameters_resnet50"].as_u64().unwrap()
    );
}

#[test]
fn input_sizes_from_three_up_and_the_encoder_maps() {
    let (_vm, net) = build(&tiny_config());
    assert_eq!(net.input_size().minimum, vec![3, 3]);
    for shape in [[1, 2, 3, 3], [1, 2, 9, 23], [2, 2, 16, 16]] {
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
    // width 8: layer1..4 give 32, 64, 128, 256 channels at strides 4, 8,
    // 16, 16
    let feats = net
        .encode(&pattern(&[1, 2, 64, 64]), false)
        .unwrap()
        .unwrap();
    let dims: Vec<Vec<usize>> = feats.iter().map(|f| f.dims().to_vec()).collect();
    assert_eq!(
        dims,
        vec![
            vec![1, 32, 16, 16],
            vec![1, 64, 8, 8],
            vec![1, 128, 4, 4],
            vec![1, 256, 4, 4]
        ]
    );
    let s = medseg_nets::summarize(net.as_ref(), &[1, 2, 32, 32], &Device::Cpu).unwrap();
    assert_eq!(s.total_params, net.num_parameters());
    // the two linear layers of the attention: 2 x (64 * 16) per position of
    // the 2x2 map
    let ea = s
        .layers
        .iter()
        .find(|l| l.name == "head.linear_0/1")
        .unwrap();
    assert_eq!(ea.macs, 2 * 4 * 64 * 16);
}

#[test]
fn config_errors_name_the_key_and_defaults_round_trip() {
    let mut c = tiny_config();
    c["memory_unit"] = json!(8);
    assert!(config_error(&c).contains("memory_unit"));
    for (k, val) in [
        ("backbone", json!("resnet34")),
        ("output_stride", json!(8)),
        ("backbone_blocks", json!([1, 1])),
        ("backbone_width", json!(0)),
        ("memory_units", json!(0)),
        ("dropout", json!(1.0)),
        ("dimension", json!(3)),
        ("in_chns", json!(0)),
        ("class_num", json!(0)),
    ] {
        let mut c = tiny_config();
        c[k] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(k), "{k} = {val}: {e}");
    }
    let mut c = tiny_config();
    c["memory_units"] = json!("many");
    assert!(config_error(&c).contains("`memory_units`"));
    let (_vm, net) = build(&json!({"name": "EANet", "in_chns": 1, "class_num": 4,
        "backbone_width": 2}));
    let mut want = EANetConfig::new(1, 4);
    want.backbone_width = 2;
    assert_eq!(net.config(), serde_json::to_value(&want).unwrap());
    let (_vm2, again) = build(&net.config());
    assert_eq!(again.config(), net.config());
}
