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
