//! Phantom data generated on first use, so that a fresh checkout trains with
//! nothing to download.

use crate::error::{LearnError, Result};
use medseg_config::ExperimentConfig;
use medseg_io::{Manifest, ManifestRow};
use medseg_synth::split::{split_subjects, Part, SplitConfig};
use medseg_synth::{generate, PhantomConfig};
use std::path::Path;

/// What [`write_phantom_dataset`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhantomDataset {
    /// Images written.
    pub images: usize,
    /// Subjects per part: train, valid, test.
    pub subjects: [usize; 3],
    /// Labelled training subjects (`train_labelled.csv`).
    pub labelled_subjects: usize,
}

/// The phantom configuration of a kind name (`cardiac2d`, `cardiac3d`,
/// `abdomen2d`, `abdomen3d`).
pub fn phantom_config(kind: &str) -> Result<(PhantomConfig, bool)> {
    Ok(match kind {
        "cardiac2d" => (PhantomConfig::cardiac2d(), true),
        "cardiac3d" => (PhantomConfig::cardiac3d(), false),
        "abdomen2d" => (PhantomConfig::abdomen2d(), true),
        "abdomen3d" => (PhantomConfig::abdomen3d(), false),
        other => {
            return Err(LearnError::Config(format!(
                "dataset.generate.kind `{other}`: expected cardiac2d, cardiac3d, abdomen2d or abdomen3d"
            )))
        }
    })
}

/// Generates `subjects` phantom subjects into `root` (NIfTI): `images/`,
/// `labels/`, `all.csv`, and the by-subject split `train.csv`, `valid.csv`,
/// `test.csv` (60/20/20), `train_labelled.csv` and `train_unlabelled.csv`
/// (10% of training subjects labelled). 2D kinds write one file per slice.
/// Manifests carry a `subject` column.
pub fn write_phantom_dataset(
    cfg: &PhantomConfig,
    two_d: bool,
    subjects: usize,
    seed: u64,
    root: &Path,
) -> Result<PhantomDataset> {
    let phantoms = generate(cfg, subjects, seed)?;
    for d in ["images", "labels"] {
        std::fs::create_dir_all(root.join(d))
            .map_err(|e| medseg_core::Error::io(root.join(d), e))?;
    }
    let mut rows: Vec<(String, ManifestRow)> = Vec::new();
    let mut write = |name: &str,
                     subject: &str,
                     image: &medseg_core::Image,
                     label: &medseg_core::LabelMap|
     -> Result<()> {
        let ip = format!("images/{name}.nii.gz");
        let lp = format!("labels/{name}.nii.gz");
        medseg_io::write_image(&root.join(&ip), image, medseg_io::DataType::F32)?;
        medseg_io::write_label(&root.join(&lp), label)?;
        let mut row = ManifestRow::new(ip).with_label(lp);
        row.extra.insert("subject".into(), subject.to_string());
        rows.push((subject.to_string(), row));
        Ok(())
    };
    for p in &phantoms {
        if two_d {
            for s in p.slices_2d()? {
                write(&s.name, &s.subject, &s.image, &s.label)?;
            }
        } else {
            write(&p.subject, &p.subject, &p.image, &p.label)?;
        }
    }
    let names: Vec<String> = phantoms.iter().map(|p| p.subject.clone()).collect();
    let split = split_subjects(&names, &SplitConfig::default(), seed)?;
    let part_of = |s: &str| split.iter().find(|x| x.subject == s).cloned();
    let save = |file: &str, keep: &dyn Fn(&str) -> bool| -> Result<()> {
        let mut m = Manifest::new(root);
        m.rows = rows
            .iter()
            .filter(|(s, _)| keep(s))
            .map(|(_, r)| r.clone())
            .collect();
        m.write(&root.join(file))?;
        Ok(())
    };
    save("all.csv", &|_| true)?;
    for part in [Part::Train, Part::Valid, Part::Test] {
        save(&format!("{}.csv", part.name()), &|s| {
            part_of(s).is_some_and(|x| x.part == part)
        })?;
    }
    save("train_labelled.csv", &|s| {
        part_of(s).is_some_and(|x| x.part == Part::Train && x.labelled)
    })?;
    save("train_unlabelled.csv", &|s| {
        part_of(s).is_some_and(|x| x.part == Part::Train && !x.labelled)
    })?;
    let count = |p: Part| split.iter().filter(|x| x.part == p).count();
    Ok(PhantomDataset {
        images: rows.len(),
        subjects: [count(Part::Train), count(Part::Valid), count(Part::Test)],
        labelled_subjects: split.iter().filter(|x| x.labelled).count(),
    })
}

/// Generates the phantom data set of `[dataset.generate]` into
/// `dataset.root` when the training manifest does not exist yet. Returns
/// what was written, or `None` when nothing had to be done.
pub fn ensure_dataset(cfg: &ExperimentConfig) -> Result<Option<PhantomDataset>> {
    let train = crate::engine::manifest_path(cfg, &cfg.dataset.train_csv);
    if train.exists() {
        return Ok(None);
    }
    let Some(g) = &cfg.dataset.generate else {
        return Ok(None);
    };
    let (pc, two_d) = phantom_config(&g.kind)?;
    eprintln!(
        "generating {} {} phantom subjects (seed {}) into {}",
        g.subjects,
        g.kind,
        g.seed,
        cfg.dataset.root.display()
    );
    write_phantom_dataset(&pc, two_d, g.subjects, g.seed, &cfg.dataset.root).map(Some)
}
