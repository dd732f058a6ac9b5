//! `medseg-data noisy`: simulate noisy labels from the clean labels of a
//! manifest and report their Dice against the clean ones.

use crate::synth::util::{self, Derived};
use anyhow::Context;
use medseg_synth::named_seed;
use medseg_synth::noisy::{corrupt, NoisyConfig};
use std::path::PathBuf;

/// Arguments of `medseg-data noisy`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Manifest (CSV) with clean labels.
    #[arg(long)]
    pub manifest: PathBuf,
    /// Output folder: labels/ with the noisy labels, the new manifest (same
    /// file name as the input, with `noisy_dice` and `corrupted` columns) and
    /// noisy_preview.png.
    #[arg(long)]
    pub out: PathBuf,
    /// Probability that an image is corrupted.
    #[arg(long, default_value_t = 0.5)]
    pub probability: f64,
    /// Corruptions allowed, comma-separated among dilate-erode, elastic, shift.
    #[arg(long, default_value = "dilate-erode,elastic,shift")]
    pub ops: String,
    /// Dilation/erosion radius range in mm, "lo,hi".
    #[arg(long, default_value = "1.5,4.5", value_parser = util::parse_range)]
    pub radius: (f64, f64),
    /// Elastic displacement amplitude range in mm, "lo,hi".
    #[arg(long, default_value = "1.5,4", value_parser = util::parse_range)]
    pub elastic: (f64, f64),
    /// Shift length range in mm, "lo,hi".
    #[arg(long, default_value = "1.5,5", value_parser = util::parse_range)]
    pub shift: (f64, f64),
    /// Probability of flipping a whole structure's label to another class.
    #[arg(long, default_value_t = 0.05)]
    pub flip: f64,
    /// Bring each corrupted image's mean foreground Dice into "lo,hi".
    #[arg(long, value_parser = util::parse_range)]
    pub target_dice: Option<(f64, f64)>,
    /// Value of unannotated pixels (left alone).
    #[arg(long, default_value_t = medseg_core::DEFAULT_IGNORE_LABEL)]
    pub ignore: u16,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of samples in the preview montage.
    #[arg(long, default_value_t = 4)]
    pub preview: usize,
}

/// Runs `medseg-data noisy`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = NoisyConfig {
        probability: args.probability,
        dilate_erode: false,
        elastic: false,
        shift: false,
        radius_mm: args.radius,
        elastic_mm: args.elastic,
        shift_mm: args.shift,
        flip_probability: args.flip,
        target_dice: args.target_dice,
        ignore: Some(args.ignore),
        ..NoisyConfig::default()
    };
    for op in args.ops.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match op {
            "dilate-erode" => cfg.dilate_erode = true,
            "elastic" => cfg.elastic = true,
            "shift" => cfg.shift = true,
            other => anyhow::bail!(
                "--ops: unknown corruption {other:?}; expected dilate-erode, elastic or shift"
            ),
        }
    }
    cfg.validate().context("noisy-label settings")?;
    let mut dices: Vec<f64> = Vec::new();
    let mut corrupted = 0usize;
    let mut off_target = 0usize;
    let (manifest, preview) = util::derive_labels(
        &args.manifest,
        &args.out,
        "noisy",
        args.preview,
        (Some(args.ignore), None),
        |_, row, label| {
            let name = row
                .label
                .as_ref()
                .map(|p| util::stem(p))
                .unwrap_or_default();
            let (noisy, rep) = corrupt(label, &cfg, named_seed(args.seed, &name))?;
            dices.push(rep.dice);
            corrupted += rep.corrupted as usize;
            off_target += (!rep.in_target) as usize;
            Ok(Derived {
                label: noisy,
                columns: vec![
                    ("noisy_dice".into(), format!("{:.4}", rep.dice)),
                    ("corrupted".into(), (rep.corrupted as u8).to_string()),
                    ("noise_ops".into(), rep.operations.join(" ")),
                ],
                annotated_classes: None,
            })
        },
    )?;
    let n = dices.len().max(1) as f64;
    let mean = dices.iter().sum::<f64>() / n;
    let corrupted_dices: Vec<f64> = dices.iter().copied().filter(|d| *d < 1.0).collect();
    let (lo, hi) = corrupted_dices
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &d| {
            (a.min(d), b.max(d))
        });
    println!(
        "noisy (p = {}) {} images, {} corrupted -> {}",
        args.probability,
        manifest.len(),
        corrupted,
        args.out.display()
    );
    println!("  Dice noisy vs clean: mean {mean:.4} over all images");
    if !corrupted_dices.is_empty() {
        let m = corrupted_dices.iter().sum::<f64>() / corrupted_dices.len() as f64;
        println!("  over images changed: mean {m:.4}, min {lo:.4}, max {hi:.4}");
    }
    if let Some((a, b)) = args.target_dice {
        println!(
            "  target Dice {a}-{b}: {} corrupted images outside it",
            off_target
        );
    }
    println!(
        "preview: {} (columns: image, clean label, noisy label)",
        preview.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::test_support::{dataset, temp_dir};
    use crate::synth::Kind;
    use medseg_io::Manifest;

    #[test]
    fn noisy_dice_column_matches_files_and_target() {
        let d = temp_dir("noisy");
        dataset(&d, Kind::Cardiac2d, 3);
        let args = |ops: &str| Args {
            manifest: d.join("all.csv"),
            out: d.join("n"),
            probability: 1.0,
            ops: ops.into(),
            radius: (1.5, 4.5),
            elastic: (1.5, 4.0),
            shift: (1.5, 5.0),
            flip: 0.0,
            target_dice: Some((0.6, 0.85)),
            ignore: 255,
            seed: 2,
            preview: 2,
        };
        run(args("dilate-erode,elastic,shift")).unwrap();
        let clean = Manifest::read(&d.join("all.csv"), None).unwrap();
        let noisy = Manifest::read(&d.join("n/all.csv"), None).unwrap();
        let mut inside = 0;
        for (c, n) in clean.rows.iter().zip(&noisy.rows) {
            let cl = medseg_io::read_label(&clean.resolve(c.label.as_ref().unwrap())).unwrap();
            let nl = medseg_io::read_label(&noisy.resolve(n.label.as_ref().unwrap())).unwrap();
            let dice = medseg_synth::mean_foreground_dice(&cl, &nl, Some(255)).unwrap();
            let col: f64 = n.extra["noisy_dice"].parse().unwrap();
            assert!((dice - col).abs() < 1e-4, "column {col} vs files {dice}");
            assert_eq!(n.extra["corrupted"], "1");
            inside += (0.6..=0.85).contains(&dice) as usize;
        }
        assert!(
            inside * 10 >= clean.len() * 9,
            "{inside} of {} in range",
            clean.len()
        );
        assert!(run(args("dilate,blur")).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
