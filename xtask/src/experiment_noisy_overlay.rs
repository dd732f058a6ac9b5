//! `cargo xtask experiment noisy-overlay`: the picture of the noisy-label
//! experiment. Top row, one training slice: the image, its clean label and
//! the noisy labels training saw at the heavier level (dilation/erosion,
//! elastic distortion). Bottom row, one test slice: the clean label and the
//! predictions of the noisy baseline, of a method and of the clean upper
//! bound (best checkpoints of seed 1).
//!
//! Options: `--method NAME` (default DAST), `--runs DIR` (default
//! runs/experiment_noisy), `--out DIR` (default docs/results).

use crate::experiment_overlay::{image_plane, plane, predict, slice_with_all_structures, tile};
use anyhow::{Context, Result};
use medseg_config::ExperimentConfig;
use medseg_learners::test_pipeline;
use medseg_synth::noisy_transform::{corrupt_labels, CorruptLabelsParams};
use medseg_transforms::{Mode, Transform};
use medseg_viz::{montage, save_png};
use rand::SeedableRng;
use std::path::PathBuf;

/// Writes `noisy_overlays.png`.
pub fn run(args: &[String]) -> Result<()> {
    let (mut method, mut runs, mut out) = (
        "DAST".to_string(),
        PathBuf::from("runs/experiment_noisy"),
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
    let mut cfg = ExperimentConfig::load(&root.join("configs/noisy/baseline.toml"), &[])?;
    cfg.resolve_paths(&root);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);

    let s = slice_with_all_structures(&cfg, &cfg.dataset.train_csv)?;
    let img = image_plane(&s);
    let clean = plane(&s.label.as_ref().expect("labelled").data, false);
    let mut tiles = vec![tile(&img, None), tile(&img, Some(&clean))];
    // the experiment's heavier level, as its runs' CorruptLabels draw it
    for (dilate_erode, elastic) in [(true, false), (false, true)] {
        let p: CorruptLabelsParams = serde_json::from_value(serde_json::json!({
            "dilate_erode": dilate_erode, "elastic": elastic,
            "target_dice": [0.55, 0.65], "seed": 1
        }))?;
        let noisy = corrupt_labels(p)?.apply(s.clone(), &mut rng)?;
        tiles.push(tile(
            &img,
            Some(&plane(&noisy.label.expect("corrupted").data, false)),
        ));
    }

    let test_csv = cfg.dataset.test_csv.clone().context("test_csv")?;
    let t = slice_with_all_structures(&cfg, &test_csv)?;
    let timg = image_plane(&t);
    tiles.push(tile(
        &timg,
        Some(&plane(&t.label.as_ref().expect("labelled").data, false)),
    ));
    let tt = test_pipeline(&cfg)?.apply_in(t.clone(), &mut rng, Mode::Inference)?;
    for run in ["baseline", method.as_str(), "full"] {
        let ck = runs.join(run).join("seed1/checkpoints/best.safetensors");
        tiles.push(tile(&timg, Some(&predict(&cfg, &ck, &tt)?)));
    }
    std::fs::create_dir_all(&out)?;
    let path = out.join("noisy_overlays.png");
    save_png(&path, &montage(&tiles, 4, 4))?;
    println!(
        "wrote {} (top: image, clean label, dilated/eroded and elastic noisy labels of {}; \
         bottom: clean label and the predictions of the baseline, {method} and clean training on {})",
        path.display(),
        s.name,
        t.name
    );
    Ok(())
}
