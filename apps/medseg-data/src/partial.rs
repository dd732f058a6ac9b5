//! `medseg-data partial`: keep only some classes per image or per site.

use crate::synth::util::{self, Derived};
use anyhow::{bail, Context};
use medseg_synth::named_seed;
use medseg_synth::partial::{assign_sites, keep_classes, random_subset, Dropped};
use std::collections::HashMap;
use std::path::PathBuf;

/// How the kept classes are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A random subset per image (`--classes-per-image`).
    PerImage,
    /// Subjects are dealt to sites; each site keeps its own classes (`--sites`).
    PerSite,
}

/// What dropped classes become.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DroppedAs {
    /// Background (0).
    Background,
    /// The ignore value (`--ignore`).
    Ignore,
}

/// Arguments of `medseg-data partial`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Manifest (CSV) with full labels.
    #[arg(long)]
    pub manifest: PathBuf,
    /// Output folder: labels/, the new manifest (same file name, with
    /// `annotated_classes` and, per site, `site` columns) and partial_preview.png.
    #[arg(long)]
    pub out: PathBuf,
    /// How kept classes are chosen.
    #[arg(long, value_enum, default_value_t = Mode::PerSite)]
    pub mode: Mode,
    /// Per-site classes: sites separated by ';', classes by ',' (e.g. "1;2;3,4").
    #[arg(long, default_value = "1;2;3,4")]
    pub sites: String,
    /// Per-image number of kept classes, "min,max".
    #[arg(long, default_value = "1,2", value_parser = util::parse_range)]
    pub classes_per_image: (f64, f64),
    /// Foreground classes to choose from per image (default: all found).
    #[arg(long)]
    pub classes: Option<String>,
    /// What dropped classes become.
    #[arg(long, value_enum, default_value_t = DroppedAs::Background)]
    pub dropped: DroppedAs,
    /// Value of unannotated pixels.
    #[arg(long, default_value_t = medseg_core::DEFAULT_IGNORE_LABEL)]
    pub ignore: u16,
    /// Column naming the subject (sites are assigned by subject).
    #[arg(long, default_value = "subject")]
    pub subject_column: String,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of samples in the preview montage.
    #[arg(long, default_value_t = 4)]
    pub preview: usize,
}

fn parse_classes(s: &str, what: &str) -> anyhow::Result<Vec<u16>> {
    let mut v = Vec::new();
    for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        v.push(
            p.parse::<u16>()
                .with_context(|| format!("{what}: {p:?} is not a class id"))?,
        );
    }
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// Runs `medseg-data partial`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let dropped = match args.dropped {
        DroppedAs::Background => Dropped::Background,
        DroppedAs::Ignore => Dropped::Ignore(args.ignore),
    };
    let manifest = util::read_manifest(&args.manifest)?;
    let sites: Vec<Vec<u16>> = args
        .sites
        .split(';')
        .map(|s| parse_classes(s, "--sites"))
        .collect::<anyhow::Result<_>>()?;
    if args.mode == Mode::PerSite && (sites.is_empty() || sites.iter().any(|s| s.is_empty())) {
        bail!(
            "--sites {:?}: every site needs at least one class",
            args.sites
        );
    }
    let subjects: Vec<String> = manifest
        .rows
        .iter()
        .map(|r| util::subject_of(r, &args.subject_column))
        .collect();
    let site_of: HashMap<String, usize> = assign_sites(&subjects, sites.len(), args.seed)?
        .into_iter()
        .collect();
    let (min_k, max_k) = args.classes_per_image;
    if min_k < 0.0 || max_k < 1.0 || min_k.fract() != 0.0 || max_k.fract() != 0.0 {
        bail!("--classes-per-image {min_k},{max_k}: need whole numbers with max >= 1");
    }
    let universe = match &args.classes {
        Some(c) => Some(parse_classes(c, "--classes")?),
        None => None,
    };
    let mut kept_counts: std::collections::BTreeMap<u16, usize> = Default::default();
    let mut per_site = vec![0usize; sites.len()];
    let (out_manifest, preview) = util::derive_labels(
        &args.manifest,
        &args.out,
        "partial",
        args.preview,
        (Some(args.ignore), None),
        |i, row, label| {
            let (keep, mut columns) = match args.mode {
                Mode::PerSite => {
                    let site = site_of[&subjects[i]];
                    per_site[site] += 1;
                    (
                        sites[site].clone(),
                        vec![("site".to_string(), site.to_string())],
                    )
                }
                Mode::PerImage => {
                    let pool: Vec<u16> = match &universe {
                        Some(u) => u.clone(),
                        None => label
                            .classes()
                            .into_iter()
                            .filter(|&c| c != 0 && c != args.ignore)
                            .collect(),
                    };
                    let name = row
                        .label
                        .as_ref()
                        .map(|p| util::stem(p))
                        .unwrap_or_default();
                    let keep = random_subset(
                        &pool,
                        min_k as usize,
                        max_k as usize,
                        named_seed(args.seed, &name),
                    )?;
                    (keep, Vec::new())
                }
            };
            for c in &keep {
                *kept_counts.entry(*c).or_default() += 1;
            }
            let out = keep_classes(label, &keep, dropped, Some(args.ignore));
            let mut annotated = vec![0u16];
            annotated.extend(keep.iter().copied());
            columns.push((
                "kept_classes".into(),
                keep.iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(";"),
            ));
            Ok(Derived {
                label: out,
                columns,
                annotated_classes: Some(annotated),
            })
        },
    )?;
    println!(
        "partial ({:?}, dropped classes -> {:?}) {} images -> {}",
        args.mode,
        args.dropped,
        out_manifest.len(),
        args.out.display()
    );
    if args.mode == Mode::PerSite {
        for (k, s) in sites.iter().enumerate() {
            println!("  site {k}: classes {s:?}, {} images", per_site[k]);
        }
    }
    for (c, n) in &kept_counts {
        println!("  class {c} kept in {n} images");
    }
    println!(
        "preview: {} (columns: image, full label, partial label)",
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

    fn args(d: &std::path::Path, mode: Mode, dropped: DroppedAs) -> Args {
        Args {
            manifest: d.join("all.csv"),
            out: d.join(format!("p_{mode:?}_{dropped:?}")),
            mode,
            sites: "1;2;3,4".into(),
            classes_per_image: (1.0, 2.0),
            classes: None,
            dropped,
            ignore: 255,
            subject_column: "subject".into(),
            seed: 4,
            preview: 2,
        }
    }

    #[test]
    fn partial_labels_keep_only_their_classes() {
        let d = temp_dir("partial");
        dataset(&d, Kind::Abdomen2d, 6);
        let clean = Manifest::read(&d.join("all.csv"), None).unwrap();
        for (mode, dropped) in [
            (Mode::PerSite, DroppedAs::Background),
            (Mode::PerImage, DroppedAs::Ignore),
        ] {
            let a = args(&d, mode, dropped);
            let out = a.out.clone();
            run(a).unwrap();
            let m = Manifest::read(&out.join("all.csv"), None).unwrap();
            let mut site_of_subject = std::collections::HashMap::new();
            for (c, p) in clean.rows.iter().zip(&m.rows) {
                let cl = medseg_io::read_label(&clean.resolve(c.label.as_ref().unwrap())).unwrap();
                let pl = medseg_io::read_label(&m.resolve(p.label.as_ref().unwrap())).unwrap();
                let kept: Vec<u16> = p
                    .annotated_classes
                    .clone()
                    .unwrap()
                    .into_iter()
                    .filter(|&c| c != 0)
                    .collect();
                for (a, b) in cl.data.iter().zip(pl.data.iter()) {
                    if kept.contains(a) || *a == 0 {
                        assert_eq!(a, b);
                    } else {
                        assert_eq!(*b, if dropped == DroppedAs::Ignore { 255 } else { 0 });
                    }
                }
                if mode == Mode::PerSite {
                    let site = p.extra["site"].clone();
                    // one site per subject
                    let prev = site_of_subject.insert(p.extra["subject"].clone(), site.clone());
                    assert!(prev.is_none() || prev == Some(site));
                } else {
                    assert!((1..=2).contains(&kept.len()));
                }
            }
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
