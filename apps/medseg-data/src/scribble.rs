//! `medseg-data scribble`: simulate scribble annotations from the full
//! labels of a manifest.

use crate::synth::util::{self, Derived};
use anyhow::Context;
use medseg_synth::named_seed;
use medseg_synth::scribble::{scribble, ScribbleConfig, ScribbleMethod};
use std::path::PathBuf;

/// Curve construction (see `medseg_synth::scribble`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// Along the skeleton of the eroded structure.
    Skeleton,
    /// Random walks inside the eroded structure.
    RandomWalk,
}

/// Arguments of `medseg-data scribble`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Manifest (CSV) with full labels.
    #[arg(long)]
    pub manifest: PathBuf,
    /// Output folder: labels/ with the scribbles, the new manifest (same file
    /// name as the input) and scribble_preview.png.
    #[arg(long)]
    pub out: PathBuf,
    /// Curve construction.
    #[arg(long, value_enum, default_value_t = Method::Skeleton)]
    pub method: Method,
    /// Fraction of each structure's pixels (per slice) to scribble, "lo,hi".
    #[arg(long, default_value = "0.05,0.15", value_parser = util::parse_range)]
    pub coverage: (f64, f64),
    /// Erosion radius in pixels of the region scribbles may use.
    #[arg(long, default_value_t = 2.0)]
    pub erosion: f64,
    /// Brush radius in pixels (0: one-pixel-wide curves).
    #[arg(long, default_value_t = 1.0)]
    pub brush: f64,
    /// Do not scribble the background.
    #[arg(long)]
    pub no_background: bool,
    /// Background scribbles stay within this many pixels of the foreground.
    #[arg(long, default_value_t = 12.0)]
    pub margin: f64,
    /// Value of unannotated pixels.
    #[arg(long, default_value_t = medseg_core::DEFAULT_IGNORE_LABEL)]
    pub ignore: u16,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of samples in the preview montage.
    #[arg(long, default_value_t = 4)]
    pub preview: usize,
}

/// Runs `medseg-data scribble`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = ScribbleConfig {
        method: match args.method {
            Method::Skeleton => ScribbleMethod::Skeleton,
            Method::RandomWalk => ScribbleMethod::RandomWalk,
        },
        coverage: args.coverage,
        erosion_px: args.erosion,
        brush_px: args.brush,
        background: !args.no_background,
        background_margin_px: args.margin,
        ignore: args.ignore,
        ..ScribbleConfig::default()
    };
    cfg.validate().context("scribble settings")?;
    // per class: (scribbled, pixels, structures)
    let mut totals: std::collections::BTreeMap<u16, (usize, usize, usize)> = Default::default();
    let mut fractions: Vec<f64> = Vec::new();
    let (manifest, preview) = util::derive_labels(
        &args.manifest,
        &args.out,
        "scribble",
        args.preview,
        (Some(args.ignore), Some(bg_display_class())),
        |_, row, label| {
            let name = row
                .label
                .as_ref()
                .map(|p| util::stem(p))
                .unwrap_or_default();
            let (scr, report) = scribble(label, &cfg, named_seed(args.seed, &name))?;
            let (mut s, mut n) = (0usize, 0usize);
            for r in &report {
                let t = totals.entry(r.class).or_default();
                t.0 += r.scribbled;
                t.1 += r.pixels;
                t.2 += 1;
                s += r.scribbled;
                n += r.pixels;
                fractions.push(r.fraction());
            }
            Ok(Derived {
                label: scr,
                columns: vec![(
                    "scribble_coverage".into(),
                    format!("{:.4}", s as f64 / n.max(1) as f64),
                )],
                annotated_classes: None,
            })
        },
    )?;
    let (lo, hi) = fractions
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &f| {
            (a.min(f), b.max(f))
        });
    println!(
        "scribble ({:?}, coverage {:.3}-{:.3}) {} images -> {}",
        args.method,
        args.coverage.0,
        args.coverage.1,
        manifest.len(),
        args.out.display()
    );
    for (c, (s, n, k)) in &totals {
        println!(
            "  class {c}: {k} structures, {s} of {n} pixels scribbled ({:.1}%)",
            100.0 * *s as f64 / (*n).max(1) as f64
        );
    }
    if !fractions.is_empty() {
        println!("  per-structure coverage: min {lo:.3}, max {hi:.3}");
    }
    println!(
        "preview: {} (columns: image, full label, scribbles; background scribbles in cyan)",
        preview.display()
    );
    Ok(())
}

/// The overlay class whose colour shows background scribbles (cyan).
fn bg_display_class() -> u16 {
    7
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::test_support::{dataset, temp_dir};
    use crate::synth::Kind;
    use medseg_io::Manifest;

    fn args(manifest: PathBuf, out: PathBuf) -> Args {
        Args {
            manifest,
            out,
            method: Method::Skeleton,
            coverage: (0.1, 0.3),
            erosion: 1.0,
            brush: 1.0,
            no_background: false,
            margin: 6.0,
            ignore: 255,
            seed: 3,
            preview: 2,
        }
    }

    #[test]
    fn scribbles_agree_with_labels_and_repeat() {
        let d = temp_dir("scribble");
        dataset(&d, Kind::Cardiac2d, 3);
        run(args(d.join("all.csv"), d.join("s1"))).unwrap();
        run(args(d.join("all.csv"), d.join("s2"))).unwrap();
        let clean = Manifest::read(&d.join("all.csv"), None).unwrap();
        let scr = Manifest::read(&d.join("s1/all.csv"), None).unwrap();
        assert_eq!(clean.len(), scr.len());
        for (c, s) in clean.rows.iter().zip(&scr.rows) {
            assert_eq!(
                clean.resolve(&c.images[0]).canonicalize().unwrap(),
                scr.resolve(&s.images[0]).canonicalize().unwrap()
            );
            let cl = medseg_io::read_label(&clean.resolve(c.label.as_ref().unwrap())).unwrap();
            let sl = medseg_io::read_label(&scr.resolve(s.label.as_ref().unwrap())).unwrap();
            let mut annotated = 0;
            for (a, b) in sl.data.iter().zip(cl.data.iter()) {
                assert!(*a == 255 || a == b);
                annotated += (*a != 255) as usize;
            }
            let cov: f64 = s.extra["scribble_coverage"].parse().unwrap();
            assert!(annotated > 0 && cov > 0.05 && cov <= 0.3, "coverage {cov}");
            let p2 = d.join("s2").join(s.label.as_ref().unwrap());
            assert_eq!(
                std::fs::read(scr.resolve(s.label.as_ref().unwrap())).unwrap(),
                std::fs::read(p2).unwrap()
            );
        }
        assert!(d.join("s1/scribble_preview.png").is_file());
        let bad = Args {
            coverage: (0.0, 0.2),
            ..args(d.join("all.csv"), d.join("s3"))
        };
        assert!(run(bad).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
