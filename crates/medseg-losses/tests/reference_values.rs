//! Loss values against MONAI, PyMIC and PyTorch on the committed fixtures
//! (tools/make_loss_fixtures.py), 2D and 3D, to 1e-5.

mod common;

use candle_core::{DType, Tensor};
use common::*;
use medseg_losses::{LossRegistry, Prediction};

#[test]
fn every_fixture_case_matches_its_reference() {
    let fx = fixtures();
    let ignore = fx["ignore"].as_u64().unwrap() as u32;
    let reg = LossRegistry::with_builtins();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() > 70, "fixture has {} cases", cases.len());
    let mut failures = Vec::new();
    let mut worst = 0.0f64;
    for case in cases {
        let name = format!(
            "{}/{} ({}, {})",
            case["set"].as_str().unwrap(),
            case["name"].as_str().unwrap(),
            case["loss"].as_str().unwrap(),
            case["reference"].as_str().unwrap()
        );
        let s = set(&fx, case["set"].as_str().unwrap());
        let loss = reg
            .build(case["loss"].as_str().unwrap(), &case["params"])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let target = target_for(case, &s, ignore);
        let mut preds = vec![Prediction::logits(s.logits.clone())];
        if let Some(extra) = case.get("extra_logits") {
            let t = Tensor::from_vec(
                f64s(&extra["data"]),
                shape(&extra["shape"]),
                s.logits.device(),
            )
            .unwrap();
            preds.push(Prediction::logits(t));
        }
        let v = loss
            .forward_multi(&preds, &target)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.rank(), 0, "{name}: loss must be a scalar");
        let got = scalar(&v);
        let want = case["value"].as_f64().unwrap();
        let err = (got - want).abs() / want.abs().max(1.0);
        worst = worst.max(err);
        if err.is_nan() || err > 1e-5 {
            failures.push(format!("{name}: got {got}, reference {want}"));
        }
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
    eprintln!("{} cases, worst relative error {worst:e}", cases.len());
}

#[test]
fn f32_predictions_agree_with_f64() {
    let fx = fixtures();
    let s = set(&fx, "2d");
    let reg = LossRegistry::with_builtins();
    for name in [
        "CrossEntropyLoss",
        "DiceLoss",
        "FocalLoss",
        "GeneralizedDiceLoss",
    ] {
        let loss = reg.build(name, &serde_json::Value::Null).unwrap();
        let t = medseg_losses::LossTarget::class_map(s.labels.clone());
        let v64 = scalar(
            &loss
                .forward(&Prediction::logits(s.logits.clone()), &t)
                .unwrap(),
        );
        let l32 = s.logits.to_dtype(DType::F32).unwrap();
        let v = loss.forward(&Prediction::logits(l32), &t).unwrap();
        assert_eq!(v.dtype(), DType::F32);
        let v32 = scalar(&v);
        assert!((v64 - v32).abs() < 1e-5, "{name}: f64 {v64} vs f32 {v32}");
    }
}
