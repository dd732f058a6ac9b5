//! OCRNet: parity with a PyTorch transcription of JMedSeg's
//! `model/OCRNet.py` (fixtures by tools/make_attention_fixtures.py), the
//! default parameter count, input sizes and configuration errors.

mod common;
#[path = "attention/shared.rs"]
mod shared;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use common::config_error;
use medseg_nets::{OCRNet, OCRNetConfig, SegNetwork};
use serde_json::json;

#[test]
fn matches_reference_in_eval_and_train_mode_with_running_stats() {
    shared::parity("ocrnet", "OCRNet", DType::F32);
}

/// In f64 the network runs on candle's own ops instead of the `medseg-ops`
/// kernels.
#[test]
fn candle_fallback_path_matches_reference() {
    shared::parity("ocrnet", "OCRNet", DType::F64);
}

#[test]
fn default_parameter_count_equals_jmedseg() {
    // JMedSeg OCRNet(): resnet101, output stride 16, 3 inputs, 2 classes
    shared::default_count("ocrnet", "OCRNet", 57_064_644);
    let c = OCRNetConfig::new(3, 2);
    assert_eq!(c.backbone, "resnet101");
    assert_eq!(c.output_stride, 16);
    assert_eq!(c.ocr_channels, 512);
    assert_eq!(c.dropout, 0.05);
}

#[test]
fn input_sizes_and_config_errors() {
    shared::sizes_and_errors("ocrnet", "OCRNet");
    let mut c = shared::tiny_config("ocrnet", "OCRNet");
    c["ocr_channels"] = json!(0);
    assert!(config_error(&c).contains("ocr_channels"));
}

/// `head.conv_1x1` starts with zero weights (JMedSeg's `_zero_init_conv`).
#[test]
fn head_conv_1x1_weight_starts_at_zero() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let mut cfg = OCRNetConfig::new(1, 2);
    cfg.backbone_width = 2;
    cfg.ocr_channels = 8;
    let net = OCRNet::new(cfg, vb).unwrap();
    assert!(net.num_parameters() > 0);
    let data = varmap.data().lock().unwrap();
    let w = data["head.conv_1x1.weight"].as_tensor();
    assert_eq!(w.dims(), &[8, 8, 1, 1]);
    let s = w
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(s, 0.0);
}
