//! `medseg-data split`: split a manifest by subject into train / valid / test
//! and labelled / unlabelled training parts.

use crate::synth::util;
use anyhow::Context;
use medseg_io::Manifest;
use medseg_synth::split::{split_subjects, Part, SplitConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Arguments of `medseg-data split`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The manifest (CSV) to split.
    #[arg(long)]
    pub manifest: PathBuf,
    /// Output folder for train.csv, valid.csv, test.csv, train_labelled.csv
    /// and train_unlabelled.csv (paths are rewritten relative to it).
    #[arg(long)]
    pub out: PathBuf,
    /// Fraction of subjects for validation.
    #[arg(long, default_value_t = 0.2)]
    pub valid: f64,
    /// Fraction of subjects for testing.
    #[arg(long, default_value_t = 0.2)]
    pub test: f64,
    /// Fraction of training subjects whose labels are kept.
    #[arg(long, default_value_t = 0.1)]
    pub labelled: f64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Column naming the subject (rows without it are their own subject,
    /// named by the image file).
    #[arg(long, default_value = "subject")]
    pub subject_column: String,
    /// Number of samples in the preview montage.
    #[arg(long, default_value_t = 4)]
    pub preview: usize,
}

/// Writes the five split manifests of `manifest` into `out` and returns a
/// one-line summary.
pub fn write_splits(
    manifest: &Manifest,
    subject_column: &str,
    cfg: &SplitConfig,
    seed: u64,
    out: &Path,
) -> anyhow::Result<String> {
    let subjects: Vec<String> = manifest
        .rows
        .iter()
        .map(|r| util::subject_of(r, subject_column))
        .collect();
    let split = split_subjects(&subjects, cfg, seed).context("splitting subjects")?;
    let by_subject: HashMap<&str, (Part, bool)> = split
        .iter()
        .map(|s| (s.subject.as_str(), (s.part, s.labelled)))
        .collect();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let rebased = util::rebase(manifest, out);
    let pick = |f: &dyn Fn(Part, bool) -> bool, drop_label: bool| -> Manifest {
        let mut m = rebased.clone();
        m.source = None;
        m.rows = rebased
            .rows
            .iter()
            .zip(&subjects)
            .filter(|(_, s)| {
                let (p, l) = by_subject[s.as_str()];
                f(p, l)
            })
            .map(|(r, _)| {
                let mut r = r.clone();
                if drop_label {
                    r.label = None;
                    r.annotated_classes = None;
                }
                r
            })
            .collect();
        m
    };
    let parts: [(&str, Manifest); 5] = [
        ("train.csv", pick(&|p, _| p == Part::Train, false)),
        ("valid.csv", pick(&|p, _| p == Part::Valid, false)),
        ("test.csv", pick(&|p, _| p == Part::Test, false)),
        (
            "train_labelled.csv",
            pick(&|p, l| p == Part::Train && l, false),
        ),
        (
            "train_unlabelled.csv",
            pick(&|p, l| p == Part::Train && !l, true),
        ),
    ];
    let mut summary = Vec::new();
    for (name, m) in &parts {
        let path = out.join(name);
        m.write(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        summary.push(format!("{} {}", name.trim_end_matches(".csv"), m.len()));
    }
    let n = |p: Part| split.iter().filter(|s| s.part == p).count();
    Ok(format!(
        "subjects: train {} ({} labelled), valid {}, test {}; rows: {}",
        n(Part::Train),
        split.iter().filter(|s| s.labelled).count(),
        n(Part::Valid),
        n(Part::Test),
        summary.join(", ")
    ))
}

/// Runs `medseg-data split`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let manifest = util::read_manifest(&args.manifest)?;
    let cfg = SplitConfig {
        valid: args.valid,
        test: args.test,
        labelled: args.labelled,
    };
    let summary = write_splits(&manifest, &args.subject_column, &cfg, args.seed, &args.out)?;
    println!(
        "split {} ({} rows) -> {}",
        args.manifest.display(),
        manifest.len(),
        args.out.display()
    );
    println!("{summary}");
    // preview: labelled training samples
    let lab = util::read_manifest(&args.out.join("train_labelled.csv"))?;
    let mut tiles = Vec::new();
    for row in lab.rows.iter().take(args.preview) {
        let (Some(ip), Some(lp)) = (row.images.first(), row.label.as_ref()) else {
            continue;
        };
        let image = medseg_io::read_image(&lab.resolve(ip))
            .with_context(|| format!("reading {}", lab.resolve(ip).display()))?;
        let label = medseg_io::read_label(&lab.resolve(lp))
            .with_context(|| format!("reading {}", lab.resolve(lp).display()))?;
        tiles.push(util::tile_pair(&image, &label, None, None));
    }
    let preview = args.out.join("split_preview.png");
    util::save_montage(&preview, &tiles)?;
    if !tiles.is_empty() {
        println!("preview: {}", preview.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::test_support::{dataset, temp_dir};
    use crate::synth::Kind;
    use std::collections::BTreeSet;

    #[test]
    fn split_by_subject_into_another_folder() {
        let d = temp_dir("split");
        dataset(&d, Kind::Cardiac2d, 10);
        let out = d.join("nested/split");
        let a = |seed| Args {
            manifest: d.join("all.csv"),
            out: out.clone(),
            valid: 0.2,
            test: 0.3,
            labelled: 0.5,
            seed,
            subject_column: "subject".into(),
            preview: 2,
        };
        run(a(9)).unwrap();
        let read = |n: &str| Manifest::read(&out.join(n), None).unwrap();
        let subjects = |m: &Manifest| {
            m.rows
                .iter()
                .map(|r| r.extra["subject"].clone())
                .collect::<BTreeSet<_>>()
        };
        let (tr, va, te) = (read("train.csv"), read("valid.csv"), read("test.csv"));
        assert_eq!(
            (
                subjects(&tr).len(),
                subjects(&va).len(),
                subjects(&te).len()
            ),
            (5, 2, 3)
        );
        assert_eq!(tr.len() + va.len() + te.len(), 20);
        assert!(subjects(&tr).is_disjoint(&subjects(&te)));
        let (l, u) = (read("train_labelled.csv"), read("train_unlabelled.csv"));
        assert_eq!(subjects(&l).len(), 3); // round(5 * 0.5) = 3 (half away from zero)
        assert!(u.rows.iter().all(|r| r.label.is_none()));
        // paths were rewritten and still point at the files
        tr.check_files().unwrap();
        let first = std::fs::read(out.join("train.csv")).unwrap();
        run(a(9)).unwrap();
        assert_eq!(first, std::fs::read(out.join("train.csv")).unwrap());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
