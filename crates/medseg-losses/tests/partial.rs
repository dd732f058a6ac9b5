//! The partial-label losses (marginal and exclusion, Shi et al. 2021):
//! hand-worked values, agreement with plain CE + Dice when every class is
//! annotated, gradients against central finite differences, bad input.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use medseg_losses::{
    resize_target, CrossEntropyLoss, DiceLoss, ExclusionLoss, Loss, LossRegistry, LossTarget,
    MarginalLoss, PredKind, Prediction,
};
use serde_json::json;

const S: f64 = 1e-5; // default smoothing of both losses

/// Image 1 of the hand-worked cases: 3 classes, 2x2 pixels a b / c d,
/// probabilities per pixel (class 0, 1, 2) and labels:
///
/// | pixel | p0  | p1  | p2  | label |
/// |-------|-----|-----|-----|-------|
/// | a     | 0.5 | 0.2 | 0.3 | 0     |
/// | b     | 0.1 | 0.6 | 0.3 | 1     |
/// | c     | 0.2 | 0.4 | 0.4 | 1     |
/// | d     | 0.3 | 0.3 | 0.4 | 0     |
const P1: [f64; 12] = [
    0.5, 0.1, 0.2, 0.3, // class 0
    0.2, 0.6, 0.4, 0.3, // class 1
    0.3, 0.3, 0.4, 0.4, // class 2
];
const L1: [u32; 4] = [0, 1, 1, 0];

/// Image 2:
///
/// | pixel | p0  | p1  | p2  | label |
/// |-------|-----|-----|-----|-------|
/// | a     | 0.1 | 0.2 | 0.7 | 2     |
/// | b     | 0.6 | 0.3 | 0.1 | 0     |
/// | c     | 0.5 | 0.4 | 0.1 | 0     |
/// | d     | 0.2 | 0.6 | 0.2 | 2     |
const P2: [f64; 12] = [
    0.1, 0.6, 0.5, 0.2, // class 0
    0.2, 0.3, 0.4, 0.6, // class 1
    0.7, 0.1, 0.1, 0.2, // class 2
];
const L2: [u32; 4] = [2, 0, 0, 2];

fn dev() -> Device {
    Device::Cpu
}

fn t(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &dev()).unwrap()
}

fn labels(v: &[u32], n: usize) -> Tensor {
    Tensor::from_vec(v.to_vec(), (n, 1, 2, 2), &dev()).unwrap()
}

fn annotated(rows: &[[f32; 3]]) -> Tensor {
    let v: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(v, (rows.len(), 3), &dev()).unwrap()
}

/// The loss on `probs` given as probabilities and as logits `ln p` (the same
/// distribution): both must give `want`.
fn assert_value(what: &str, loss: &dyn Loss, probs: &Tensor, target: &LossTarget, want: f64) {
    for (kind, x) in [
        (PredKind::Probabilities, probs.clone()),
        (PredKind::Logits, probs.log().unwrap()),
    ] {
        let got = scalar(&loss.forward(&Prediction::new(x, kind), target).unwrap());
        assert!(
            (got - want).abs() < 1e-9,
            "{what} ({kind:?}): got {got}, want {want}"
        );
    }
}

fn configured<L: Default>(f: impl Fn(&mut L)) -> L {
    let mut l = L::default();
    f(&mut l);
    l
}

fn marginal(ce: f64, dice: f64) -> MarginalLoss {
    configured(|l: &mut MarginalLoss| {
        l.ce_weight = ce;
        l.dice_weight = dice;
    })
}

fn exclusion(ce: f64, dice: f64) -> ExclusionLoss {
    configured(|l: &mut ExclusionLoss| {
        l.ce_weight = ce;
        l.dice_weight = dice;
    })
}

#[test]
fn marginal_hand_worked_single_image() {
    // annotated [0, 1]: class 2 merges into the background, p'_0 = p0 + p2:
    //   a (0.8, 0.2)  b (0.4, 0.6)  c (0.6, 0.4)  d (0.7, 0.3)
    // marginal CE = −(ln 0.8 + ln 0.6 + ln 0.4 + ln 0.7) / 4
    //             = (0.22314 + 0.51083 + 0.91629 + 0.35667) / 4 = 0.50173
    // marginal Dice, classes annotated somewhere = {0, 1} (class 2 left out):
    //   class 0: Σp'y' = 0.8 + 0.7 = 1.5, Σp' = 2.5, Σy' = 2 → D0 = (3 + s)/(4.5 + s) ≈ 2/3
    //   class 1: Σp'y' = 0.6 + 0.4 = 1.0, Σp' = 1.5, Σy' = 2 → D1 = (2 + s)/(3.5 + s) ≈ 4/7
    //   loss = 1 − (D0 + D1)/2 ≈ 1 − 13/21 = 0.38095
    let p = t(&P1, &[1, 3, 2, 2]);
    let target = LossTarget::class_map(labels(&L1, 1)).with_annotated(annotated(&[[1., 1., 0.]]));
    let ce = -(0.8f64.ln() + 0.6f64.ln() + 0.4f64.ln() + 0.7f64.ln()) / 4.0;
    assert!((ce - 0.501_733_7).abs() < 1e-6);
    let d0 = (3.0 + S) / (4.5 + S);
    let d1 = (2.0 + S) / (3.5 + S);
    let dice = 1.0 - (d0 + d1) / 2.0;
    assert!((dice - 0.380_952).abs() < 1e-5);
    assert_value("marginal CE", &marginal(1.0, 0.0), &p, &target, ce);
    assert_value("marginal Dice", &marginal(0.0, 1.0), &p, &target, dice);
    assert_value(
        "marginal CE+Dice",
        &MarginalLoss::default(),
        &p,
        &target,
        ce + dice,
    );
    assert_value(
        "marginal 0.3 CE + 2 Dice",
        &marginal(0.3, 2.0),
        &p,
        &target,
        0.3 * ce + 2.0 * dice,
    );
}

#[test]
fn exclusion_hand_worked_single_image() {
    // annotated [0, 1]: class 2 is unannotated; e = pixels labelled 1 = {b, c}.
    // p2 = (0.3, 0.3, 0.4, 0.4)
    // exclusion Dice = 2 Σ p2 e / (Σ p2 + Σ e + s) = 2 (0.3 + 0.4) / (1.4 + 2 + s) ≈ 0.41176
    // exclusion CE = −(ln(1 − 0.3) + ln(1 − 0.4)) / 4 = (0.35667 + 0.51083) / 4 = 0.21688
    let p = t(&P1, &[1, 3, 2, 2]);
    let target = LossTarget::class_map(labels(&L1, 1)).with_annotated(annotated(&[[1., 1., 0.]]));
    let dice = 1.4 / (3.4 + S);
    let ce = -(0.7f64.ln() + 0.6f64.ln()) / 4.0;
    assert!((ce - 0.216_875).abs() < 1e-5);
    assert_value("exclusion Dice", &exclusion(0.0, 1.0), &p, &target, dice);
    assert_value("exclusion CE", &exclusion(1.0, 0.0), &p, &target, ce);
    assert_value(
        "exclusion CE+Dice",
        &ExclusionLoss::default(),
        &p,
        &target,
        ce + dice,
    );
}

#[test]
fn hand_worked_batch_of_two_with_different_annotated_sets() {
    // image 1 annotates [0, 1] (as above), image 2 annotates [0, 2].
    // Image 2 merged (p'_0 = p0 + p1): a (0.3, ·, 0.7) b (0.9, ·, 0.1)
    //   c (0.9, ·, 0.1) d (0.8, ·, 0.2); labels 2 0 0 2.
    // marginal CE = [−(ln .8 + ln .6 + ln .4 + ln .7) − (ln .7 + ln .9 + ln .9 + ln .2)] / 8
    //             = (2.00693 + 2.17683) / 8 = 0.52297
    // marginal Dice (batch sums), classes {0, 1, 2}:
    //   class 0: Σp'y' = 1.5 + 1.8 = 3.3, Σp' = 2.5 + 2.9 = 5.4, Σy' = 4 → (6.6 + s)/(9.4 + s)
    //   class 1: image 1 only (image 2 merged it away): (2 + s)/(3.5 + s)
    //   class 2: image 2 only: Σp'y' = 0.7 + 0.2 = 0.9, Σp' = 1.1, Σy' = 2 → (1.8 + s)/(3.1 + s)
    //   loss = 1 − (0.70213 + 0.57143 + 0.58065)/3 = 0.38193
    let p = Tensor::cat(&[t(&P1, &[1, 3, 2, 2]), t(&P2, &[1, 3, 2, 2])], 0).unwrap();
    let l: Vec<u32> = L1.iter().chain(L2.iter()).copied().collect();
    let target = LossTarget::class_map(labels(&l, 2))
        .with_annotated(annotated(&[[1., 1., 0.], [1., 0., 1.]]));
    let ce = -(0.8f64.ln()
        + 0.6f64.ln()
        + 0.4f64.ln()
        + 0.7f64.ln()
        + 0.7f64.ln()
        + 0.9f64.ln()
        + 0.9f64.ln()
        + 0.2f64.ln())
        / 8.0;
    assert!((ce - 0.522_971).abs() < 1e-5);
    let dice = 1.0 - ((6.6 + S) / (9.4 + S) + (2.0 + S) / (3.5 + S) + (1.8 + S) / (3.1 + S)) / 3.0;
    assert!((dice - 0.381_933).abs() < 1e-5);
    assert_value("batch marginal CE", &marginal(1.0, 0.0), &p, &target, ce);
    assert_value(
        "batch marginal Dice",
        &marginal(0.0, 1.0),
        &p,
        &target,
        dice,
    );

    // exclusion, classes unannotated somewhere: {1 (image 2), 2 (image 1)}
    //   class 2 in image 1: e1 = {b, c}: 2 (0.3 + 0.4) / (1.4 + 2 + s)
    //   class 1 in image 2: e2 = pixels labelled 2 = {a, d}; p1 = (0.2, 0.3, 0.4, 0.6):
    //     2 (0.2 + 0.6) / (1.5 + 2 + s)
    //   Dice = mean = (0.41176 + 0.45714)/2 = 0.43445
    //   CE = [−ln(1 − .3) − ln(1 − .4)  − ln(1 − .2) − ln(1 − .6)] / 8
    //      = (0.86750 + 1.13943) / 8 = 0.25087
    let edice = (1.4 / (3.4 + S) + 1.6 / (3.5 + S)) / 2.0;
    assert!((edice - 0.434_454).abs() < 1e-5);
    let ece = -(0.7f64.ln() + 0.6f64.ln() + 0.8f64.ln() + 0.4f64.ln()) / 8.0;
    assert!((ece - 0.250_867).abs() < 1e-5);
    assert_value(
        "batch exclusion Dice",
        &exclusion(0.0, 1.0),
        &p,
        &target,
        edice,
    );
    assert_value("batch exclusion CE", &exclusion(1.0, 0.0), &p, &target, ece);

    // the merging is per image: swapping the images' order changes nothing
    let p_sw = Tensor::cat(&[t(&P2, &[1, 3, 2, 2]), t(&P1, &[1, 3, 2, 2])], 0).unwrap();
    let l_sw: Vec<u32> = L2.iter().chain(L1.iter()).copied().collect();
    let target_sw = LossTarget::class_map(labels(&l_sw, 2))
        .with_annotated(annotated(&[[1., 0., 1.], [1., 1., 0.]]));
    assert_value(
        "swapped marginal",
        &MarginalLoss::default(),
        &p_sw,
        &target_sw,
        ce + dice,
    );
    assert_value(
        "swapped exclusion",
        &ExclusionLoss::default(),
        &p_sw,
        &target_sw,
        ece + edice,
    );
}

#[test]
fn ignore_value_and_pixel_weights_are_respected() {
    // image 1, annotated [0, 1], pixel d ignored (255), pixel weights (1, 2, 1, 1):
    // w = (1, 2, 1, 0)
    // marginal CE = [−ln .8 − 2 ln .6 − ln .4] / (1 + 2 + 1)
    // marginal Dice: class 0: Σwp'y' = .8, Σwp' = .8 + .8 + .6 = 2.2, Σwy' = 1 → (1.6 + s)/(3.2 + s)
    //                class 1: Σwp'y' = 1.2 + .4 = 1.6, Σwp' = .2 + 1.2 + .4 = 1.8, Σwy' = 3
    //                         → (3.2 + s)/(4.8 + s)
    // exclusion CE = [−2 ln(1 − .3) − ln(1 − .4)] / 4
    // exclusion Dice = 2 (2·.3 + .4) / ((.3 + .6 + .4) + 3 + s) = 2 / (4.3 + s)
    let p = t(&P1, &[1, 3, 2, 2]);
    let target = LossTarget::class_map(labels(&[0, 1, 1, 255], 1))
        .with_ignore(255)
        .with_pixel_weight(t(&[1.0, 2.0, 1.0, 1.0], &[1, 1, 2, 2]))
        .with_annotated(annotated(&[[1., 1., 0.]]));
    let ce = -(0.8f64.ln() + 2.0 * 0.6f64.ln() + 0.4f64.ln()) / 4.0;
    let dice = 1.0 - ((1.6 + S) / (3.2 + S) + (3.2 + S) / (4.8 + S)) / 2.0;
    assert_value("weighted marginal CE", &marginal(1.0, 0.0), &p, &target, ce);
    assert_value(
        "weighted marginal Dice",
        &marginal(0.0, 1.0),
        &p,
        &target,
        dice,
    );
    let ece = -(2.0 * 0.7f64.ln() + 0.6f64.ln()) / 4.0;
    let edice = 2.0 / (4.3 + S);
    assert_value(
        "weighted exclusion CE",
        &exclusion(1.0, 0.0),
        &p,
        &target,
        ece,
    );
    assert_value(
        "weighted exclusion Dice",
        &exclusion(0.0, 1.0),
        &p,
        &target,
        edice,
    );

    // image weights scale the pixel weights (two copies of image 1, weights 1 and 3,
    // the same values as one image)
    let p2 = Tensor::cat(&[p.clone(), p.clone()], 0).unwrap();
    let target2 = LossTarget::class_map(labels(&[0, 1, 1, 255, 0, 1, 1, 255], 2))
        .with_ignore(255)
        .with_pixel_weight(t(&[1.0, 2.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0], &[2, 1, 2, 2]))
        .with_image_weight(t(&[1.0, 3.0], &[2]))
        .with_annotated(annotated(&[[1., 1., 0.], [1., 1., 0.]]));
    assert_value(
        "image-weighted marginal CE",
        &marginal(1.0, 0.0),
        &p2,
        &target2,
        ce,
    );
    assert_value(
        "image-weighted exclusion CE",
        &exclusion(1.0, 0.0),
        &p2,
        &target2,
        ece,
    );
}

#[test]
fn all_classes_annotated_gives_plain_ce_plus_dice_and_no_exclusion() {
    let fx = fixtures();
    let ce = CrossEntropyLoss::default();
    let dice = DiceLoss::default();
    for set_name in ["2d", "3d"] {
        let s = set(&fx, set_name);
        let all = Tensor::ones((2, 3), DType::F32, &dev()).unwrap();
        for (spec, base) in [
            ("labels", LossTarget::class_map(s.labels.clone())),
            (
                "ignore+pw+iw",
                LossTarget::class_map(s.ignore_labels.clone())
                    .with_ignore(255)
                    .with_pixel_weight(s.pixel_weight.clone())
                    .with_image_weight(t(&[0.7, 1.6], &[2])),
            ),
        ] {
            for kind in [PredKind::Logits, PredKind::Probabilities] {
                let x = match kind {
                    PredKind::Logits => s.logits.clone(),
                    PredKind::Probabilities => candle_nn::ops::softmax(&s.logits, 1).unwrap(),
                };
                let pred = Prediction::new(x, kind);
                let want = scalar(&ce.forward(&pred, &base).unwrap())
                    + scalar(&dice.forward(&pred, &base).unwrap());
                for (with, target) in [
                    ("no annotated field", base.clone()),
                    ("all ones", base.clone().with_annotated(all.clone())),
                ] {
                    let what = format!("{set_name} {spec} {kind:?} {with}");
                    let got = scalar(&MarginalLoss::default().forward(&pred, &target).unwrap());
                    assert!(
                        (got - want).abs() < 1e-12,
                        "{what}: marginal {got} vs CE + Dice {want}"
                    );
                    let ex = scalar(&ExclusionLoss::default().forward(&pred, &target).unwrap());
                    assert_eq!(ex, 0.0, "{what}: exclusion loss");
                }
            }
        }
    }
}

#[test]
fn registry_builds_both_and_they_compose_in_combined_loss() {
    let reg = LossRegistry::with_builtins();
    let fx = fixtures();
    let s = set(&fx, "2d");
    let target = LossTarget::class_map(s.ignore_labels.clone())
        .with_ignore(255)
        .with_annotated(annotated(&[[1., 1., 0.], [1., 0., 1.]]));
    let pred = Prediction::logits(s.logits.clone());
    let m = reg
        .build(
            "MarginalLoss",
            &json!({"ce_weight": 0.5, "dice_weight": 2.0}),
        )
        .unwrap();
    let e = reg.build("ExclusionLoss", &json!(null)).unwrap();
    let c = reg
        .build(
            "CombinedLoss",
            &json!({"terms": [
                {"loss": "MarginalLoss", "weight": 1.0, "params": {"ce_weight": 0.5, "dice_weight": 2.0}},
                {"loss": "ExclusionLoss", "weight": 0.5}
            ]}),
        )
        .unwrap();
    let vm = scalar(&m.forward(&pred, &target).unwrap());
    let ve = scalar(&e.forward(&pred, &target).unwrap());
    let vc = scalar(&c.forward(&pred, &target).unwrap());
    assert!(vm > 0.0 && ve > 0.0);
    assert!(
        (vc - (vm + 0.5 * ve)).abs() < 1e-12,
        "{vc} vs {vm} + 0.5 {ve}"
    );

    // deep supervision keeps the per-image annotated classes
    let small = resize_target(&target, &[3, 3]).unwrap();
    assert_eq!(
        small.annotated.unwrap().to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 1.0, 0.0], vec![1.0, 0.0, 1.0]]
    );
    let ds = reg
        .build(
            "DeepSuperviseLoss",
            &json!({"base": {"loss": "ExclusionLoss"}, "weights": [1.0, 0.5]}),
        )
        .unwrap();
    let half = s
        .logits
        .narrow(2, 0, 3)
        .unwrap()
        .narrow(3, 0, 3)
        .unwrap()
        .contiguous()
        .unwrap();
    let v = scalar(
        &ds.forward_multi(&[pred.clone(), Prediction::logits(half)], &target)
            .unwrap(),
    );
    assert!(v.is_finite() && v > 0.0);
}

#[test]
fn bad_parameters_are_rejected() {
    let reg = LossRegistry::with_builtins();
    for (name, params, needle) in [
        ("MarginalLoss", json!({"dice_wieght": 1.0}), "dice_wieght"),
        ("ExclusionLoss", json!({"ce_weight": -1.0}), "ce_weight"),
        (
            "MarginalLoss",
            json!({"ce_weight": 0.0, "dice_weight": 0.0}),
            "both",
        ),
        ("ExclusionLoss", json!({"smooth": 0.0}), "smooth"),
        ("MarginalLoss", json!({"smooth": -1.0}), "smooth"),
    ] {
        let e = reg.build(name, &params).unwrap_err().to_string();
        assert!(
            e.contains(name) && e.contains(needle),
            "{name} {params}: {e}"
        );
    }
}

#[test]
fn bad_annotated_tensor_is_an_error_naming_the_field() {
    let p = Prediction::probabilities(t(&P1, &[1, 3, 2, 2]));
    let base = LossTarget::class_map(labels(&L1, 1));
    let cases: Vec<(Tensor, &str)> = vec![
        // wrong shape: [N, C − 1], [C], [N + 1, C]
        (
            Tensor::ones((1, 2), DType::F32, &dev()).unwrap(),
            "shape [N, C] = [1, 3]",
        ),
        (Tensor::ones(3, DType::F32, &dev()).unwrap(), "shape"),
        (
            Tensor::ones((2, 3), DType::F32, &dev()).unwrap(),
            "got [2, 3]",
        ),
        // values other than 0 / 1
        (annotated(&[[1., 0.5, 0.]]), "`annotated`[0, 1] is 0.5"),
        // background not annotated
        (annotated(&[[0., 1., 1.]]), "background"),
    ];
    let losses: [(&str, Box<dyn Loss>); 2] = [
        ("MarginalLoss", Box::new(MarginalLoss::default())),
        ("ExclusionLoss", Box::new(ExclusionLoss::default())),
    ];
    for (a, needle) in &cases {
        for (name, loss) in &losses {
            let target = base.clone().with_annotated(a.clone());
            let e = loss.forward(&p, &target).unwrap_err().to_string();
            assert!(
                e.contains(name) && e.contains("annotated") && e.contains(needle),
                "{name} with annotated {:?}: {e}",
                a.dims()
            );
        }
    }
    // no labels at all
    for (name, loss) in &losses {
        let target = LossTarget::none().with_annotated(annotated(&[[1., 1., 0.]]));
        let e = loss.forward(&p, &target).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains("labels"), "{name}: {e}");
    }
}

/// Checks d loss / d input against central differences on every element (as
/// tests/gradients.rs does).
fn check_grad(what: &str, loss: &dyn Loss, x0: &Tensor, kind: PredKind, target: &LossTarget) {
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
    for i in 0..base.len() {
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
    }
    assert!(max_abs > 1e-6, "{what}: gradient is identically zero");
}

#[test]
fn gradients_match_finite_differences() {
    let fx = fixtures();
    let ann = annotated(&[[1., 1., 0.], [1., 0., 1.]]);
    let losses: [(&str, Box<dyn Loss>); 6] = [
        ("MarginalLoss", Box::new(MarginalLoss::default())),
        ("marginal CE", Box::new(marginal(1.0, 0.0))),
        ("marginal Dice", Box::new(marginal(0.0, 1.0))),
        ("ExclusionLoss", Box::new(ExclusionLoss::default())),
        ("exclusion CE", Box::new(exclusion(1.0, 0.0))),
        ("exclusion Dice", Box::new(exclusion(0.0, 1.0))),
    ];
    for set_name in ["2d", "3d"] {
        let s = set(&fx, set_name);
        let targets = [
            (
                "labels",
                LossTarget::class_map(s.labels.clone()).with_annotated(ann.clone()),
            ),
            (
                "ignore+pw+iw",
                LossTarget::class_map(s.ignore_labels.clone())
                    .with_ignore(255)
                    .with_pixel_weight(s.pixel_weight.clone())
                    .with_image_weight(t(&[0.7, 1.6], &[2]))
                    .with_annotated(ann.clone()),
            ),
        ];
        for (spec, target) in &targets {
            for (name, loss) in &losses {
                let what = format!("{set_name} {name} [{spec}] logits");
                check_grad(&what, loss.as_ref(), &s.logits, PredKind::Logits, target);
            }
        }
        // probabilities as input
        let probs = candle_nn::ops::softmax(&s.logits, 1).unwrap();
        for (name, loss) in &losses {
            let what = format!("{set_name} {name} [labels] probabilities");
            check_grad(
                &what,
                loss.as_ref(),
                &probs,
                PredKind::Probabilities,
                &targets[0].1,
            );
        }
    }
}

#[test]
fn confident_logits_stay_finite() {
    // pixel b, labelled as annotated organ 1, predicted as unannotated class 2
    // with probability 1 − 2e-40 in f32 (logit 92 against 0): the exclusion
    // CE is large but finite (ln floored at 1e-30), and the marginal CE's
    // ln p_1 = −92 comes from the log-softmax, finite too
    let x = Tensor::from_vec(
        vec![0f32, 0., 0., 0., 0., 0., 0., 0., 0., 92., 0., 0.],
        (1, 3, 2, 2),
        &dev(),
    )
    .unwrap();
    let target = LossTarget::class_map(labels(&L1, 1)).with_annotated(annotated(&[[1., 1., 0.]]));
    let x = Var::from_tensor(&x).unwrap();
    for loss in [
        Box::new(ExclusionLoss::default()) as Box<dyn Loss>,
        Box::new(MarginalLoss::default()),
    ] {
        let v = loss
            .forward(&Prediction::logits(x.as_tensor().clone()), &target)
            .unwrap();
        let g = v.backward().unwrap();
        let g = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(scalar(&v).is_finite(), "{loss:?}: {}", scalar(&v));
        assert!(g.iter().all(|x| x.is_finite()), "{loss:?}: {g:?}");
    }
}

#[test]
fn exclusion_ce_is_accurate_for_confident_f32_logits() {
    // pixel b (labelled annotated organ 1) has logits (0, 0, 20) in f32, so
    // 1 − p2 = 2 / (2 + e^20) ≈ 4.1e-9, below f32's resolution next to 1:
    // computed as 1 − p2 it would be 0 (then floored). Pixel c has logits
    // (0, 0, 0): 1 − p2 = 2/3. Exclusion CE = −(ln(2 / (2 + e^20)) + ln(2/3)) / 4.
    let x = Tensor::from_vec(
        vec![0f32, 0., 0., 0., 0., 0., 0., 0., 0., 20., 0., 0.],
        (1, 3, 2, 2),
        &dev(),
    )
    .unwrap();
    let target = LossTarget::class_map(labels(&L1, 1)).with_annotated(annotated(&[[1., 1., 0.]]));
    let want = -((2.0 / (2.0 + 20f64.exp())).ln() + (2.0f64 / 3.0).ln()) / 4.0;
    let got = scalar(
        &exclusion(1.0, 0.0)
            .forward(&Prediction::logits(x), &target)
            .unwrap(),
    );
    assert!(
        (got - want).abs() < 1e-5 * want,
        "exclusion CE {got} vs {want}"
    );
}
