//! Shared helpers of the integration tests: the committed fixture file
//! (written by tools/make_loss_fixtures.py) and target construction.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use medseg_losses::{LossTarget, Prediction};
use serde_json::Value;

pub fn fixtures() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/losses.json");
    let s = std::fs::read_to_string(path).expect("fixture file");
    serde_json::from_str(&s).expect("fixture json")
}

pub fn shape(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

pub fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

pub fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// One input set of the fixture file, as tensors.
pub struct Set {
    pub logits: Tensor,
    pub labels: Tensor,
    pub ignore_labels: Tensor,
    pub soft: Tensor,
    pub pixel_weight: Tensor,
    pub image: Tensor,
    pub teacher: Tensor,
    pub noisy_mask: Tensor,
    pub valid_mask: Tensor,
}

pub fn set(fx: &Value, name: &str) -> Set {
    let s = &fx["sets"][name];
    let dev = Device::Cpu;
    let sh = shape(&s["shape"]);
    let mut psh = sh.clone();
    psh[1] = 1;
    let f = |k: &str, shp: &[usize]| Tensor::from_vec(f64s(&s[k]), shp, &dev).unwrap();
    let u = |k: &str| Tensor::from_vec(u32s(&s[k]), psh.as_slice(), &dev).unwrap();
    Set {
        logits: f("logits", &sh),
        labels: u("labels"),
        ignore_labels: u("ignore_labels"),
        soft: f("soft", &sh),
        pixel_weight: f("pixel_weight", &psh),
        image: f("image", &shape(&s["image_shape"])),
        teacher: f("teacher", &sh),
        noisy_mask: f("noisy_mask", &psh),
        valid_mask: f("valid_mask", &psh),
    }
}

/// The target a fixture case asks for.
pub fn target_for(case: &Value, s: &Set, ignore: u32) -> LossTarget {
    let mut t = match case["target"].as_str().unwrap() {
        "labels" => LossTarget::class_map(s.labels.clone()),
        "soft" => LossTarget::soft(s.soft.clone()),
        "ignore" => LossTarget::class_map(s.ignore_labels.clone()).with_ignore(ignore),
        "none" => LossTarget::none(),
        other => panic!("unknown target kind {other}"),
    };
    let flag = |k: &str| case.get(k).and_then(Value::as_bool).unwrap_or(false);
    if flag("pixel_weight") {
        t = t.with_pixel_weight(s.pixel_weight.clone());
    }
    if flag("noisy_mask") {
        t = t.with_noisy_mask(s.noisy_mask.clone());
    }
    if flag("image") {
        t = t.with_image(s.image.clone());
    }
    if flag("valid_mask") {
        t = t.with_valid_mask(s.valid_mask.clone());
    }
    if flag("teacher") {
        t = t.with_teacher(Prediction::logits(s.teacher.clone()));
    }
    t
}

pub fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}
