//! Gradients of every loss against central finite differences (f64), 2D and 3D,
//! with logits and with probabilities as input.

mod common;

use candle_core::{Tensor, Var};
use common::*;
use medseg_losses::{Loss, LossRegistry, LossTarget, PredKind, Prediction};
use serde_json::{json, Value};

/// Checks d loss / d input against central differences on every `stride`-th element.
fn check_grad(
    what: &str,
    loss: &dyn Loss,
    x0: &Tensor,
    kind: PredKind,
    target: &LossTarget,
    stride: usize,
) {
    let x = Var::from_tensor(x0).unwrap();
    let v = loss
        .forward(&Prediction::new(x.as_tensor().clone(), kind), target)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let grads = v.backward().unwrap();
    let g = grads
        .get(x.as_tensor())
        .unwrap_or_else(|| panic!("{what}: no gradient reaches the prediction"))
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let base = x0.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let shape = x0.dims().to_vec();
    // probabilities can be small, where ln p is strongly curved: smaller steps
    let h = if kind == PredKind::Probabilities {
        1e-7
    } else {
        1e-5
    };
    let eval = |vals: Vec<f64>| -> f64 {
        let t = Tensor::from_vec(vals, shape.as_slice(), x0.device()).unwrap();
        scalar(&loss.forward(&Prediction::new(t, kind), target).unwrap())
    };
    let mut max_abs = 0.0f64;
    let mut checked = 0;
    for i in (0..base.len()).step_by(stride) {
        let mut plus = base.clone();
        plus[i] += h;
        let mut minus = base.clone();
        minus[i] -= h;
        let fd = (eval(plus) - eval(minus)) / (2.0 * h);
        max_abs = max_abs.max(fd.abs());
        let tol = 1e-6 + 1e-5 * fd.abs();
        assert!(
            (g[i] - fd).abs() <= tol,
            "{what}: element {i}: autograd {} vs finite difference {fd}",
            g[i]
        );
        checked += 1;
    }
    assert!(checked > 10, "{what}: too few elements checked");
    assert!(max_abs > 1e-6, "{what}: gradient is identically zero");
}

fn cases() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        ("CrossEntropyLoss", json!({}), "labels"),
        (
            "CrossEntropyLoss",
            json!({"class_weight": [0.3, 1.0, 2.0], "label_smoothing": 0.1}),
            "ignore+pw+iw",
        ),
        ("PartialCrossEntropyLoss", json!({}), "ignore"),
        ("CrossEntropyLoss", json!({}), "soft"),
        ("DiceLoss", json!({}), "labels+pw"),
        (
            "DiceLoss",
            json!({"batch": false, "squared_pred": true, "class_weight": [1.0, 2.0, 3.0]}),
            "ignore+iw",
        ),
        (
            "JaccardLoss",
            json!({"batch": false, "include_background": false}),
            "labels",
        ),
        ("GeneralizedDiceLoss", json!({}), "labels"),
        (
            "GeneralizedDiceLoss",
            json!({"batch": true, "w_type": "simple"}),
            "soft",
        ),
        (
            "FocalLoss",
            json!({"gamma": 2.0, "alpha": 0.25}),
            "ignore+pw",
        ),
        ("FocalDiceLoss", json!({"beta": 2.0}), "labels"),
        (
            "TverskyLoss",
            json!({"alpha": 0.3, "beta": 0.7}),
            "labels+iw",
        ),
        ("ExpLogLoss", json!({"w_dice": 0.4, "gamma": 0.3}), "labels"),
        ("MSELoss", json!({}), "soft"),
        ("MAELoss", json!({}), "labels+pw"),
        ("GeneralizedCELoss", json!({"q": 0.6}), "labels+pw"),
        ("NoiseRobustDiceLoss", json!({"gamma": 1.5}), "labels"),
        ("SLSRLoss", json!({"epsilon": 0.2}), "labels+noisy"),
        ("EntropyLoss", json!({}), "none+pw"),
        ("TotalVariationLoss", json!({}), "none"),
        (
            "MumfordShahLoss",
            json!({"penalty": "l2", "lambda": 0.5}),
            "image",
        ),
        ("MumfordShahLoss", json!({"penalty": "l1"}), "image"),
        ("ConsistencyMSELoss", json!({}), "teacher"),
        ("ConsistencyKLLoss", json!({}), "teacher"),
        (
            "CombinedLoss",
            json!({"terms": [{"loss": "DiceLoss", "weight": 0.5}, {"loss": "CrossEntropyLoss", "weight": 0.5}]}),
            "labels",
        ),
    ]
}

fn build_target(spec: &str, s: &Set) -> LossTarget {
    let mut parts = spec.split('+');
    let mut t = match parts.next().unwrap() {
        "labels" => LossTarget::class_map(s.labels.clone()),
        "ignore" => LossTarget::class_map(s.ignore_labels.clone()).with_ignore(255),
        "soft" => LossTarget::soft(s.soft.clone()),
        "none" => LossTarget::none(),
        "image" => LossTarget::none().with_image(s.image.clone()),
        "teacher" => LossTarget::none().with_teacher(Prediction::logits(s.teacher.clone())),
        other => panic!("bad spec {other}"),
    };
    for p in parts {
        t = match p {
            "pw" => t.with_pixel_weight(s.pixel_weight.clone()),
            "iw" => t.with_image_weight(Tensor::new(&[0.7f64, 1.6], s.logits.device()).unwrap()),
            "noisy" => t.with_noisy_mask(s.noisy_mask.clone()),
            other => panic!("bad spec {other}"),
        };
    }
    t
}

#[test]
fn gradients_match_finite_differences_2d_and_3d() {
    let fx = fixtures();
    let reg = LossRegistry::with_builtins();
    for (set_name, stride) in [("2d", 1), ("3d", 1)] {
        let s = set(&fx, set_name);
        for (name, params, spec) in cases() {
            let loss = reg.build(name, &params).unwrap();
            let t = build_target(spec, &s);
            let what = format!("{set_name} {name} {params} [{spec}]");
            check_grad(
                &what,
                loss.as_ref(),
                &s.logits,
                PredKind::Logits,
                &t,
                stride,
            );
        }
    }
}

#[test]
fn gradients_with_probability_inputs() {
    let fx = fixtures();
    let reg = LossRegistry::with_builtins();
    let s = set(&fx, "2d");
    let probs = candle_nn::ops::softmax(&s.logits, 1).unwrap();
    for (name, params, spec) in [
        ("CrossEntropyLoss", json!({}), "ignore"),
        ("DiceLoss", json!({"batch": false}), "labels"),
        ("TverskyLoss", json!({"alpha": 0.2, "beta": 0.8}), "labels"),
        ("GeneralizedCELoss", json!({}), "labels"),
        ("ConsistencyKLLoss", json!({}), "teacher"),
    ] {
        let loss = reg.build(name, &params).unwrap();
        let t = build_target(spec, &s);
        let what = format!("probabilities {name} [{spec}]");
        check_grad(&what, loss.as_ref(), &probs, PredKind::Probabilities, &t, 2);
    }
}

#[test]
fn gated_crf_gradients_with_and_without_mask() {
    let fx = fixtures();
    let reg = LossRegistry::with_builtins();
    let s = set(&fx, "crf");
    let params = json!({"kernels": [{"weight": 0.9, "xy": 3.0, "rgb": 0.5}, {"weight": 0.4, "xy": 2.0}], "radius": 2});
    let loss = reg.build("GatedCRFLoss", &params).unwrap();
    let t = LossTarget::none().with_image(s.image.clone());
    check_grad(
        "GatedCRF",
        loss.as_ref(),
        &s.logits,
        PredKind::Logits,
        &t,
        2,
    );
    let t = t.with_valid_mask(s.valid_mask.clone());
    check_grad(
        "GatedCRF masked",
        loss.as_ref(),
        &s.logits,
        PredKind::Logits,
        &t,
        2,
    );
}

#[test]
fn gated_crf_3d_and_deep_supervision_gradients() {
    let fx = fixtures();
    let reg = LossRegistry::with_builtins();
    let s = set(&fx, "3d");
    let loss = reg
        .build(
            "GatedCRFLoss",
            &json!({"kernels": [{"weight": 1.0, "xy": 2.0, "rgb": 0.3}], "radius": 1}),
        )
        .unwrap();
    let t = LossTarget::none().with_image(s.image.clone());
    check_grad(
        "GatedCRF 3D",
        loss.as_ref(),
        &s.logits,
        PredKind::Logits,
        &t,
        3,
    );

    // deep supervision: gradient through the second (down-sampled) output
    let ds = reg
        .build(
            "DeepSuperviseLoss",
            &json!({"base": {"loss": "DiceLoss"}, "weights": [1.0, 0.5]}),
        )
        .unwrap();
    let s2 = set(&fx, "2d");
    let full = Prediction::logits(s2.logits.clone());
    let small0 = s2
        .logits
        .narrow(2, 0, 3)
        .unwrap()
        .narrow(3, 0, 3)
        .unwrap()
        .contiguous()
        .unwrap();
    let target = LossTarget::class_map(s2.labels.clone());
    #[derive(Debug)]
    struct Second<'a> {
        ds: &'a dyn Loss,
        full: Prediction,
    }
    impl Loss for Second<'_> {
        fn forward(&self, pred: &Prediction, target: &LossTarget) -> candle_core::Result<Tensor> {
            self.ds
                .forward_multi(&[self.full.detach(), pred.clone()], target)
        }
    }
    let second = Second {
        ds: ds.as_ref(),
        full,
    };
    check_grad(
        "DeepSupervision small output",
        &second,
        &small0,
        PredKind::Logits,
        &target,
        1,
    );
}
