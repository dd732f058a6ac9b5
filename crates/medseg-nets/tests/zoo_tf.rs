//! Transformer hybrids (UNETR): parameter count against the closed-form
//! count of MONAI's default UNETR (tools/make_zoo_tf_fixtures.py), shapes
//! in 2D and 3D, and input-size errors.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use medseg_nets::{build_network, SegNetwork};
use serde_json::{json, Value};

fn reference() -> Value {
    common::read_json("zoo_tf_reference.json")
}

fn build(config: &Value) -> Box<dyn SegNetwork> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    build_network(config, vb).unwrap()
}

#[test]
fn unetr_default_parameter_count_equals_monai_layout() {
    let r = reference();
    let mut c = r["unetr_default"]["config"].clone();
    c["name"] = json!("UNETR");
    let net = build(&c);
    let want = r["unetr_default"]["num_parameters"].as_u64().unwrap();
    assert_eq!(net.num_parameters() as u64, want);
    let vit: usize = net
        .parameters()
        .iter()
        .filter(|p| p.name.starts_with("vit."))
        .map(|p| p.shape.iter().product::<usize>())
        .sum();
    assert_eq!(
        vit as u64,
        r["unetr_default"]["num_parameters_vit"].as_u64().unwrap()
    );
    let mut c2 = r["unetr_default_2d"]["config"].clone();
    c2["name"] = json!("UNETR2D");
    let net2 = build(&c2);
    assert_eq!(
        net2.num_parameters() as u64,
        r["unetr_default_2d"]["num_parameters"].as_u64().unwrap()
    );
}

#[test]
fn unetr_small_shapes_and_encoder() {
    let c = json!({"name": "UNETR", "dimension": 2, "in_chns": 1, "class_num": 3,
        "img_size": [32, 32], "feature_size": 4, "hidden_size": 16, "mlp_dim": 8, "num_heads": 2});
    let net = build(&c);
    let x = Tensor::randn(0f32, 1.0, (2, 1, 32, 32), &Device::Cpu).unwrap();
    let y = net.forward_t(&x, true).unwrap().logits;
    assert_eq!(y.dims(), &[2, 3, 32, 32]);
    let maps = net.encode(&x, false).unwrap().unwrap();
    assert_eq!(maps.len(), 4);
    assert_eq!(maps[3].dims(), &[2, 16, 2, 2]);
    assert_eq!(net.encoder_prefixes(), vec!["vit.".to_string()]);
    // the position embeddings fix the input size
    let bad = Tensor::zeros((1, 1, 48, 32), DType::F32, &Device::Cpu).unwrap();
    assert!(net.forward(&bad).is_err());
}

#[test]
fn unetr_rejects_bad_config() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let c = json!({"name": "UNETR", "in_chns": 1, "class_num": 2, "img_size": [40, 40, 40]});
    assert!(build_network(&c, vb.clone()).is_err());
    let c = json!({"name": "UNETR", "in_chns": 1, "class_num": 2, "hidden_size": 100});
    assert!(build_network(&c, vb.clone()).is_err());
    let c = json!({"name": "UNETR", "in_chns": 1, "class_num": 2, "hiden_size": 768});
    assert!(build_network(&c, vb).is_err());
}
