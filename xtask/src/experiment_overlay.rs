//! `cargo xtask experiment weak-overlay`: the picture of the scribble
//! experiment. Top row, one training slice: the image, its full label, its
//! skeleton scribbles and its random-walk scribbles (background strokes in
//! cyan). Bottom row, one test slice: the ground truth and the predictions
//! of the pCE baseline, of a method and of the fully supervised upper bound
//! (best checkpoints of seed 1).
//!
//! Options: `--method NAME` (default USTM), `--runs DIR` (default
//! runs/experiment_weak), `--out DIR` (default docs/results).

use anyhow::{Context, Result};
use medseg_config::ExperimentConfig;
use medseg_core::Sample;
use medseg_infer::{argmax, Predictor};
use medseg_io::{Dataset, LabelledDataset};
use medseg_learners::{read_manifest, test_pipeline};
use medseg_synth::scribble_transform::{simulate_scribbles, SimulateScribblesParams};
use medseg_transforms::{invert_prediction, Mode, Transform};
use medseg_viz::{montage, overlay_labels, save_png, RgbImage};
use ndarray::{Array2, Axis};
use rand::SeedableRng;
use std::path::{Path, PathBuf};

/// The overlay class that shows background scribbles (cyan).
const BG: u16 = 7;

/// The middle plane of a `[1, H, W]` label as `[H, W]`, background
/// scribbles (class 0) shown as [`BG`] when `scribble`.
pub(crate) fn plane(l: &ndarray::ArrayD<u16>, scribble: bool) -> Array2<u16> {
    let p = l
        .index_axis(Axis(0), 0)
        .into_dimensionality::<ndarray::Ix2>()
        .expect("2D slices")
        .to_owned();
    if scribble {
        p.mapv(|v| if v == 0 { BG } else { v })
    } else {
        p
    }
}

pub(crate) fn image_plane(s: &Sample) -> Array2<f32> {
    s.image
        .data
        .index_axis(Axis(0), 0)
        .into_dimensionality::<ndarray::Ix2>()
        .expect("2D slices")
        .to_owned()
}

pub(crate) fn tile(img: &Array2<f32>, lab: Option<&Array2<u16>>) -> RgbImage {
    let t = match lab {
        Some(l) => overlay_labels(img.view(), l.view(), 0.5, Some(255)),
        None => medseg_viz::grey_to_rgb(img.view(), None),
    };
    t.upscale(2)
}

/// Predicts `s` (already through the test pipeline) with a checkpoint and
/// the config's sliding window.
pub(crate) fn predict(cfg: &ExperimentConfig, ckpt: &Path, s: &Sample) -> Result<Array2<u16>> {
    let dev = candle_core::Device::Cpu;
    let (_vm, net) = medseg_nets::load_network(ckpt, &dev)
        .with_context(|| format!("loading {}", ckpt.display()))?;
    let p = Predictor::new(
        vec![net.as_ref()],
        dev,
        crate::experiment::sliding_window(cfg),
        false,
    )?;
    let probs = invert_prediction(&s.history, p.predict(s.image.data.view())?)?;
    argmax(probs.view())
        .into_dimensionality::<ndarray::Ix2>()
        .context("a 2D prediction")
}

/// The first slice of manifest `csv` in which each of the three cardiac
/// structures covers more than 150 pixels.
pub(crate) fn slice_with_all_structures(cfg: &ExperimentConfig, csv: &Path) -> Result<Sample> {
    let ds = LabelledDataset::new(read_manifest(cfg, csv)?)?;
    (0..ds.len())
        .map(|i| ds.get(i))
        .find(|s| {
            s.as_ref().is_ok_and(|s| {
                let l = &s.label.as_ref().expect("labelled").data;
                (1..4u16).all(|c| l.iter().filter(|&&v| v == c).count() > 150)
            })
        })
        .with_context(|| format!("no slice of {} shows all three structures", csv.display()))?
        .map_err(Into::into)
}

/// Writes `weak_overlays.png`.
pub fn run(args: &[String]) -> Result<()> {
    let (mut method, mut runs, mut out) = (
        "USTM".to_string(),
        PathBuf::from("runs/experiment_weak"),
        PathBuf::from("docs/results"),
    );
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--method" => method = v.clone(),
            "--runs" => runs = PathBuf::from(v),
            "--out" => out = PathBuf::from(v),
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    let root = std::env::current_dir()?;
    let mut cfg = ExperimentConfig::load(&root.join("configs/weak/pce.toml"), &[])?;
    cfg.resolve_paths(&root);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);

    // a training slice with every structure: image, label, two scribbles
    let s = slice_with_all_structures(&cfg, &cfg.dataset.train_csv)?;
    let img = image_plane(&s);
    let full = plane(&s.label.as_ref().expect("labelled").data, false);
    let mut tiles = vec![tile(&img, None), tile(&img, Some(&full))];
    for m in ["skeleton", "random_walk"] {
        let p: SimulateScribblesParams =
            serde_json::from_value(serde_json::json!({ "method": m, "seed": 1 }))?;
        let scr = simulate_scribbles(p)?.apply(s.clone(), &mut rng)?;
        let l = plane(&scr.label.as_ref().expect("scribbled").data, true);
        tiles.push(tile(&img, Some(&l)));
    }

    // a test slice with every structure: truth and three predictions
    let test_csv = cfg.dataset.test_csv.clone().context("test_csv")?;
    let t = slice_with_all_structures(&cfg, &test_csv)?;
    let timg = image_plane(&t);
    let gt = plane(&t.label.as_ref().expect("labelled").data, false);
    tiles.push(tile(&timg, Some(&gt)));
    let tt = test_pipeline(&cfg)?.apply_in(t.clone(), &mut rng, Mode::Inference)?;
    for run in ["baseline", method.as_str(), "full"] {
        let ck = runs.join(run).join("seed1/checkpoints/best.safetensors");
        let pred = predict(&cfg, &ck, &tt)?;
        tiles.push(tile(&timg, Some(&pred)));
    }
    std::fs::create_dir_all(&out)?;
    let path = out.join("weak_overlays.png");
    save_png(&path, &montage(&tiles, 4, 4))?;
    println!(
        "wrote {} (top: image, full label, skeleton and random-walk scribbles of {}; \
         bottom: ground truth and the predictions of pCE, {method} and full supervision on {})",
        path.display(),
        s.name,
        t.name
    );
    Ok(())
}
