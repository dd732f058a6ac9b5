//! Encoder export and `network.pretrained` loading: what is written, what
//! is loaded, what is left alone, and the errors on mismatches.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use common::{build, max_abs_diff};
use medseg_nets::{encoder_tensors, load_pretrained, save_encoder, split_pretrained};
use serde_json::json;

fn unet(seed: u64) -> serde_json::Value {
    json!({"name": "UNet2D", "in_chns": 1, "class_num": 3, "feature_chns": [4, 8, 16], "dropout": [0.0, 0.0, 0.0], "seed": seed})
}

fn get(vm: &VarMap, name: &str) -> Tensor {
    vm.data().lock().unwrap()[name].as_tensor().clone()
}

#[test]
fn encode_gives_every_level_finest_first() {
    let (_, net) = build(&unet(1));
    let x = Tensor::randn(0f32, 1.0, (2, 1, 16, 16), &Device::Cpu).unwrap();
    let f = net
        .encode(&x, false)
        .unwrap()
        .expect("UNet exposes its encoder");
    let shapes: Vec<Vec<usize>> = f.iter().map(|t| t.dims().to_vec()).collect();
    assert_eq!(
        shapes,
        vec![vec![2, 4, 16, 16], vec![2, 8, 8, 8], vec![2, 16, 4, 4]]
    );
    assert_eq!(net.encoder_prefixes(), vec!["encoder.".to_string()]);
    // a 2D network folds the depth of a volume into the batch
    let v = Tensor::randn(0f32, 1.0, (1, 1, 3, 16, 16), &Device::Cpu).unwrap();
    let fv = net.encode(&v, false).unwrap().unwrap();
    assert_eq!(fv[2].dims(), &[3, 16, 4, 4]);
}

#[test]
fn identity_stn_encodes_like_the_bare_network() {
    let mut cfg = unet(3);
    cfg["stn"] = json!({});
    let (vm, wrapped) = build(&cfg);
    let (bare_vm, bare) = build(&unet(3));
    // same seed: same inner weights; the STN starts at the identity
    for (k, v) in bare_vm.data().lock().unwrap().iter() {
        assert_eq!(max_abs_diff(v.as_tensor(), &get(&vm, k)), 0.0, "{k}");
    }
    let x = Tensor::randn(0f32, 1.0, (2, 1, 16, 16), &Device::Cpu).unwrap();
    let a = wrapped.encode(&x, false).unwrap().unwrap();
    let b = bare.encode(&x, false).unwrap().unwrap();
    assert!(max_abs_diff(&a[2], &b[2]) < 1e-5);
    assert_eq!(wrapped.encoder_prefixes(), bare.encoder_prefixes());
}

#[test]
fn saved_encoder_loads_into_a_fresh_network_and_leaves_the_decoder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enc.safetensors");
    let (src_vm, src) = build(&unet(1));
    let n = save_encoder(&path, &src_vm, src.as_ref(), &json!({"method": "test"})).unwrap();
    let enc = encoder_tensors(&src_vm, &src.encoder_prefixes());
    assert_eq!(n, enc.len());
    assert!(enc.iter().all(|(k, _)| k.starts_with("encoder.")));

    // a network of another seed, behind an STN, takes the encoder
    let mut cfg = unet(7);
    cfg["stn"] = json!({});
    let (dst_vm, _) = build(&cfg);
    let dec_before = get(&dst_vm, "decoder.out_conv.weight");
    let loaded = load_pretrained(&path, &dst_vm).unwrap();
    assert_eq!(loaded.len(), n);
    for (k, t) in &enc {
        assert_eq!(max_abs_diff(t, &get(&dst_vm, k)), 0.0, "{k}");
    }
    let dec_after = get(&dst_vm, "decoder.out_conv.weight");
    assert_eq!(max_abs_diff(&dec_before, &dec_after), 0.0);
    assert!(max_abs_diff(&dec_after, &get(&src_vm, "decoder.out_conv.weight")) > 0.0);
}

#[test]
fn mismatched_encoders_are_refused_with_the_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enc.safetensors");
    let (src_vm, src) = build(&unet(1));
    save_encoder(&path, &src_vm, src.as_ref(), &json!({})).unwrap();

    // wider features: shapes differ
    let mut wide = unet(1);
    wide["feature_chns"] = json!([8, 16, 32]);
    let (vm, _) = build(&wide);
    let e = load_pretrained(&path, &vm).unwrap_err().to_string();
    assert!(e.contains("another shape"), "{e}");
    assert!(e.contains("encoder.down1"), "{e}");
    assert!(e.contains("enc.safetensors"), "{e}");

    // one level fewer: names are missing in the network
    let mut short = unet(1);
    short["feature_chns"] = json!([4, 8]);
    short["dropout"] = json!([0.0, 0.0]);
    let (vm, _) = build(&short);
    let e = load_pretrained(&path, &vm).unwrap_err().to_string();
    assert!(e.contains("not in the network"), "{e}");
    assert!(e.contains("encoder.down2"), "{e}");

    // not a weights file
    std::fs::write(&path, b"not safetensors").unwrap();
    let (vm, _) = build(&unet(1));
    let e = load_pretrained(&path, &vm).unwrap_err().to_string();
    assert!(e.contains("not a safetensors file"), "{e}");
}

#[test]
fn the_trainer_keys_are_split_off_and_checked() {
    let mut cfg = unet(1);
    cfg["pretrained"] = json!("runs/enc.safetensors");
    cfg["freeze_encoder"] = json!(50);
    let (rest, spec) = split_pretrained(&cfg).unwrap();
    assert_eq!(rest, unet(1));
    assert_eq!(
        spec.path.as_deref(),
        Some(std::path::Path::new("runs/enc.safetensors"))
    );
    assert_eq!(spec.freeze_iterations, 50);
    // the registry builds a table carrying them
    build(&cfg);

    let mut bad = unet(1);
    bad["freeze_encoder"] = json!(10);
    let e = split_pretrained(&bad).unwrap_err().to_string();
    assert!(e.contains("needs network.pretrained"), "{e}");
    bad["pretrained"] = json!(3);
    let e = split_pretrained(&bad).unwrap_err().to_string();
    assert!(e.contains("network.pretrained must be the path"), "{e}");
    let mut neg = unet(1);
    neg["pretrained"] = json!("a");
    neg["freeze_encoder"] = json!(-1);
    let e = split_pretrained(&neg).unwrap_err().to_string();
    assert!(e.contains("non-negative integer"), "{e}");
}

#[test]
fn networks_without_an_exposed_encoder_say_so() {
    let (vm, net) = build(
        &json!({"name": "UNetpp", "in_chns": 1, "class_num": 2, "feature_chns": [4, 8, 16, 32, 64], "dropout": [0.0, 0.0, 0.0, 0.0, 0.0]}),
    );
    let x = Tensor::zeros((1, 1, 16, 16), DType::F32, &Device::Cpu).unwrap();
    assert!(net.encode(&x, false).unwrap().is_none());
    let dir = tempfile::tempdir().unwrap();
    let e = save_encoder(
        &dir.path().join("e.safetensors"),
        &vm,
        net.as_ref(),
        &json!({}),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("does not expose its encoder"), "{e}");
}
