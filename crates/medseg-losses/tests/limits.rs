//! Closed-form limits and identities, registry behaviour and error handling.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use medseg_losses::*;
use serde_json::{json, Value};

fn onehot(labels: &Tensor, c: usize) -> Tensor {
    let lab = labels.to_dtype(DType::F64).unwrap();
    let mut s = vec![1usize; lab.rank()];
    s[1] = c;
    let classes = Tensor::arange(0f64, c as f64, lab.device())
        .unwrap()
        .reshape(s)
        .unwrap();
    lab.broadcast_eq(&classes)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
}

fn build(name: &str, params: Value) -> Box<dyn Loss> {
    LossRegistry::with_builtins().build(name, &params).unwrap()
}

fn value(l: &dyn Loss, p: &Prediction, t: &LossTarget) -> f64 {
    scalar(&l.forward(p, t).unwrap())
}

#[test]
fn perfect_prediction_gives_zero_region_losses() {
    let fx = fixtures();
    for set_name in ["2d", "3d"] {
        let s = set(&fx, set_name);
        let p = Prediction::probabilities(onehot(&s.labels, 3));
        let t = LossTarget::class_map(s.labels.clone());
        for (name, params) in [
            ("DiceLoss", json!({})),
            ("DiceLoss", json!({"batch": false})),
            (
                "DiceLoss",
                json!({"batch": false, "squared_pred": true, "include_background": false}),
            ),
            ("JaccardLoss", json!({"batch": false})),
            ("GeneralizedDiceLoss", json!({})),
            (
                "GeneralizedDiceLoss",
                json!({"batch": true, "w_type": "uniform"}),
            ),
            ("TverskyLoss", json!({"alpha": 0.1, "beta": 0.9})),
            ("FocalDiceLoss", json!({"beta": 3.0})),
            ("NoiseRobustDiceLoss", json!({})),
            ("CrossEntropyLoss", json!({})),
            ("MSELoss", json!({})),
            ("MAELoss", json!({})),
        ] {
            let v = value(build(name, params.clone()).as_ref(), &p, &t);
            assert!(v.abs() < 1e-12, "{set_name} {name} {params}: {v}");
        }
        // a wrong prediction is penalised
        let wrong =
            Prediction::probabilities(onehot(&s.labels.affine(1.0, 1.0).unwrap().remainder(3), 3));
        let v = value(build("DiceLoss", json!({})).as_ref(), &wrong, &t);
        assert!(v > 0.99, "{set_name} wrong prediction Dice loss {v}");
    }
}

trait Rem {
    fn remainder(&self, m: u32) -> Tensor;
}
impl Rem for Tensor {
    fn remainder(&self, m: u32) -> Tensor {
        let v: Vec<u32> = self
            .flatten_all()
            .unwrap()
            .to_vec1::<u32>()
            .unwrap()
            .into_iter()
            .map(|x| x % m)
            .collect();
        Tensor::from_vec(v, self.dims(), self.device()).unwrap()
    }
}

#[test]
fn uniform_prediction_gives_ln_c_cross_entropy() {
    let dev = Device::Cpu;
    for c in [2usize, 3, 5] {
        for shape in [vec![2, c, 4, 3], vec![2, c, 2, 3, 4]] {
            let logits = Tensor::zeros(shape.as_slice(), DType::F64, &dev).unwrap();
            let mut ls = shape.clone();
            ls[1] = 1;
            let n: usize = ls.iter().product();
            let lab: Vec<u32> = (0..n)
                .map(|i| if i % 7 == 3 { 255 } else { (i % c) as u32 })
                .collect();
            let lab = Tensor::from_vec(lab, ls.as_slice(), &dev).unwrap();
            let pw = Tensor::rand(0f64, 1f64, ls.as_slice(), &dev).unwrap();
            let t = LossTarget::class_map(lab)
                .with_ignore(255)
                .with_pixel_weight(pw)
                .with_image_weight(Tensor::new(&[0.3f64, 2.0], &dev).unwrap());
            for ls in [0.0, 0.2] {
                let ce = build("CrossEntropyLoss", json!({"label_smoothing": ls}));
                let v = value(ce.as_ref(), &Prediction::logits(logits.clone()), &t);
                assert!(
                    (v - (c as f64).ln()).abs() < 1e-9,
                    "C={c} {shape:?}: CE {v}"
                );
                let probs = (logits.ones_like().unwrap() / c as f64).unwrap();
                let v = value(ce.as_ref(), &Prediction::probabilities(probs), &t);
                assert!((v - (c as f64).ln()).abs() < 1e-9, "C={c} probs: CE {v}");
            }
            // entropy of the uniform prediction, in closed form
            let q = 0.999 / c as f64 + 5e-4;
            let want = -(c as f64) * q * q.ln() / (c as f64).ln();
            let v = value(
                build("EntropyLoss", json!({})).as_ref(),
                &Prediction::logits(logits.clone()),
                &t,
            );
            // (the weighted mean divides by Σw + 1e-10)
            assert!((v - want).abs() < 1e-9, "entropy {v} vs {want}");
        }
    }
}

#[test]
fn identities_between_losses() {
    let fx = fixtures();
    for set_name in ["2d", "3d"] {
        let s = set(&fx, set_name);
        let p = Prediction::logits(s.logits.clone());
        let t = LossTarget::class_map(s.ignore_labels.clone()).with_ignore(255);
        let ce = value(build("CrossEntropyLoss", json!({})).as_ref(), &p, &t);
        // focal with gamma = 0 is CE averaged over classes
        let f0 = value(build("FocalLoss", json!({"gamma": 0.0})).as_ref(), &p, &t);
        assert!(
            (f0 * 3.0 - ce).abs() < 1e-12,
            "{set_name}: focal(0)·C {} vs CE {ce}",
            f0 * 3.0
        );
        // GCE tends to CE as q -> 0
        let g = value(
            build("GeneralizedCELoss", json!({"q": 1e-6})).as_ref(),
            &p,
            &t,
        );
        assert!((g - ce).abs() < 1e-4, "{set_name}: GCE(q→0) {g} vs CE {ce}");
        // Tversky with alpha = beta = 1/2 is the soft Dice (without smoothing)
        let tv = value(
            build(
                "TverskyLoss",
                json!({"batch": true, "smooth_nr": 0.0, "smooth_dr": 0.0}),
            )
            .as_ref(),
            &p,
            &t,
        );
        let d = value(
            build(
                "DiceLoss",
                json!({"batch": true, "smooth_nr": 0.0, "smooth_dr": 0.0}),
            )
            .as_ref(),
            &p,
            &t,
        );
        assert!(
            (tv - d).abs() < 1e-12,
            "{set_name}: Tversky(½,½) {tv} vs Dice {d}"
        );
        // partial CE: pixel weights = annotated mask give the same value as the ignore value
        let lab = s.ignore_labels.to_dtype(DType::F64).unwrap();
        let mask = lab.ne(255.0).unwrap().to_dtype(DType::F64).unwrap();
        let lab0 = mask.mul(&lab).unwrap();
        let t2 = LossTarget::class_map(lab0).with_pixel_weight(mask);
        let pce = value(
            build("PartialCrossEntropyLoss", json!({})).as_ref(),
            &p,
            &t2,
        );
        assert!(
            (pce - ce).abs() < 1e-12,
            "{set_name}: weights {pce} vs ignore {ce}"
        );
        // consistency with itself is zero; KL is non-negative otherwise
        let same = LossTarget::none().with_teacher(p.clone());
        for n in ["ConsistencyMSELoss", "ConsistencyKLLoss"] {
            let v = value(build(n, json!({})).as_ref(), &p, &same);
            assert!(v.abs() < 1e-12, "{n} of a prediction with itself: {v}");
        }
        let other = LossTarget::none().with_teacher(Prediction::logits(s.teacher.clone()));
        assert!(value(build("ConsistencyKLLoss", json!({})).as_ref(), &p, &other) > 0.0);
        // deep supervision with one output is the base loss
        let ds = build(
            "DeepSuperviseLoss",
            json!({"base": {"loss": "CrossEntropyLoss"}}),
        );
        let v = scalar(&ds.forward_multi(std::slice::from_ref(&p), &t).unwrap());
        assert!((v - ce).abs() < 1e-12);
        // total variation of a constant is zero
        let c = Prediction::logits(s.logits.zeros_like().unwrap());
        assert!(
            value(
                build("TotalVariationLoss", json!({})).as_ref(),
                &c,
                &LossTarget::none()
            )
            .abs()
                < 1e-15
        );
    }
}

#[test]
fn gated_crf_and_mumford_shah_vanish_on_ideal_segmentations() {
    let fx = fixtures();
    let s = set(&fx, "crf");
    let dev = Device::Cpu;
    // one class everywhere: every pair agrees; masking removes the out-of-image pairs
    let (n, _, h, w) = s.logits.dims4().unwrap();
    let lab = Tensor::ones((n, 1, h, w), DType::U32, &dev).unwrap();
    let p = Prediction::probabilities(onehot(&lab, 3));
    let crf = build("GatedCRFLoss", json!({"radius": 2}));
    let t = LossTarget::none()
        .with_image(s.image.clone())
        .with_valid_mask(Tensor::ones((n, 1, 2 * h, 2 * w), DType::F64, &dev).unwrap());
    let v = value(crf.as_ref(), &p, &t);
    assert!(v.abs() < 1e-12, "Gated CRF of a constant segmentation {v}");
    // a segmentation that cuts the image is penalised
    let p2 = Prediction::logits(s.logits.clone());
    assert!(value(crf.as_ref(), &p2, &t) > 0.01);

    // Mumford–Shah: a two-region image segmented exactly, no length term -> 0
    let img: Vec<f64> = (0..n * h * w)
        .map(|i| if (i % w) < 3 { 0.2 } else { 0.9 })
        .collect();
    let img = Tensor::from_vec(img, (n, 1, h, w), &dev).unwrap();
    let lab = img.gt(0.5).unwrap().to_dtype(DType::U32).unwrap();
    let p = Prediction::probabilities(onehot(&lab, 2));
    let ms = build("MumfordShahLoss", json!({"lambda": 0.0}));
    let v = value(ms.as_ref(), &p, &LossTarget::none().with_image(img.clone()));
    assert!(v.abs() < 1e-12, "Mumford–Shah of an exact segmentation {v}");
    let ms = build("MumfordShahLoss", json!({"lambda": 1.0}));
    let v = value(ms.as_ref(), &p, &LossTarget::none().with_image(img));
    // one vertical edge per row, two channels: 2·n·h jumps of size 1, over numel
    let want = (2 * n * h) as f64 / (n * 2 * h * w) as f64;
    assert!(
        (v - want).abs() < 1e-12,
        "Mumford–Shah length term {v} vs {want}"
    );
}

#[test]
fn registry_errors_and_user_losses() {
    let mut reg = LossRegistry::with_builtins();
    let e = reg.build("DiceLos", &Value::Null).unwrap_err().to_string();
    assert!(e.contains("DiceLos") && e.contains("DiceLoss"), "{e}");
    let e = reg
        .build("DiceLoss", &json!({"smoth_nr": 1.0}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("smoth_nr"), "{e}");
    let e = reg
        .build("GeneralizedCELoss", &json!({"q": 0.0}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`q`"), "{e}");
    let e = reg
        .build(
            "CombinedLoss",
            &json!({"terms": [{"loss": "Nope", "weight": 1.0}]}),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("Nope"), "{e}");
    assert!(reg
        .build("CrossEntropyLoss", &json!({"label_smoothing": 1.5}))
        .is_err());
    assert!(reg.names().len() >= 22);

    #[derive(Debug)]
    struct Twice(Box<dyn Loss>);
    impl Loss for Twice {
        fn forward(&self, p: &Prediction, t: &LossTarget) -> candle_core::Result<Tensor> {
            self.0.forward(p, t)? * 2.0
        }
    }
    reg.register("TwiceCE", |_, r| {
        Ok(Box::new(Twice(r.build("CrossEntropyLoss", &Value::Null)?)))
    });
    let fx = fixtures();
    let s = set(&fx, "2d");
    let p = Prediction::logits(s.logits.clone());
    let t = LossTarget::class_map(s.labels.clone());
    let a = value(reg.build("TwiceCE", &Value::Null).unwrap().as_ref(), &p, &t);
    let b = value(
        reg.build("CrossEntropyLoss", &Value::Null)
            .unwrap()
            .as_ref(),
        &p,
        &t,
    );
    assert!((a - 2.0 * b).abs() < 1e-12);
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let fx = fixtures();
    let s = set(&fx, "2d");
    let p = Prediction::logits(s.logits.clone());
    let ce = build("CrossEntropyLoss", json!({}));
    // class index out of range
    let bad = s.labels.affine(1.0, 3.0).unwrap();
    let e = ce
        .forward(&p, &LossTarget::class_map(bad))
        .unwrap_err()
        .to_string();
    assert!(e.contains("class map value"), "{e}");
    // ignore value without declaring it
    let e = ce
        .forward(&p, &LossTarget::class_map(s.ignore_labels.clone()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("255"), "{e}");
    // missing labels / image / teacher
    let e = ce.forward(&p, &LossTarget::none()).unwrap_err().to_string();
    assert!(e.contains("labels"), "{e}");
    let e = build("MumfordShahLoss", json!({}))
        .forward(&p, &LossTarget::none())
        .unwrap_err()
        .to_string();
    assert!(e.contains("image"), "{e}");
    let e = build("ConsistencyKLLoss", json!({}))
        .forward(&p, &LossTarget::none())
        .unwrap_err()
        .to_string();
    assert!(e.contains("teacher"), "{e}");
    // shape mismatches
    let soft = s.soft.narrow(3, 0, 2).unwrap();
    assert!(ce.forward(&p, &LossTarget::soft(soft)).is_err());
    let pw = s.pixel_weight.narrow(2, 0, 2).unwrap();
    assert!(ce
        .forward(
            &p,
            &LossTarget::class_map(s.labels.clone()).with_pixel_weight(pw)
        )
        .is_err());
    let flat = Prediction::logits(s.logits.flatten_from(2).unwrap());
    assert!(ce
        .forward(&flat, &LossTarget::class_map(s.labels.clone()))
        .is_err());
    // several outputs for a single-scale loss
    let e = ce
        .forward_multi(
            &[p.clone(), p.clone()],
            &LossTarget::class_map(s.labels.clone()),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("DeepSuperviseLoss"), "{e}");
    // class maps without the channel axis are accepted
    let lab = s.labels.squeeze(1).unwrap();
    let a = scalar(&ce.forward(&p, &LossTarget::class_map(lab)).unwrap());
    let b = scalar(
        &ce.forward(&p, &LossTarget::class_map(s.labels.clone()))
            .unwrap(),
    );
    assert_eq!(a, b);
}

#[test]
fn nearest_resize_follows_pytorch() {
    let dev = Device::Cpu;
    let t = Tensor::arange(0u32, 5, &dev)
        .unwrap()
        .reshape((1, 1, 1, 5))
        .unwrap();
    let r = resize_nearest(&t, &[1, 2]).unwrap();
    assert_eq!(
        r.flatten_all().unwrap().to_vec1::<u32>().unwrap(),
        vec![0, 2]
    );
    let r = resize_nearest(&t, &[1, 3]).unwrap();
    assert_eq!(
        r.flatten_all().unwrap().to_vec1::<u32>().unwrap(),
        vec![0, 1, 3]
    );
    let r = resize_nearest(&t, &[2, 10]).unwrap();
    assert_eq!(r.dims(), &[1, 1, 2, 10]);
    assert_eq!(
        r.narrow(2, 1, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<u32>()
            .unwrap(),
        vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    );
}

#[test]
fn image_weights_give_weighted_means_over_images() {
    let fx = fixtures();
    for set_name in ["2d", "3d"] {
        let s = set(&fx, set_name);
        let iw = [0.25f64, 1.75];
        let w = Tensor::new(&iw, s.logits.device()).unwrap();
        for (name, params) in [
            ("CrossEntropyLoss", json!({})),
            ("DiceLoss", json!({"batch": false})),
            ("TverskyLoss", json!({"alpha": 0.3, "beta": 0.7})),
            ("FocalLoss", json!({})),
        ] {
            let loss = build(name, params);
            let p = Prediction::logits(s.logits.clone());
            let t = LossTarget::class_map(s.labels.clone()).with_image_weight(w.clone());
            let got = value(loss.as_ref(), &p, &t);
            let mut num = 0.0;
            for (b, wb) in iw.iter().enumerate() {
                let pb = Prediction::logits(s.logits.narrow(0, b, 1).unwrap());
                let tb = LossTarget::class_map(s.labels.narrow(0, b, 1).unwrap());
                num += wb * value(loss.as_ref(), &pb, &tb);
            }
            let want = num / iw.iter().sum::<f64>();
            assert!(
                (got - want).abs() < 1e-9,
                "{set_name} {name}: {got} vs {want}"
            );
        }
    }
}
