//! DANet: parity with a PyTorch transcription of JMedSeg's `model/DANet.py`
//! (fixtures by tools/make_attention_fixtures.py), the default parameter
//! count, input sizes and configuration errors.

mod common;
#[path = "attention/shared.rs"]
mod shared;

use candle_core::DType;
use medseg_nets::DANetConfig;

#[test]
fn matches_reference_in_eval_and_train_mode_with_running_stats() {
    shared::parity("danet", "DANet", DType::F32);
}

/// In f64 the network runs on candle's own ops instead of the `medseg-ops`
/// kernels.
#[test]
fn candle_fallback_path_matches_reference() {
    shared::parity("danet", "DANet", DType::F64);
}

#[test]
fn default_parameter_count_equals_jmedseg() {
    // JMedSeg DANet(): resnet101, output stride 16, 3 inputs, 2 classes
    shared::default_count("danet", "DANet", 66_550_084);
    let c = DANetConfig::new(3, 2);
    assert_eq!(c.backbone, "resnet101");
    assert_eq!(c.output_stride, 16);
    assert_eq!(c.dropout, 0.1);
}

#[test]
fn input_sizes_and_config_errors() {
    shared::sizes_and_errors("danet", "DANet");
}
