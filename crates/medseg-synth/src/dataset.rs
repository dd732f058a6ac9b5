//! The one writer of phantom data sets: images, labels and CSV manifests
//! split by subject, through `medseg-io`.
//!
//! [`write_phantom_dataset`] writes the layout training runs generate on
//! first use ([`ensure_phantom_dataset`]); [`write_phantom_dataset_with`]
//! adds the choices of `medseg-data synth` (file format, split fractions,
//! a `slice` column, unlabelled manifests without labels) and lets the
//! caller see every sample written (for previews).

use crate::split::{split_subjects, Part, SplitConfig};
use crate::{generate, PhantomConfig, PhantomKind};
use medseg_core::{Error, Image, LabelMap, Result};
use medseg_io::{DataType, Manifest, ManifestRow};
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
/// `abdomen2d`, `abdomen3d`) and whether the kind is 2D (one image per
/// slice).
///
/// # Errors
/// [`Error::Other`] naming the kind and the accepted names for any other
/// name.
pub fn phantom_config(kind: &str) -> Result<(PhantomConfig, bool)> {
    Ok(match kind {
        "cardiac2d" => (PhantomConfig::cardiac2d(), true),
        "cardiac3d" => (PhantomConfig::cardiac3d(), false),
        "abdomen2d" => (PhantomConfig::abdomen2d(), true),
        "abdomen3d" => (PhantomConfig::abdomen3d(), false),
        other => {
            return Err(Error::Other(format!(
                "phantom kind `{other}`: expected cardiac2d, cardiac3d, abdomen2d or abdomen3d"
            )))
        }
    })
}

/// The file format of a phantom data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PhantomFormat {
    /// Compressed NIfTI (`.nii.gz`): float32 images, uint8 labels.
    #[default]
    Nifti,
    /// 16-bit PNG images (intensity plus [`png_intensity_offset`], clamped
    /// to `[0, 65535]`) and 8-bit PNG labels; 2D kinds only.
    Png,
}

impl PhantomFormat {
    /// The file extension without the leading dot: `nii.gz` or `png`.
    pub fn extension(self) -> &'static str {
        match self {
            PhantomFormat::Nifti => "nii.gz",
            PhantomFormat::Png => "png",
        }
    }
}

/// The intensity offset added to images written as PNG (CT-like values can
/// be negative): 0 for the cardiac phantom, 1024 for the abdominal one.
pub fn png_intensity_offset(kind: PhantomKind) -> f32 {
    match kind {
        PhantomKind::Cardiac => 0.0,
        PhantomKind::Abdomen => 1024.0,
    }
}

impl PhantomConfig {
    /// Sets the in-plane size to `n` x `n` pixels (`H` = `W` = `n`) and
    /// scales the in-plane spacing (`spacing[1]`, `spacing[2]`, in
    /// `(D, H, W)` order) so that the field of view stays the same.
    pub fn set_in_plane_size(&mut self, n: usize) {
        let fov_h = self.height as f64 * self.spacing[1];
        let fov_w = self.width as f64 * self.spacing[2];
        self.height = n;
        self.width = n;
        self.spacing[1] = fov_h / n as f64;
        self.spacing[2] = fov_w / n as f64;
    }
}

/// Choices of [`write_phantom_dataset_with`]. The default is the layout of
/// [`write_phantom_dataset`]: NIfTI, the default [`SplitConfig`] (60/20/20,
/// 10% of training subjects labelled), no `slice` column, and
/// `train_unlabelled.csv` keeping its label paths.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PhantomWriteOptions {
    /// File format of images and labels.
    pub format: PhantomFormat,
    /// Fractions of subjects per part and of labelled training subjects.
    pub split: SplitConfig,
    /// Adds a `slice` column (the slice index) to the manifests of 2D kinds.
    pub slice_column: bool,
    /// Leaves the label column out of `train_unlabelled.csv`, so that the
    /// unlabelled part cannot leak labels into training.
    pub unlabelled_without_labels: bool,
}

/// One sample as written, shown to the caller of
/// [`write_phantom_dataset_with`] (e.g. to draw a preview).
#[derive(Debug, Clone, Copy)]
pub struct WrittenSample<'a> {
    /// File name without extension (`subject003` or `subject003_slice04`).
    pub name: &'a str,
    /// The subject it belongs to.
    pub subject: &'a str,
    /// The slice index for 2D kinds, `None` for volumes.
    pub slice: Option<usize>,
    /// The image before any PNG offset: `[1, H, W]` or `[1, D, H, W]`.
    pub image: &'a Image,
    /// Its label map, same shape.
    pub label: &'a LabelMap,
}

/// What [`write_phantom_dataset_with`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhantomReport {
    /// Images, subjects per part and labelled subjects.
    pub dataset: PhantomDataset,
    /// Each manifest written, by file name, with its number of rows, in the
    /// order `all.csv`, `train.csv`, `valid.csv`, `test.csv`,
    /// `train_labelled.csv`, `train_unlabelled.csv`.
    pub manifests: Vec<(&'static str, usize)>,
}

/// The manifest files a phantom data set holds, in writing order.
pub const PHANTOM_MANIFESTS: [&str; 6] = [
    "all.csv",
    "train.csv",
    "valid.csv",
    "test.csv",
    "train_labelled.csv",
    "train_unlabelled.csv",
];

/// Generates `subjects` phantom subjects into `root` (NIfTI): `images/`,
/// `labels/`, `all.csv`, and the by-subject split `train.csv`, `valid.csv`,
/// `test.csv` (60/20/20), `train_labelled.csv` and `train_unlabelled.csv`
/// (10% of training subjects labelled). 2D kinds write one file per slice.
/// Manifests carry a `subject` column. The same arguments give the same
/// bytes.
///
/// # Errors
/// Invalid phantom settings, or a file that cannot be written (named).
pub fn write_phantom_dataset(
    cfg: &PhantomConfig,
    two_d: bool,
    subjects: usize,
    seed: u64,
    root: &Path,
) -> Result<PhantomDataset> {
    write_phantom_dataset_with(
        cfg,
        two_d,
        subjects,
        seed,
        root,
        &PhantomWriteOptions::default(),
        &mut |_| {},
    )
    .map(|r| r.dataset)
}

/// [`write_phantom_dataset`] with the choices of `options`; `on_sample` is
/// called once per image written, in writing order (subjects in order, then
/// slices).
///
/// # Errors
/// [`Error::InvalidValue`] for PNG with a 3D kind, for invalid phantom
/// settings or split fractions; [`Error::Io`] and the like, naming the file,
/// when a file cannot be written.
pub fn write_phantom_dataset_with(
    cfg: &PhantomConfig,
    two_d: bool,
    subjects: usize,
    seed: u64,
    root: &Path,
    options: &PhantomWriteOptions,
    on_sample: &mut dyn FnMut(&WrittenSample<'_>),
) -> Result<PhantomReport> {
    if !two_d && options.format == PhantomFormat::Png {
        return Err(Error::invalid(
            "format",
            "PNG holds 2D images only; use NIfTI for 3D phantoms",
        ));
    }
    let phantoms = generate(cfg, subjects, seed)?;
    for d in ["images", "labels"] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| Error::io(root.join(d), e))?;
    }
    let ext = options.format.extension();
    let offset = png_intensity_offset(cfg.kind);
    let mut rows: Vec<(String, ManifestRow)> = Vec::new();
    let mut write = |sample: &WrittenSample<'_>| -> Result<()> {
        let name = sample.name;
        let ip = format!("images/{name}.{ext}");
        let lp = format!("labels/{name}.{ext}");
        match options.format {
            PhantomFormat::Nifti => {
                medseg_io::write_image(&root.join(&ip), sample.image, DataType::F32)?
            }
            PhantomFormat::Png => {
                let mut im = sample.image.clone();
                im.data.mapv_inplace(|v| (v + offset).clamp(0.0, 65535.0));
                medseg_io::write_image(&root.join(&ip), &im, DataType::U16)?
            }
        }
        medseg_io::write_label(&root.join(&lp), sample.label)?;
        let mut row = ManifestRow::new(ip).with_label(lp);
        row.extra
            .insert("subject".into(), sample.subject.to_string());
        if let (true, Some(k)) = (options.slice_column, sample.slice) {
            row.extra.insert("slice".into(), k.to_string());
        }
        rows.push((sample.subject.to_string(), row));
        on_sample(sample);
        Ok(())
    };
    for p in &phantoms {
        if two_d {
            for s in p.slices_2d()? {
                write(&WrittenSample {
                    name: &s.name,
                    subject: &s.subject,
                    slice: Some(s.slice),
                    image: &s.image,
                    label: &s.label,
                })?;
            }
        } else {
            write(&WrittenSample {
                name: &p.subject,
                subject: &p.subject,
                slice: None,
                image: &p.image,
                label: &p.label,
            })?;
        }
    }
    let names: Vec<String> = phantoms.iter().map(|p| p.subject.clone()).collect();
    let split = split_subjects(&names, &options.split, seed)?;
    let part_of = |s: &str| split.iter().find(|x| x.subject == s).cloned();
    let mut manifests = Vec::with_capacity(PHANTOM_MANIFESTS.len());
    let mut save =
        |file: &'static str, keep: &dyn Fn(&str) -> bool, drop_label: bool| -> Result<()> {
            let mut m = Manifest::new(root);
            m.rows = rows
                .iter()
                .filter(|(s, _)| keep(s))
                .map(|(_, r)| {
                    let mut r = r.clone();
                    if drop_label {
                        r.label = None;
                    }
                    r
                })
                .collect();
            m.write(&root.join(file))?;
            manifests.push((file, m.len()));
            Ok(())
        };
    save("all.csv", &|_| true, false)?;
    for (file, part) in [
        ("train.csv", Part::Train),
        ("valid.csv", Part::Valid),
        ("test.csv", Part::Test),
    ] {
        save(file, &|s| part_of(s).is_some_and(|x| x.part == part), false)?;
    }
    save(
        "train_labelled.csv",
        &|s| part_of(s).is_some_and(|x| x.part == Part::Train && x.labelled),
        false,
    )?;
    save(
        "train_unlabelled.csv",
        &|s| part_of(s).is_some_and(|x| x.part == Part::Train && !x.labelled),
        options.unlabelled_without_labels,
    )?;
    let count = |p: Part| split.iter().filter(|x| x.part == p).count();
    Ok(PhantomReport {
        dataset: PhantomDataset {
            images: rows.len(),
            subjects: [count(Part::Train), count(Part::Valid), count(Part::Test)],
            labelled_subjects: split.iter().filter(|x| x.labelled).count(),
        },
        manifests,
    })
}

/// Generates the phantom data set of kind `kind` (see [`phantom_config`])
/// into `root` when the training manifest `train_csv` (a resolved path)
/// does not exist yet, printing one line about it to stderr. Returns what
/// was written, or `None` when `train_csv` already exists. The kinds
/// `federation2d` and `federation3d` write SegViz's phantom federation
/// instead ([`federation_spec`](crate::federation::federation_spec),
/// [`write_federation`](crate::federation::write_federation); `subjects`
/// per site) and return `None`.
///
/// # Errors
/// An unknown kind, or what [`write_phantom_dataset`] returns.
pub fn ensure_phantom_dataset(
    root: &Path,
    train_csv: &Path,
    kind: &str,
    subjects: usize,
    seed: u64,
) -> Result<Option<PhantomDataset>> {
    if train_csv.exists() {
        return Ok(None);
    }
    if let Some(spec) = crate::federation::federation_spec(kind, subjects, seed) {
        eprintln!(
            "generating the {kind} phantom federation ({subjects} subjects per site, seed {seed}) into {}",
            root.display()
        );
        crate::federation::write_federation(&spec?, root)?;
        return Ok(None);
    }
    let (pc, two_d) = phantom_config(kind)?;
    eprintln!(
        "generating {subjects} {kind} phantom subjects (seed {seed}) into {}",
        root.display()
    );
    write_phantom_dataset(&pc, two_d, subjects, seed, root).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("medseg_synth_{name}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn small() -> PhantomConfig {
        let mut c = PhantomConfig::cardiac2d();
        c.slices = 2;
        c.set_in_plane_size(48);
        c
    }

    fn subjects_of(m: &Manifest) -> BTreeSet<String> {
        m.rows.iter().map(|r| r.extra["subject"].clone()).collect()
    }

    #[test]
    fn writes_images_labels_and_split_manifests() {
        let d = temp_dir("dataset");
        let ds = write_phantom_dataset(&small(), true, 6, 11, &d).unwrap();
        assert_eq!(
            ds,
            PhantomDataset {
                images: 12,
                subjects: [4, 1, 1],
                labelled_subjects: 1
            }
        );
        let read = |n: &str| Manifest::read(&d.join(n), None).unwrap();
        let all = read("all.csv");
        assert_eq!(all.len(), 12);
        all.check_files().unwrap();
        assert_eq!(
            all.rows[3].images[0],
            PathBuf::from("images/subject001_slice01.nii.gz")
        );
        assert_eq!(all.rows[3].extra["subject"], "subject001");
        assert!(!all.rows[3].extra.contains_key("slice"));
        let (tr, va, te) = (read("train.csv"), read("valid.csv"), read("test.csv"));
        assert_eq!((tr.len(), va.len(), te.len()), (8, 2, 2));
        assert!(subjects_of(&tr).is_disjoint(&subjects_of(&va)));
        assert!(subjects_of(&tr).is_disjoint(&subjects_of(&te)));
        assert!(subjects_of(&va).is_disjoint(&subjects_of(&te)));
        let (l, u) = (read("train_labelled.csv"), read("train_unlabelled.csv"));
        assert_eq!((subjects_of(&l).len(), subjects_of(&u).len()), (1, 3));
        assert!(subjects_of(&l).is_subset(&subjects_of(&tr)));
        assert!(u.rows.iter().all(|r| r.label.is_some()));
        let label = medseg_io::read_label(&all.resolve(all.rows[0].label.as_ref().unwrap()));
        assert_eq!(label.unwrap().data.shape(), &[1, 48, 48]);
        // same arguments, same bytes
        let d2 = temp_dir("dataset_again");
        write_phantom_dataset(&small(), true, 6, 11, &d2).unwrap();
        for f in PHANTOM_MANIFESTS
            .iter()
            .map(|s| s.to_string())
            .chain(["images/subject002_slice01.nii.gz".to_string()])
        {
            assert_eq!(
                std::fs::read(d.join(&f)).unwrap(),
                std::fs::read(d2.join(&f)).unwrap(),
                "{f}"
            );
        }
        std::fs::remove_dir_all(&d).unwrap();
        std::fs::remove_dir_all(&d2).unwrap();
    }

    #[test]
    fn options_png_slice_column_and_unlabelled_without_labels() {
        let d = temp_dir("dataset_png");
        let mut cfg = PhantomConfig::abdomen2d();
        cfg.slices = 2;
        cfg.set_in_plane_size(48);
        let options = PhantomWriteOptions {
            format: PhantomFormat::Png,
            split: SplitConfig {
                valid: 0.25,
                test: 0.25,
                labelled: 0.5,
            },
            slice_column: true,
            unlabelled_without_labels: true,
        };
        let mut seen = Vec::new();
        let report = write_phantom_dataset_with(&cfg, true, 4, 3, &d, &options, &mut |s| {
            seen.push((s.name.to_string(), s.slice))
        })
        .unwrap();
        assert_eq!(seen.len(), 8);
        assert_eq!(seen[1], ("subject000_slice01".to_string(), Some(1)));
        assert_eq!(report.dataset.subjects, [2, 1, 1]);
        assert_eq!(report.dataset.labelled_subjects, 1);
        let rows: Vec<usize> = report.manifests.iter().map(|m| m.1).collect();
        assert_eq!(rows, [8, 4, 2, 2, 2, 2]);
        let all = Manifest::read(&d.join("all.csv"), None).unwrap();
        assert_eq!(all.rows[1].extra["slice"], "1");
        assert!(all.rows[1].images[0].to_string_lossy().ends_with(".png"));
        let image = medseg_io::read_image(&all.resolve(&all.rows[1].images[0])).unwrap();
        // abdominal intensities were shifted by 1024 to fit an unsigned PNG
        assert!(image.data.iter().all(|&v| v >= 0.0));
        let u = Manifest::read(&d.join("train_unlabelled.csv"), None).unwrap();
        assert!(u.rows.iter().all(|r| r.label.is_none()));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn png_volumes_and_unknown_kinds_are_refused() {
        let options = PhantomWriteOptions {
            format: PhantomFormat::Png,
            ..Default::default()
        };
        let d = temp_dir("never_written");
        let err = write_phantom_dataset_with(
            &PhantomConfig::cardiac3d(),
            false,
            1,
            1,
            &d,
            &options,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("2D images only"), "{err}");
        assert!(!d.exists());
        let err = phantom_config("cardiac4d").unwrap_err().to_string();
        assert_eq!(
            err,
            "phantom kind `cardiac4d`: expected cardiac2d, cardiac3d, abdomen2d or abdomen3d"
        );
        assert!(phantom_config("abdomen3d").is_ok_and(|(_, two_d)| !two_d));
    }

    #[test]
    fn ensure_generates_only_when_the_training_manifest_is_missing() {
        let d = temp_dir("ensure");
        let train = d.join("train.csv");
        // the tiny default-size run: 6 cardiac 2D subjects
        let first = ensure_phantom_dataset(&d, &train, "cardiac2d", 6, 2).unwrap();
        assert_eq!(
            first.map(|p| p.images),
            Some(6 * PhantomConfig::cardiac2d().slices)
        );
        assert!(train.is_file());
        assert_eq!(
            ensure_phantom_dataset(&d, &train, "cardiac2d", 6, 2).unwrap(),
            None
        );
        assert!(ensure_phantom_dataset(&d, &d.join("x.csv"), "liver", 6, 2).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
