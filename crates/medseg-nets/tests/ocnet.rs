//! OCNet: parity with a PyTorch transcription of JMedSeg's `model/OCNet.py`
//! (fixtures by tools/make_attention_fixtures.py; backbone at output stride
//! 8), the default parameter count, input sizes and configuration errors.

mod common;
#[path = "attention/shared.rs"]
mod shared;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use medseg_nets::{OCNet, OCNetConfig, SegNetwork};

#[test]
fn matches_reference_in_eval_and_train_mode_with_running_stats() {
    shared::parity("ocnet", "OCNet", DType::F32);
}

/// In f64 the network runs on candle's own ops instead of the `medseg-ops`
/// kernels.
#[test]
fn candle_fallback_path_matches_reference() {
    shared::parity("ocnet", "OCNet", DType::F64);
}

#[test]
fn default_parameter_count_equals_jmedseg() {
    // JMedSeg OCNet(): resnet101, output stride 16, 3 inputs, 2 classes
    shared::default_count("ocnet", "OCNet", 57_570_498);
    let c = OCNetConfig::new(3, 2);
    assert_eq!(c.backbone, "resnet101");
    assert_eq!(c.output_stride, 16);
    assert_eq!(c.dropout, 0.1);
}

#[test]
fn input_sizes_and_config_errors() {
    shared::sizes_and_errors("ocnet", "OCNet");
}

/// The object context's `scale_conv` starts with zero weights (JMedSeg's
/// `_zero_init_conv`), its bias does not.
#[test]
fn scale_conv_weight_starts_at_zero() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let mut cfg = OCNetConfig::new(1, 2);
    cfg.backbone_width = 2;
    let net = OCNet::new(cfg, vb).unwrap();
    assert!(net.num_parameters() > 0);
    let data = varmap.data().lock().unwrap();
    let sum = |k: &str| {
        data[k]
            .as_tensor()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert_eq!(sum("head.oc.scale_conv.weight"), 0.0);
    assert!(sum("head.oc.scale_conv.bias") > 0.0);
    assert!(sum("head.oc.value_conv.weight") > 0.0);
}
