//! Weakly supervised learners: every method trains on simulated scribbles
//! with finite losses, pCE ignores unannotated pixels exactly, the image
//! reaches the loss with the labels' crop and flips, and the Gated CRF
//! term's gradient through the training step matches finite differences.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use medseg_config::ExperimentConfig;
use medseg_core::{Batch, Image, LabelMap, Sample};
use medseg_learners::semi::SemiLearner;
use medseg_learners::weak::{GatedCrfRegularizer, RegularizerLoss};
use medseg_learners::{
    build_loss, build_net, collate, network_config, Learner, LearnerInit, Registries, StepContext,
    TrainerBuilder,
};
use medseg_losses::{LossTarget, Prediction};
use medseg_nets::NetRegistry;
use medseg_synth::register_scribble_transform;
use rand::{Rng, SeedableRng};
use std::path::Path;

fn config(root: &Path, out: &Path, net: &str, weak: &str, iterations: usize) -> ExperimentConfig {
    common::tiny(
        root,
        out,
        &common::Tiny {
            transforms: r#"{ name = "SimulateScribbles", seed = 2 }, { name = "NormalizeWithMeanStd" }, { name = "RandomCrop", size = [32, 32] }, { name = "RandomFlip", axes = [1, 2], p = 0.5 }"#,
            net,
            loss: r#"{ name = "CrossEntropyLoss" }"#,
            seed: 4,
            iterations,
            section: &format!("[weak]\n{weak}"),
            ..Default::default()
        },
    )
}

fn registries() -> Registries {
    let mut r = Registries::with_builtins();
    register_scribble_transform(&mut r.transforms);
    r
}

#[test]
fn every_weak_method_trains_on_simulated_scribbles_with_finite_losses() {
    let (dir, root) = common::phantom(5, 48);
    let cases = [
        ("pCE", "UNet2D", ""),
        ("EntropyMinimization", "UNet2D", ""),
        ("TotalVariation", "UNet2D", ""),
        ("MumfordShah", "UNet2D", ""),
        ("GatedCRF", "UNet2D", "params = { radius = 3 }"),
        ("USTM", "UNet2D", "params = { mc_dropout_n = 2 }"),
        ("DMPLS", "DualDecoderUNet", ""),
    ];
    for (method, net, params) in cases {
        let out = dir.path().join(method);
        let weak = format!("method = \"{method}\"\nregularize_w = 0.5\nrampup_end = 0.0\n{params}");
        let cfg = config(&root, &out, net, &weak, 2);
        let mut t = TrainerBuilder::new(cfg)
            .registries(registries())
            .progress(false)
            .build()
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        assert!(!t.learner().needs_unlabelled(), "{method}");
        let s = t.run().unwrap();
        assert_eq!(s.iterations, 2);
        let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
        for line in log.lines() {
            let e: serde_json::Value = serde_json::from_str(line).unwrap();
            let sup = e["sup"].as_f64().unwrap();
            assert!(sup.is_finite() && sup > 0.0, "{method}: sup {sup}");
            if method != "pCE" {
                let unsup = e["unsup"].as_f64().unwrap();
                let loss = e["loss"].as_f64().unwrap();
                assert!(unsup.is_finite(), "{method}: unsup {unsup}");
                assert!(
                    (loss - (sup + 0.5 * unsup)).abs() < 1e-4 * loss.abs().max(1.0),
                    "{method}: {loss} vs {sup} + 0.5 * {unsup}"
                );
            }
        }
    }
    // a [weak] method that needs another network, and a misspelt parameter
    let cfg = config(&root, dir.path(), "UNet2D", "method = \"DMPLS\"", 2);
    let e = TrainerBuilder::new(cfg).build().err().unwrap().to_string();
    assert!(
        e.contains("DualDecoderUNet") && e.contains("weak.method"),
        "{e}"
    );
    let cfg = config(
        &root,
        dir.path(),
        "UNet2D",
        "method = \"USTM\"\nparams = { mc_dropout = 2 }",
        2,
    );
    let e = TrainerBuilder::new(cfg).build().err().unwrap().to_string();
    assert!(
        e.contains("mc_dropout") && e.contains("mc_dropout_n"),
        "{e}"
    );
}

#[test]
fn pce_ignores_unannotated_pixels_exactly() {
    let dev = Device::Cpu;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let (n, c, h, w) = (2, 4, 6, 5);
    let logits: Vec<f32> = (0..n * c * h * w)
        .map(|_| rng.random::<f32>() * 4.0 - 2.0)
        .collect();
    let labels: Vec<u32> = (0..n * h * w)
        .map(|_| {
            if rng.random::<f64>() < 0.7 {
                255
            } else {
                rng.random_range(0..4)
            }
        })
        .collect();
    let ce = build_loss(&serde_json::json!({"name": "CrossEntropyLoss"})).unwrap();
    let target =
        LossTarget::class_map(Tensor::from_vec(labels.clone(), (n, 1, h, w), &dev).unwrap())
            .with_ignore(255);
    let loss = |l: &[f32]| {
        let t = Tensor::from_vec(l.to_vec(), (n, c, h, w), &dev).unwrap();
        ce.forward(&Prediction::logits(t), &target)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    // the closed form: mean over annotated pixels of -log softmax(z)[y]
    let (mut sum, mut count) = (0.0f64, 0);
    for b in 0..n {
        for p in 0..h * w {
            let y = labels[b * h * w + p];
            if y == 255 {
                continue;
            }
            let z: Vec<f64> = (0..c)
                .map(|k| logits[(b * c + k) * h * w + p] as f64)
                .collect();
            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            sum += lse - z[y as usize];
            count += 1;
        }
    }
    let base = loss(&logits);
    assert!(
        (base - sum / count as f64).abs() < 1e-5,
        "{base} vs {}",
        sum / count as f64
    );
    // changing the prediction at unannotated pixels changes nothing
    let mut changed = logits.clone();
    for b in 0..n {
        for p in 0..h * w {
            if labels[b * h * w + p] == 255 {
                for k in 0..c {
                    changed[(b * c + k) * h * w + p] += rng.random::<f32>() * 10.0 - 5.0;
                }
            }
        }
    }
    assert_eq!(loss(&changed), base);
}

#[test]
fn the_image_reaches_the_loss_with_the_labels_crop_and_flips() {
    // an image equal to its label map: after random crops and flips the
    // loss target's image must still equal the labels pixel by pixel
    let reg = registries();
    let specs = serde_json::json!([
        { "name": "RandomCrop", "size": [16, 16] },
        { "name": "RandomFlip", "axes": [1, 2], "p": 0.5 },
        { "name": "RandomRot90", "p": 0.5 },
    ]);
    let p = reg.transforms.build(specs.as_array().unwrap()).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut samples = Vec::new();
    for i in 0..4 {
        let lab = ndarray::ArrayD::from_shape_fn(vec![1, 40, 40], |ix| {
            ((ix[1] * 7 + ix[2] * 3 + i) % 4) as u16
        });
        let img = Image::new(lab.mapv(f32::from), Default::default()).unwrap();
        let mut s = Sample::new(format!("s{i}"), img);
        s.label = Some(LabelMap::new(lab, Default::default()).unwrap());
        samples.push(p.apply(s, &mut rng).unwrap());
    }
    let tb = collate(&Batch { samples }, 255, &Device::Cpu).unwrap();
    let img = tb
        .target
        .image
        .as_ref()
        .expect("the image is in the target");
    let lab = tb.labels.unwrap().to_dtype(DType::F32).unwrap();
    assert_eq!(img.dims(), lab.dims());
    let diff = (img - lab).unwrap().abs().unwrap().sum_all().unwrap();
    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
}

#[test]
fn gated_crf_gradient_through_the_training_step_matches_finite_differences() {
    let dir = tempfile::tempdir().unwrap();
    let weak =
        "method = \"GatedCRF\"\nregularize_w = 1.0\nrampup_end = 0.0\nparams = { radius = 2 }";
    let mut cfg = config(dir.path(), dir.path(), "UNet2D", weak, 10);
    cfg.network["dropout"] = serde_json::json!([0.0, 0.0, 0.0, 0.0]);
    cfg.network["norm_type"] = serde_json::json!("instance_norm");
    let dev = Device::Cpu;
    let nc = network_config(&cfg);
    let (vm, net) = build_net(&nc, &dev).unwrap();
    let init = LearnerInit {
        config: &cfg,
        device: &dev,
        student: &vm,
        student_net: net.as_ref(),
        network_config: &nc,
        networks: &NetRegistry::with_builtins(),
    };
    let mut l =
        SemiLearner::<RegularizerLoss<GatedCrfRegularizer>>::new("GatedCRF", &init).unwrap();
    let loss = build_loss(&cfg.training.loss).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let (n, s) = (2, 16);
    let img: Vec<f32> = (0..n * s * s).map(|_| rng.random::<f32>()).collect();
    let lab: Vec<u32> = (0..n * s * s)
        .map(|_| {
            if rng.random::<f64>() < 0.8 {
                255
            } else {
                rng.random_range(0..4)
            }
        })
        .collect();
    let image = Tensor::from_vec(img, (n, 1, s, s), &dev).unwrap();
    let labels = Tensor::from_vec(lab, (n, 1, s, s), &dev).unwrap();
    let batch = medseg_learners::TensorBatch {
        target: LossTarget::class_map(labels.clone())
            .with_ignore(255)
            .with_image(image.clone()),
        image,
        labels: Some(labels),
    };
    let step_loss = |l: &mut dyn Learner| -> (f64, Tensor) {
        let ctx = StepContext {
            iteration: 5,
            iterations: 10,
            net: net.as_ref(),
            loss: loss.as_ref(),
            labelled: &batch,
            unlabelled: None,
            noisy: None,
            config: &cfg,
        };
        let out = l.train_step(&ctx).unwrap();
        let v = out
            .loss
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        (v, out.loss)
    };
    // the unsupervised (Gated CRF) part is non-trivial in this loss
    let (_, total) = step_loss(&mut l);
    let grads = total.backward().unwrap();
    let head: Var = {
        let data = vm.data().lock().unwrap();
        let key = data
            .keys()
            .find(|k| k.ends_with("out_conv.weight"))
            .expect("a UNet has out_conv")
            .clone();
        data[&key].clone()
    };
    let g = grads
        .get(head.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let w0 = head
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let eps = 1e-2f32;
    for &i in &[0usize, 3, 7, 11] {
        let mut plus = w0.clone();
        plus[i] += eps;
        head.set(&Tensor::from_vec(plus, head.dims(), &dev).unwrap())
            .unwrap();
        let (lp, _) = step_loss(&mut l);
        let mut minus = w0.clone();
        minus[i] -= eps;
        head.set(&Tensor::from_vec(minus, head.dims(), &dev).unwrap())
            .unwrap();
        let (lm, _) = step_loss(&mut l);
        head.set(&Tensor::from_vec(w0.clone(), head.dims(), &dev).unwrap())
            .unwrap();
        let fd = (lp - lm) / (2.0 * eps as f64);
        let an = g[i] as f64;
        assert!(
            (fd - an).abs() <= 2e-3 + 2e-2 * an.abs(),
            "weight {i}: finite difference {fd} vs gradient {an}"
        );
    }
}

#[test]
fn bad_scribbles_are_named_by_file() {
    let (dir, root) = common::phantom(5, 32);
    // scribbles beside the full labels, in a `scribble` column
    let mut m = medseg_io::Manifest::read(&root.join("train.csv"), Some(&root)).unwrap();
    std::fs::create_dir_all(root.join("scribbles")).unwrap();
    for (i, row) in m.rows.iter_mut().enumerate() {
        let lab = medseg_io::read_label(&root.join(row.label.as_ref().unwrap())).unwrap();
        // keep every tenth pixel, ignore the rest
        let mut data = lab.data.clone();
        for (k, v) in data.iter_mut().enumerate() {
            if k % 10 != 0 {
                *v = 255;
            }
        }
        let rel = format!("scribbles/s{i}.nii.gz");
        medseg_io::write_label(
            &root.join(&rel),
            &LabelMap::new(data, lab.geometry).unwrap(),
        )
        .unwrap();
        row.extra.insert("scribble".into(), rel);
    }
    m.write(&root.join("train_scribble.csv")).unwrap();
    let weak = "method = \"pCE\"";
    let base = |csv: &str| {
        let mut cfg = config(&root, &dir.path().join("run"), "UNet2D", weak, 2);
        cfg.dataset.train_csv = csv.into();
        cfg.dataset.label_column = Some("scribble".into());
        cfg.dataset.train_transforms.remove(0); // no simulation: the files are the scribbles
        cfg
    };
    // the good case trains
    let mut t = TrainerBuilder::new(base("train_scribble.csv"))
        .progress(false)
        .build()
        .unwrap();
    assert_eq!(t.run().unwrap().iterations, 2);
    let err = |cfg: ExperimentConfig| {
        TrainerBuilder::new(cfg)
            .progress(false)
            .build()
            .unwrap()
            .run()
            .unwrap_err()
            .to_string()
    };
    // a value outside the classes
    let bad = root.join("scribbles/s1.nii.gz");
    let lab = medseg_io::read_label(&bad).unwrap();
    let mut data = lab.data.clone();
    data.iter_mut().take(3).for_each(|v| *v = 9);
    medseg_io::write_label(&bad, &LabelMap::new(data, lab.geometry).unwrap()).unwrap();
    let e = err(base("train_scribble.csv"));
    assert!(
        e.contains("s1.nii.gz") && e.contains("scribble value 9"),
        "{e}"
    );
    // no annotated pixel
    let none = ndarray::ArrayD::from_elem(lab.data.raw_dim(), 255u16);
    medseg_io::write_label(&bad, &LabelMap::new(none, lab.geometry).unwrap()).unwrap();
    let e = err(base("train_scribble.csv"));
    assert!(
        e.contains("s1.nii.gz") && e.contains("no annotated pixel"),
        "{e}"
    );
    // a row without its scribble
    m.rows[2].extra.remove("scribble");
    m.write(&root.join("train_missing.csv")).unwrap();
    let e = err(base("train_missing.csv"));
    assert!(
        e.contains("train_missing.csv") && e.contains("scribble"),
        "{e}"
    );
}
