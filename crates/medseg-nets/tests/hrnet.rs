//! HRNet (JMedSeg `model/hrnet.py`) and its reusable backbone: parity with a
//! PyTorch transcription (fixtures by tools/make_light_hrnet_dlink_fixtures.py),
//! BatchNorm running statistics, the default parameter count, accepted input
//! sizes and configuration errors.

mod common;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use common::{
    build, build_with, check_running_stats, config_error, import_weights, load_io, max_abs,
    max_abs_diff, pattern, read_json, shape_of,
};
use medseg_nets::backbones::{HRNetBackbone, HRNetSpec};
use medseg_nets::{count_parameters, HRNet, HRNetConfig};
use serde_json::{json, Value};

fn reference() -> Value {
    read_json("hrnet_reference.json")
}

fn tiny_config() -> Value {
    let mut c = reference()["tiny"]["config"].clone();
    c["name"] = json!("HRNet");
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
        import_weights(&varmap, "hrnet_tiny");
        let io = load_io("hrnet_tiny");
        let x = pattern(&shape).to_dtype(dtype).unwrap();
        let y = net.forward_t(&x, false).unwrap();
        assert!(y.deep.is_empty() && y.aux.is_empty());
        let scale = max_abs(&io["eval"]);
        assert!(scale > 0.5, "degenerate reference output");
        let d = max_abs_diff(&y.logits, &io["eval"]) / scale;
        eprintln!("{dtype:?} eval: relative max difference {d:e}");
        assert!(d < 1e-4, "{dtype:?} eval logits differ by {d} (relative)");
        let yt = net.forward_t(&x, true).unwrap().logits;
        let d = max_abs_diff(&yt, &io["train"]) / max_abs(&io["train"]);
        eprintln!("{dtype:?} train: relative max difference {d:e}");
        assert!(d < 1e-4, "{dtype:?} train logits differ by {d} (relative)");
        assert!(max_abs_diff(&y.logits, &io["train"]) > 1e-2);
        let bns = varmap
            .data()
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.ends_with("running_mean"))
            .count();
        let checked = check_running_stats(&varmap, &io, "hrnet_tiny", 1e-4);
        assert_eq!(checked, 2 * bns);
    }
}

#[test]
fn default_parameter_count_equals_reference() {
    let r = reference();
    let mut config = r["default"]["config"].clone();
    config["name"] = json!("HRNet");
    let (varmap, net) = build(&config);
    let want = r["default"]["num_parameters"].as_u64().unwrap();
    assert_eq!(want, 7_445_634);
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
    assert_eq!(find("conv1.weight"), vec![64, 3, 3, 3]);
    assert_eq!(find("layer1.0.downsample.0.weight"), vec![256, 64, 1, 1]);
    assert_eq!(find("transition1.1.0.0.weight"), vec![32, 256, 3, 3]);
    assert_eq!(find("transition3.3.0.1.running_var"), vec![128]);
    assert_eq!(
        find("stage3.3.branches.2.3.conv2.weight"),
        vec![64, 64, 3, 3]
    );
    assert_eq!(
        find("stage4.2.fuse_layers.0.3.0.weight"),
        vec![16, 128, 1, 1]
    );
    assert_eq!(
        find("stage4.1.fuse_layers.3.0.2.0.weight"),
        vec![128, 16, 3, 3]
    );
    assert_eq!(find("final_layer.weight"), vec![2, 16, 1, 1]);
    assert!(!net
        .parameters()
        .iter()
        .any(|p| p.name.starts_with("stage4.2.fuse_layers.1")));
    // the encoder is everything but the final layer
    let enc = net.encoder_prefixes();
    let head: Vec<_> = net
        .parameters()
        .iter()
        .filter(|p| !enc.iter().any(|e| p.name.starts_with(e.as_str())))
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(head, vec!["final_layer.weight", "final_layer.bias"]);
}

#[test]
fn backbone_alone_gives_every_branch() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let spec = HRNetSpec {
        in_chns: 1,
        stem_chns: 4,
        width: 2,
        final_branches: 4,
    };
    let b = HRNetBackbone::new(spec, vb, 1).unwrap();
    assert_eq!(b.parameters().len(), varmap.all_vars().len());
    let feats = b.features(&pattern(&[1, 1, 16, 24]), false).unwrap();
    let dims: Vec<_> = feats.iter().map(|f| f.dims().to_vec()).collect();
    assert_eq!(
        dims,
        vec![
            vec![1, 2, 16, 24],
            vec![1, 4, 8, 12],
            vec![1, 8, 4, 6],
            vec![1, 16, 2, 3]
        ]
    );
    let mut bad = HRNetSpec::jmedseg(1);
    bad.final_branches = 5;
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    assert!(HRNetBackbone::new(bad, vb, 0).is_err());
}

#[test]
fn input_sizes_multiples_of_8_work_and_others_are_refused() {
    let (_vm, net) = build(&tiny_config());
    let y = net.forward(&pattern(&[1, 2, 24, 40])).unwrap();
    assert_eq!(y.dims(), &[1, 3, 24, 40]);
    let y5 = net.forward(&pattern(&[1, 2, 2, 16, 16])).unwrap();
    assert_eq!(y5.dims(), &[1, 3, 2, 16, 16]);
    assert_eq!(net.input_size().multiple, vec![8, 8]);
    for shape in [[1, 2, 20, 32], [1, 2, 32, 12]] {
        let err = net.forward(&pattern(&shape)).unwrap_err().to_string();
        assert!(err.contains("multiples of 8"), "{shape:?}: {err}");
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
    c["c"] = json!(16);
    assert!(config_error(&c).contains("`c`"));
    for (key, val) in [
        ("width", json!(0)),
        ("stem_chns", json!(0)),
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
    c["width"] = json!(-1);
    assert!(config_error(&c).contains("`width`"));
    let (_vm, net) = build(&json!({"name": "HRNet", "in_chns": 1, "class_num": 4}));
    assert_eq!(
        net.config(),
        serde_json::to_value(HRNetConfig::new(1, 4)).unwrap()
    );
    let mut cfg = HRNetConfig::new(1, 2);
    cfg.width = 0;
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let err = HRNet::new(cfg, vb).err().unwrap().to_string();
    assert!(err.contains("width"), "{err}");
}
