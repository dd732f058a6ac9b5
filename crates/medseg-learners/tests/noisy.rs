//! Noisy-label learners: Co-teaching keeps exactly the scheduled fraction
//! of pixels, TriNet's agreement mask is the peers' argmax agreement, and a
//! short run of each method on corrupted labels has finite losses.

mod common;

use candle_core::{Device, Tensor};
use medseg_learners::noisy::{
    agreement_mask, pixel_ce, small_loss_mask, small_loss_mask_per_class, CoTeachingParams,
};
use medseg_learners::{Registries, TrainerBuilder};
use medseg_synth::register_noise_transform;
use rand::{Rng, SeedableRng};

#[test]
fn coteaching_keeps_exactly_the_scheduled_fraction_of_the_smallest_losses() {
    let p = CoTeachingParams {
        forget_rate: 0.3,
        gradual: 0.2,
        exponent: 1.0,
        per_class: false,
    };
    // R(t) = 1 - 0.3 min(1, t / 20) over 100 iterations
    assert_eq!(p.keep_rate(0, 100), 1.0);
    assert!((p.keep_rate(10, 100) - 0.85).abs() < 1e-12);
    assert!((p.keep_rate(20, 100) - 0.7).abs() < 1e-12);
    assert!((p.keep_rate(90, 100) - 0.7).abs() < 1e-12);
    let dev = Device::Cpu;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let n = 2 * 7 * 9;
    let loss: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
    let valid: Vec<f32> = (0..n)
        .map(|_| f32::from(u8::from(rng.random::<f64>() < 0.8)))
        .collect();
    let lt = Tensor::from_vec(loss.clone(), (2, 1, 7, 9), &dev).unwrap();
    let vt = Tensor::from_vec(valid.clone(), (2, 1, 7, 9), &dev).unwrap();
    for keep in [1.0, 0.85, 0.7, 0.5, 0.0] {
        let m = small_loss_mask(&lt, &vt, keep)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let n_valid = valid.iter().filter(|&&v| v > 0.0).count();
        let k = (keep * n_valid as f64).round() as usize;
        assert_eq!(m.iter().filter(|&&v| v > 0.0).count(), k, "keep {keep}");
        // only valid pixels, and every kept loss is below every dropped valid one
        let kept_max = (0..n)
            .filter(|&i| m[i] > 0.0)
            .map(|i| loss[i])
            .fold(f32::MIN, f32::max);
        let drop_min = (0..n)
            .filter(|&i| m[i] == 0.0 && valid[i] > 0.0)
            .map(|i| loss[i])
            .fold(f32::MAX, f32::min);
        assert!((0..n).all(|i| m[i] == 0.0 || valid[i] > 0.0));
        assert!(
            k == 0 || k == n_valid || kept_max <= drop_min,
            "keep {keep}"
        );
    }
}

#[test]
fn class_balanced_selection_keeps_the_fraction_within_each_class() {
    let dev = Device::Cpu;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let n = 3 * 8 * 8;
    let loss: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
    let labels: Vec<u32> = (0..n)
        .map(|_| match rng.random_range(0..10) {
            0 => 255,
            1 => 1,
            2 | 3 => 2,
            _ => 0,
        })
        .collect();
    let valid: Vec<f32> = labels
        .iter()
        .map(|&y| f32::from(u8::from(y != 255)))
        .collect();
    let t = |v: Vec<f32>| Tensor::from_vec(v, (3, 1, 8, 8), &dev).unwrap();
    let yt = Tensor::from_vec(labels.clone(), (3, 1, 8, 8), &dev).unwrap();
    let m = small_loss_mask_per_class(&t(loss.clone()), &t(valid), &yt, 0.6)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for c in [0u32, 1, 2] {
        let idx: Vec<usize> = (0..n).filter(|&i| labels[i] == c).collect();
        let kept: Vec<usize> = idx.iter().copied().filter(|&i| m[i] > 0.0).collect();
        assert_eq!(
            kept.len(),
            (0.6 * idx.len() as f64).round() as usize,
            "class {c}"
        );
        let kmax = kept.iter().map(|&i| loss[i]).fold(f32::MIN, f32::max);
        assert!(
            idx.iter().all(|&i| m[i] > 0.0 || loss[i] >= kmax),
            "class {c}"
        );
    }
    assert!((0..n).all(|i| labels[i] != 255 || m[i] == 0.0));
}

#[test]
fn trinet_agreement_is_the_peers_argmax_agreement_and_pixel_ce_skips_ignored() {
    let dev = Device::Cpu;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
    let (n, c, h, w) = (2usize, 3usize, 4usize, 5usize);
    let a: Vec<f32> = (0..n * c * h * w).map(|_| rng.random::<f32>()).collect();
    let b: Vec<f32> = (0..n * c * h * w).map(|_| rng.random::<f32>()).collect();
    let at = Tensor::from_vec(a.clone(), (n, c, h, w), &dev).unwrap();
    let bt = Tensor::from_vec(b.clone(), (n, c, h, w), &dev).unwrap();
    let m = agreement_mask(&at, &bt)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let argmax = |v: &[f32], i: usize, p: usize| {
        (0..c)
            .max_by(|&x, &y| v[(i * c + x) * h * w + p].total_cmp(&v[(i * c + y) * h * w + p]))
            .unwrap()
    };
    let mut agree = 0;
    for i in 0..n {
        for p in 0..h * w {
            let want = argmax(&a, i, p) == argmax(&b, i, p);
            assert_eq!(m[i * h * w + p] > 0.0, want);
            agree += usize::from(want);
        }
    }
    assert!(agree > 0 && agree < n * h * w);
    // per-pixel CE: -log softmax at the label, 0 where ignored
    let labels: Vec<u32> = (0..n * h * w)
        .map(|i| if i % 4 == 0 { 255 } else { (i % 3) as u32 })
        .collect();
    let lt = Tensor::from_vec(labels.clone(), (n, 1, h, w), &dev).unwrap();
    let (ce, valid) = pixel_ce(&at, &lt, 255).unwrap();
    let ce = ce.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let valid = valid.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for i in 0..n {
        for p in 0..h * w {
            let y = labels[i * h * w + p];
            if y == 255 {
                assert_eq!((ce[i * h * w + p], valid[i * h * w + p]), (0.0, 0.0));
                continue;
            }
            let z: Vec<f64> = (0..c).map(|k| a[(i * c + k) * h * w + p] as f64).collect();
            let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
            assert!((ce[i * h * w + p] as f64 - (lse - z[y as usize])).abs() < 1e-5);
        }
    }
}

#[test]
fn every_noisy_method_trains_on_corrupted_labels_with_finite_losses() {
    let (dir, root) = common::phantom(5, 48);
    let cases = [
        ("Baseline", "{ name = \"CrossEntropyLoss\" }", ""),
        ("Baseline", "{ name = \"GeneralizedCELoss\", q = 0.5 }", ""),
        (
            "CoTeaching",
            "{ name = \"CrossEntropyLoss\" }",
            "params = { forget_rate = 0.3, gradual = 0.5 }",
        ),
        (
            "CoTeaching",
            "{ name = \"CrossEntropyLoss\" }",
            "params = { per_class = true }",
        ),
        ("TriNet", "{ name = \"CrossEntropyLoss\" }", ""),
    ];
    for (k, (method, loss, params)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("run{k}"));
        let section = format!("[noisy]\nmethod = \"{method}\"\n{params}");
        let cfg = common::tiny(
            &root,
            &out,
            &common::Tiny {
                transforms: r#"{ name = "CorruptLabels", target_dice = [0.6, 0.8] }, { name = "NormalizeWithMeanStd" }, { name = "RandomCrop", size = [32, 32] }"#,
                loss,
                iterations: 3,
                section: &section,
                ..Default::default()
            },
        );
        let mut r = Registries::with_builtins();
        register_noise_transform(&mut r.transforms);
        let mut t = TrainerBuilder::new(cfg)
            .registries(r)
            .progress(false)
            .build()
            .unwrap();
        let s = t.run().unwrap();
        assert_eq!(s.iterations, 3, "{method}");
        assert!(
            s.final_loss.is_finite() && s.final_loss > 0.0,
            "{method}: {}",
            s.final_loss
        );
        if *method != "Baseline" {
            let extra = if *method == "TriNet" {
                "latest_net3"
            } else {
                "latest_net2"
            };
            assert!(
                out.join(format!("checkpoints/{extra}.safetensors"))
                    .is_file(),
                "{method}"
            );
        }
    }
}

#[test]
fn dast_ranks_its_criteria_and_trains_on_clean_and_noisy_batches() {
    use medseg_learners::noisy::Rank;
    // the rank of each new value among the last 3
    let mut r = Rank::new(3);
    assert_eq!(r.add(5.0), None);
    assert_eq!(r.add(1.0), None);
    assert_eq!(r.add(3.0), None);
    assert_eq!(r.add(4.0), Some(2)); // [1, 3, 4]: above both others
    assert_eq!(r.add(0.5), Some(0)); // [3, 4, 0.5]
    assert_eq!(r.add(3.5), Some(1)); // [4, 0.5, 3.5]

    let (dir, root) = common::phantom(10, 48);
    let out = dir.path().join("dast");
    let cfg = common::tiny(
        &root,
        &out,
        &common::Tiny {
            dataset: "train_csv = \"train_labelled.csv\"\ntrain_noisy_csv = \"train_unlabelled.csv\"\nnoisy_transforms = [{ name = \"CorruptLabels\", target_dice = [0.6, 0.8] }]",
            net: "DualDecoderUNet",
            seed: 2,
            iterations: 4,
            section: "[noisy]\nmethod = \"DAST\"\nrampup_end = 0.0\nparams = { rank_length = 2 }",
            ..Default::default()
        },
    );
    let mut r = Registries::with_builtins();
    register_noise_transform(&mut r.transforms);
    let mut t = TrainerBuilder::new(cfg.clone())
        .registries(r)
        .progress(false)
        .build()
        .unwrap();
    assert!(t.learner().needs_noisy());
    let s = t.run().unwrap();
    assert_eq!(s.iterations, 4);
    let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
    for line in log.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        for k in ["loss", "sup", "sup_noisy", "dbc", "st"] {
            let v = e[k].as_f64().unwrap();
            assert!(v.is_finite() && v >= 0.0, "{k} = {v}");
        }
    }
    // the noisy manifest is required, and so is a two-decoder network
    let mut bad = cfg.clone();
    bad.dataset.train_noisy_csv = None;
    let mut r = Registries::with_builtins();
    register_noise_transform(&mut r.transforms);
    let e = TrainerBuilder::new(bad)
        .registries(r)
        .progress(false)
        .build()
        .unwrap()
        .run();
    assert!(e.unwrap_err().to_string().contains("train_noisy_csv"));
    let mut bad = cfg;
    bad.network["name"] = serde_json::json!("UNet2D");
    let e = TrainerBuilder::new(bad).build().err().unwrap().to_string();
    assert!(e.contains("DualDecoderUNet"), "{e}");
}

#[test]
fn clslsr_flags_out_of_sample_and_trains_on_the_masks() {
    use medseg_learners::noisy::{prepare, stage_dir, StageReport};
    let (dir, root) = common::phantom(6, 48);
    let out = dir.path().join("clslsr");
    let slsr = r#"{ name = "CombinedLoss", terms = [{ loss = "DiceLoss", weight = 0.5 }, { loss = "SLSRLoss", weight = 0.5 }] }"#;
    let cfg = common::tiny(
        &root,
        &out,
        &common::Tiny {
            transforms: r#"{ name = "CorruptLabels", target_dice = [0.6, 0.8] }, { name = "NormalizeWithMeanStd" }, { name = "RandomCrop", size = [32, 32] }"#,
            loss: slsr,
            iterations: 3,
            section: "[noisy]\nmethod = \"CLSLSR\"\nparams = { folds = 2, fold_iterations = 3 }",
            ..Default::default()
        },
    );
    let regs = || {
        let mut r = Registries::with_builtins();
        register_noise_transform(&mut r.transforms);
        r
    };
    // the learner alone, without the stage's masks, says what is missing
    let mut t = TrainerBuilder::new(cfg.clone())
        .registries(regs())
        .progress(false)
        .build()
        .unwrap();
    let e = t.run().unwrap_err().to_string();
    assert!(e.contains("no noisy mask"), "{e}");

    let ready = prepare(&cfg, &regs, false).unwrap();
    let report: StageReport =
        serde_json::from_slice(&std::fs::read(stage_dir(&cfg).join("confident.json")).unwrap())
            .unwrap();
    // both folds trained, every training pixel was scored out of sample
    for k in 0..2 {
        assert!(stage_dir(&cfg)
            .join(format!("fold{k}/checkpoints/latest.safetensors"))
            .is_file());
    }
    let m = medseg_io::Manifest::read(&ready.dataset.train_csv, None).unwrap();
    let train = medseg_io::Manifest::read(&root.join("train.csv"), None).unwrap();
    assert_eq!(m.rows.len(), train.rows.len());
    assert_eq!(report.pixels, m.rows.len() * 48 * 48);
    let mut flagged = 0.0;
    for (row, orig) in m.rows.iter().zip(&train.rows) {
        let mask = medseg_io::read_image(&m.resolve(row.noisy_mask.as_ref().unwrap())).unwrap();
        assert_eq!(mask.spatial_shape(), &[48, 48]);
        assert!(mask.data.iter().all(|&v| v == 0.0 || v == 1.0));
        flagged += mask.data.sum();
        // the label written is the corrupted one training saw, not the stored one
        let seen = medseg_io::read_label(&m.resolve(row.label.as_ref().unwrap())).unwrap();
        let stored = medseg_io::read_label(&train.resolve(orig.label.as_ref().unwrap())).unwrap();
        assert_eq!(seen.data.shape(), stored.data.shape());
    }
    assert_eq!(flagged as usize, report.flagged);
    assert!(report.label_error_rate.unwrap() > 0.05, "{report:?}");
    // the labels are in the manifest now: the simulation is not run again
    let names: Vec<String> = ready
        .dataset
        .train_transforms
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["NormalizeWithMeanStd", "RandomCrop"]);
    // a second call reuses the stage
    let stamp = std::fs::metadata(stage_dir(&cfg).join("confident.json"))
        .unwrap()
        .modified()
        .unwrap();
    let again = prepare(&cfg, &regs, false).unwrap();
    assert_eq!(again.dataset.train_csv, ready.dataset.train_csv);
    let stamp2 = std::fs::metadata(stage_dir(&cfg).join("confident.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(stamp, stamp2);
    // step 4: SLSR training on the masks
    let mut t = TrainerBuilder::new(ready)
        .registries(regs())
        .progress(false)
        .build()
        .unwrap();
    let s = t.run().unwrap();
    assert!(s.final_loss.is_finite() && s.final_loss > 0.0);
    let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    let f = last["flagged"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&f), "{f}");
}
