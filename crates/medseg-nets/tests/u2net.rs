//! U^2-Net and U^2-Net-small: parity with a PyTorch transcription of the
//! authors' `model/u2net.py` (fixtures by tools/make_u2net_csnet_fixtures.py)
//! for the fused and the side outputs, BatchNorm running statistics, the
//! default parameter counts, input sizes and configuration errors.

mod common;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use common::{
    build, build_with, check_running_stats, config_error, import_weights, load_io, max_abs,
    max_abs_diff, pattern, read_json, shape_of,
};
use medseg_nets::{build_network, U2Net, U2NetConfig};
use serde_json::{json, Value};

fn reference() -> Value {
    read_json("u2net_csnet_reference.json")["u2net"].clone()
}

fn tiny_config(name: &str) -> Value {
    let mut c = reference()["tiny"]["config"].clone();
    c["name"] = json!(name);
    c
}

fn check(dtype: DType, name: &str) -> (f32, f32) {
    let r = reference();
    let (varmap, net) = build_with(&tiny_config(name), dtype);
    assert_eq!(
        net.num_parameters() as u64,
        r["tiny"]["num_parameters"].as_u64().unwrap()
    );
    // the state dict also holds one num_batches_tracked per BatchNorm
    let bns = net
        .parameters()
        .iter()
        .filter(|p| p.name.ends_with("running_mean"))
        .count() as u64;
    assert_eq!(
        varmap.all_vars().len() as u64 + bns,
        r["tiny"]["num_tensors"].as_u64().unwrap()
    );
    import_weights(&varmap, "u2net_tiny");
    let io = load_io("u2net_tiny");
    let x = pattern(&shape_of(&r["tiny"]["input_shape"]))
        .to_dtype(dtype)
        .unwrap();
    let scale = max_abs(&io["eval"]);
    assert!(scale > 0.1, "degenerate reference output");
    let y = net.forward_t(&x, false).unwrap();
    let de = max_abs_diff(&y.logits, &io["eval"]) / scale;
    assert!(de < 1e-4, "{dtype:?} eval logits differ by {de} (relative)");
    assert_eq!(y.deep.len(), 6);
    assert!(y.aux.is_empty());
    let odd = pattern(&shape_of(&r["tiny"]["odd_input_shape"]))
        .to_dtype(dtype)
        .unwrap();
    let yo = net.forward_t(&odd, false).unwrap();
    let dodd = max_abs_diff(&yo.logits, &io["eval_odd"]) / max_abs(&io["eval_odd"]);
    assert!(dodd < 1e-4, "{dtype:?} odd-size logits differ by {dodd}");
    assert_eq!(yo.deep.len(), 6);
    for (i, side) in yo.deep.iter().enumerate() {
        let want = &io[&format!("eval_odd_side{}", i + 1)];
        let d = max_abs_diff(side, want) / max_abs(want);
        assert!(d < 1e-4, "{dtype:?} side {} differs by {d}", i + 1);
    }
    let yt = net.forward_t(&x, true).unwrap();
    assert_eq!(yt.deep.len(), 6);
    let dt = max_abs_diff(&yt.logits, &io["train"]) / max_abs(&io["train"]);
    assert!(
        dt < 1e-4,
        "{dtype:?} train logits differ by {dt} (relative)"
    );
    assert!(max_abs_diff(&y.logits, &io["train"]) > 1e-2);
    let checked = check_running_stats(&varmap, &io, "u2net_tiny", 1e-4);
    // REBNCONVs: RSU-L has 2L, stages 7, 6, 5, 4, 4F, 4F and 4F, 4, 5, 6, 7
    assert_eq!(checked, 2 * 2 * (7 + 6 + 5 + 4 + 4 + 4 + 4 + 4 + 5 + 6 + 7));
    println!(
        "{name} {dtype:?}: relative max differences eval {de:e}, odd size {dodd:e}, train {dt:e}"
    );
    (de, dt)
}

#[test]
fn matches_pytorch_in_eval_and_train_mode_with_side_outputs_and_running_stats() {
    check(DType::F32, "U2Net");
}

/// In f64 the network runs on candle's own ops instead of the `medseg-ops`
/// kernels; both give PyTorch's outputs. (The small variant only changes the
/// default widths, which the tiny configuration sets.)
#[test]
fn candle_fallback_path_matches_pytorch() {
    check(DType::F64, "U2NetP");
}

fn count(config: Value) -> usize {
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    build_network(&config, vb).unwrap().num_parameters()
}

#[test]
fn default_parameter_counts_equal_the_references() {
    let r = reference();
    // JMedSeg's defaults (in_ch = 3, n_classes = 2)
    let want = r["default"]["num_parameters"].as_u64().unwrap();
    assert_eq!(want, 44_023_718);
    let cfg = |name: &str, c: usize| json!({"name": name, "in_chns": 3, "class_num": c});
    assert_eq!(count(cfg("U2Net", 2)) as u64, want);
    // the authors' defaults (in_ch = 3, out_ch = 1)
    let want1 = r["default"]["num_parameters_out_ch_1"].as_u64().unwrap();
    assert_eq!(want1, 44_009_869);
    assert_eq!(count(cfg("U2Net", 1)) as u64, want1);
    let small = r["small_default"]["num_parameters"].as_u64().unwrap();
    assert_eq!(small, 1_134_662);
    let small1 = r["small_default"]["num_parameters_out_ch_1"]
        .as_u64()
        .unwrap();
    assert_eq!(small1, 1_131_181);
    for name in ["U2NetP", "U2Net-small"] {
        assert_eq!(count(cfg(name, 2)) as u64, small);
        assert_eq!(count(cfg(name, 1)) as u64, small1);
    }
    // the documented formula in in_chns and class_num
    for (i, c) in [(1usize, 4usize), (4, 7)] {
        let base = 43_996_032 + 576 * i - 576 * 3;
        assert_eq!(
            count(cfg("U2Net", c).tap_in(i)),
            base + 13_831 * c + 6 * c * c
        );
        let base = 1_127_712 + 576 * i - 576 * 3;
        assert_eq!(
            count(cfg("U2NetP", c).tap_in(i)),
            base + 3_463 * c + 6 * c * c
        );
    }
}

trait TapIn {
    fn tap_in(self, i: usize) -> Value;
}

impl TapIn for Value {
    fn tap_in(mut self, i: usize) -> Value {
        self["in_chns"] = json!(i);
        self
    }
}

#[test]
fn names_encoder_and_any_input_size() {
    let (varmap, net) = build(&tiny_config("U2Net-small"));
    assert_eq!(net.parameters().len(), varmap.all_vars().len());
    let names: Vec<&str> = net.parameters().iter().map(|p| p.name.as_str()).collect();
    for n in [
        "stage1.rebnconvin.conv_s1.weight",
        "stage1.rebnconv7.bn_s1.running_var",
        "stage1.rebnconv6d.conv_s1.bias",
        "stage5.rebnconv4.conv_s1.weight",
        "stage5d.rebnconv3d.bn_s1.weight",
        "stage1d.rebnconv1d.conv_s1.weight",
        "side6.weight",
        "outconv.bias",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    assert!(!names.iter().any(|n| n.contains("rebnconv7d")));
    assert_eq!(net.encoder_prefixes().len(), 6);
    assert_eq!(net.encoder_prefixes()[0], "stage1.");
    let x = pattern(&[1, 2, 37, 29]);
    let feats = net.encode(&x, false).unwrap().unwrap();
    let dims: Vec<Vec<usize>> = feats.iter().map(|f| f.dims().to_vec()).collect();
    assert_eq!(
        dims,
        vec![
            vec![1, 4, 37, 29],
            vec![1, 6, 19, 15],
            vec![1, 6, 10, 8],
            vec![1, 8, 5, 4],
            vec![1, 8, 3, 2],
            vec![1, 8, 2, 1],
        ]
    );
    // any size, and depth folded into the batch
    assert_eq!(net.input_size().multiple, vec![1, 1]);
    assert_eq!(net.input_size().minimum, vec![1, 1]);
    for shape in [[1, 2, 1, 1], [2, 2, 3, 17], [1, 2, 33, 65]] {
        let out = net.forward_t(&pattern(&shape), false).unwrap();
        let mut want = shape.to_vec();
        want[1] = 3;
        assert_eq!(out.logits.dims(), want.as_slice());
        assert!(out.deep.iter().all(|d| d.dims() == want.as_slice()));
    }
    let out = net.forward_t(&pattern(&[1, 2, 3, 16, 12]), true).unwrap();
    assert_eq!(out.logits.dims(), &[1, 3, 3, 16, 12]);
    assert_eq!(out.deep[5].dims(), &[1, 3, 3, 16, 12]);
    // without deep supervision (the same weights copied over): the same
    // fused logits, no side outputs
    let mut c = tiny_config("U2Net-small");
    c["multiscale_pred"] = json!(false);
    let (mut vm2, plain) = build(&c);
    for (name, var) in varmap.data().lock().unwrap().iter() {
        vm2.set_one(name, var.as_tensor()).unwrap();
    }
    for shape in [vec![1, 2, 17, 9], vec![1, 2, 3, 16, 12]] {
        let x = pattern(&shape);
        let a = net.forward_t(&x, false).unwrap();
        let b = plain.forward_t(&x, false).unwrap();
        assert!(b.deep.is_empty() && !a.deep.is_empty());
        assert_eq!(max_abs_diff(&a.logits, &b.logits), 0.0);
    }
    let mut c = tiny_config("U2Net");
    c["multiscale_pred"] = json!("yes");
    assert!(config_error(&c).contains("`multiscale_pred`"));
    let err = net
        .forward(&pattern(&[1, 3, 16, 16]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("input channels"), "{err}");
}

#[test]
fn config_errors_name_the_key_and_defaults_round_trip() {
    let mut c = tiny_config("U2Net");
    c["encoder_widths"] = json!([4, 4]);
    assert!(config_error(&c).contains("encoder_widths"));
    for (key, val) in [
        ("encoder_mid_chns", json!([4, 4, 4, 4, 4])),
        ("encoder_out_chns", json!([4, 4, 4, 4, 4, 0])),
        ("decoder_mid_chns", json!([4, 4, 4, 4, 4, 4])),
        ("decoder_out_chns", json!([4])),
        ("dimension", json!(3)),
        ("in_chns", json!(0)),
        ("class_num", json!(0)),
    ] {
        let mut c = tiny_config("U2Net");
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(key), "{key} = {val}: {e}");
    }
    for (key, val) in [("in_chns", json!("two")), ("decoder_mid_chns", json!(4))] {
        let mut c = tiny_config("U2NetP");
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(&format!("`{key}`")), "{key} = {val}: {e}");
    }
    // defaults filled in per variant, round trip
    for (name, small) in [("U2Net", false), ("U2NetP", true)] {
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        let net = build_network(&json!({"name": name, "in_chns": 1, "class_num": 2}), vb).unwrap();
        let want = serde_json::to_value(U2NetConfig::new(1, 2, small)).unwrap();
        assert_eq!(net.config(), want);
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        let again = build_network(&net.config(), vb).unwrap();
        assert_eq!(again.config(), net.config());
    }
    // the constructor fills empty width lists with U2NET's
    let mut cfg = U2NetConfig::new(1, 2, false);
    cfg.encoder_mid_chns.clear();
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let net = U2Net::new(cfg, vb).unwrap();
    assert_eq!(net.cfg().encoder_mid_chns, vec![32, 32, 64, 128, 256, 256]);
    let mut cfg = U2NetConfig::new(1, 2, true);
    cfg.decoder_out_chns = vec![1, 2];
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let err = U2Net::new(cfg, vb).err().unwrap().to_string();
    assert!(err.contains("decoder_out_chns"), "{err}");
}
