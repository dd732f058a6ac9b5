//! `medseg-data synth`: generate phantom images and labels with manifests.
//!
//! Also holds the helpers the annotation subcommands share ([`util`]).

use anyhow::{bail, Context};
use medseg_synth::dataset::{png_intensity_offset, PHANTOM_MANIFESTS};
use medseg_synth::split::SplitConfig;
use medseg_synth::{write_phantom_dataset_with, PhantomConfig, PhantomFormat, PhantomWriteOptions};
use std::path::PathBuf;

/// Which phantom set to draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Cardiac short-axis slices (2D), classes 0 bg, 1 RV, 2 myocardium, 3 LV.
    Cardiac2d,
    /// Cardiac short-axis volumes (3D), same classes.
    Cardiac3d,
    /// Abdominal CT-like slices (2D), classes 1 liver, 2 spleen, 3 left kidney, 4 right kidney.
    Abdomen2d,
    /// Abdominal CT-like volumes (3D), same classes.
    Abdomen3d,
}

/// Output file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Compressed NIfTI (`.nii.gz`), float32 images, uint8 labels.
    Nii,
    /// 16-bit PNG images (intensity + offset, see the summary) and 8-bit PNG
    /// labels; 2D kinds only.
    Png,
}

/// Arguments of `medseg-data synth`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Phantom family and dimensionality.
    #[arg(long, value_enum)]
    pub kind: Kind,
    /// Number of subjects (2D kinds write one image per slice of each subject).
    #[arg(long, default_value_t = 20)]
    pub subjects: usize,
    /// Random seed; the same seed gives the same files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output folder (created).
    #[arg(long)]
    pub out: PathBuf,
    /// File format.
    #[arg(long, value_enum, default_value_t = Format::Nii)]
    pub format: Format,
    /// Slices per subject (default: 8 for 2D kinds, 10 cardiac / 20 abdominal volumes).
    #[arg(long)]
    pub slices: Option<usize>,
    /// In-plane size in pixels, `H` = `W` (default 128; 96 for abdominal volumes).
    #[arg(long)]
    pub size: Option<usize>,
    /// Fraction of subjects for validation in the default split.
    #[arg(long, default_value_t = 0.2)]
    pub valid: f64,
    /// Fraction of subjects for testing in the default split.
    #[arg(long, default_value_t = 0.2)]
    pub test: f64,
    /// Fraction of training subjects kept labelled (train_labelled.csv).
    #[arg(long, default_value_t = 0.1)]
    pub labelled: f64,
    /// Number of samples in the preview montage.
    #[arg(long, default_value_t = 6)]
    pub preview: usize,
}

/// Runs `medseg-data synth`: checks the arguments, then writes the data set
/// with [`medseg_synth::write_phantom_dataset_with`] (drawing the preview
/// from the samples it writes), `phantom.json` and `preview.png`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let (mut cfg, three_d) = match args.kind {
        Kind::Cardiac2d => (PhantomConfig::cardiac2d(), false),
        Kind::Cardiac3d => (PhantomConfig::cardiac3d(), true),
        Kind::Abdomen2d => (PhantomConfig::abdomen2d(), false),
        Kind::Abdomen3d => (PhantomConfig::abdomen3d(), true),
    };
    if three_d && args.format == Format::Png {
        bail!(
            "--format png holds 2D images only; use --format nii for --kind {:?}",
            args.kind
        );
    }
    if args.subjects == 0 {
        bail!("--subjects must be at least 1");
    }
    if let Some(s) = args.slices {
        cfg.slices = s;
    }
    if let Some(n) = args.size {
        // keep the field of view: scale the in-plane spacing
        cfg.set_in_plane_size(n);
    }
    cfg.validate()
        .context("phantom settings (--slices, --size)")?;
    let options = PhantomWriteOptions {
        format: match args.format {
            Format::Nii => PhantomFormat::Nifti,
            Format::Png => PhantomFormat::Png,
        },
        split: SplitConfig {
            valid: args.valid,
            test: args.test,
            labelled: args.labelled,
        },
        slice_column: true,
        unlabelled_without_labels: true,
    };
    let mut previews = Vec::new();
    let report = write_phantom_dataset_with(
        &cfg,
        !three_d,
        args.subjects,
        args.seed,
        &args.out,
        &options,
        &mut |s| {
            if previews.len() < args.preview
                && (s.slice.is_none() || s.slice == Some(cfg.slices / 3))
            {
                previews.push(util::tile_pair(s.image, s.label, None, None));
            }
        },
    )
    .with_context(|| format!("writing the phantom data set into {}", args.out.display()))?;
    let preview = args.out.join("preview.png");
    util::save_montage(&preview, &previews)?;
    let info = serde_json::json!({
        "kind": format!("{:?}", args.kind).to_lowercase(),
        "subjects": args.subjects,
        "seed": args.seed,
        "classes": cfg.kind.class_names(),
        "config": cfg,
        "png_intensity_offset": if args.format == Format::Png { png_intensity_offset(cfg.kind) } else { 0.0 },
    });
    let info_path = args.out.join("phantom.json");
    util::write_text(&info_path, &serde_json::to_string_pretty(&info)?)?;
    let ds = &report.dataset;
    println!(
        "synth {:?}: {} subjects, {} images of {:?} (spacing {} mm) in {:.1} s -> {}",
        args.kind,
        args.subjects,
        ds.images,
        if three_d {
            vec![cfg.slices, cfg.height, cfg.width]
        } else {
            vec![cfg.height, cfg.width]
        },
        if three_d {
            &cfg.spacing[..]
        } else {
            &cfg.spacing[1..]
        }
        .iter()
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join(" x "),
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    println!("classes: {}", cfg.kind.class_names().join(", "));
    println!(
        "subjects: train {} ({} labelled), valid {}, test {}; rows: {}",
        ds.subjects[0],
        ds.labelled_subjects,
        ds.subjects[1],
        ds.subjects[2],
        report
            .manifests
            .iter()
            .skip(1)
            .map(|(name, n)| format!("{} {n}", name.trim_end_matches(".csv")))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "manifests: {}; preview: {}",
        PHANTOM_MANIFESTS.join(" "),
        preview.display()
    );
    Ok(())
}

/// Helpers shared by the `synth`, `scribble`, `noisy`, `partial` and `split`
/// subcommands.
pub mod util {
    use anyhow::Context;
    use medseg_core::{Image, LabelMap};
    use medseg_io::Manifest;
    use medseg_viz::{grey_to_rgb, montage, overlay_labels, save_png, RgbImage};
    use ndarray::{s, Array2, Axis};
    use std::path::{Component, Path, PathBuf};

    /// Writes `text` to `path` atomically ([`medseg_core::write_atomic`]).
    pub fn write_text(path: &Path, text: &str) -> anyhow::Result<()> {
        Ok(medseg_core::write_atomic(path, text.as_bytes())?)
    }

    /// `target` relative to the folder `base` (both made absolute first),
    /// with `..` where needed; `target` itself when no relative path exists.
    pub fn relative_to(base: &Path, target: &Path) -> PathBuf {
        let abs = |p: &Path| -> PathBuf {
            let p = if p.is_absolute() {
                p.to_path_buf()
            } else {
                std::env::current_dir()
                    .map(|c| c.join(p))
                    .unwrap_or_else(|_| p.to_path_buf())
            };
            // lexical normalisation of `.` and `..`
            let mut out = PathBuf::new();
            for c in p.components() {
                match c {
                    Component::CurDir => {}
                    Component::ParentDir => {
                        out.pop();
                    }
                    other => out.push(other.as_os_str()),
                }
            }
            out
        };
        let (b, t) = (abs(base), abs(target));
        let bc: Vec<_> = b.components().collect();
        let tc: Vec<_> = t.components().collect();
        let common = bc.iter().zip(&tc).take_while(|(x, y)| x == y).count();
        if common == 0 {
            return t;
        }
        let mut out = PathBuf::new();
        for _ in common..bc.len() {
            out.push("..");
        }
        for c in &tc[common..] {
            out.push(c.as_os_str());
        }
        out
    }

    /// A copy of `manifest` whose paths are rewritten relative to `new_root`.
    pub fn rebase(manifest: &Manifest, new_root: &Path) -> Manifest {
        let mut m = manifest.clone();
        for row in &mut m.rows {
            for p in row
                .images
                .iter_mut()
                .chain(row.label.iter_mut())
                .chain(row.pixel_weight.iter_mut())
            {
                *p = relative_to(new_root, &manifest.resolve(p));
            }
        }
        m.root = new_root.to_path_buf();
        m
    }

    /// The file name of `path` without `.nii.gz`, `.nii`, `.png`... .
    pub fn stem(path: &Path) -> String {
        medseg_io::file_stem(path)
    }

    /// The file extension to reuse for a derived label (`nii.gz` for NIfTI).
    pub fn label_ext(path: &Path) -> String {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if name.ends_with(".nii.gz") {
            "nii.gz".into()
        } else if name.ends_with(".nii") {
            "nii".into()
        } else {
            // raster labels are written back as PNG
            "png".into()
        }
    }

    /// The 2D slice of `[C, H, W]` / `[C, D, H, W]` data to show: for
    /// volumes, the slice with the most foreground in `label` (the middle
    /// one without a label).
    pub fn pick_slice(label: Option<&LabelMap>, depth: usize) -> usize {
        let Some(l) = label else { return depth / 2 };
        if l.data.ndim() != 4 {
            return 0;
        }
        (0..depth)
            .max_by_key(|&k| {
                l.data
                    .index_axis(Axis(1), k)
                    .iter()
                    .filter(|&&v| v != 0 && v != medseg_core::DEFAULT_IGNORE_LABEL)
                    .count()
            })
            .unwrap_or(0)
    }

    fn slice_of<T: Clone + Default>(data: &ndarray::ArrayD<T>, k: usize) -> Array2<T> {
        let v = if data.ndim() == 4 {
            data.slice(s![0, k, .., ..]).to_owned().into_dyn()
        } else {
            data.slice(s![0, .., ..]).to_owned().into_dyn()
        };
        v.into_dimensionality()
            .unwrap_or_else(|_| Array2::from_elem((1, 1), T::default()))
    }

    fn image_slice(image: &Image, k: usize) -> Array2<f32> {
        slice_of(&image.data, k)
    }

    fn label_slice(label: &LabelMap, k: usize) -> Array2<u16> {
        slice_of(&label.data, k)
    }

    /// Tiles for one sample: the image with the clean label, and, when given,
    /// the image with the derived annotation (`ignore` transparent;
    /// background class 0 drawn in colour `bg_colour_class` when set, so that
    /// background scribbles show).
    pub fn tile_pair(
        image: &Image,
        label: &LabelMap,
        annotation: Option<(&LabelMap, Option<u16>)>,
        bg_colour_class: Option<u16>,
    ) -> Vec<RgbImage> {
        let depth = if image.data.ndim() == 4 {
            image.data.shape()[1]
        } else {
            1
        };
        // show the slice where the annotation (else the label) has most foreground
        let k = match annotation {
            Some((ann, _))
                if ann
                    .data
                    .iter()
                    .any(|&v| v != 0 && v != medseg_core::DEFAULT_IGNORE_LABEL) =>
            {
                pick_slice(Some(ann), depth)
            }
            _ => pick_slice(Some(label), depth),
        };
        let im = image_slice(image, k);
        let up = if im.dim().0.max(im.dim().1) <= 160 {
            2
        } else {
            1
        };
        let mut tiles = vec![
            grey_to_rgb(im.view(), None).upscale(up),
            overlay_labels(im.view(), label_slice(label, k).view(), 0.45, None).upscale(up),
        ];
        if let Some((ann, ignore)) = annotation {
            let mut a = label_slice(ann, k);
            if let Some(bg) = bg_colour_class {
                a.mapv_inplace(|v| if v == 0 { bg } else { v });
            }
            let alpha = if bg_colour_class.is_some() { 1.0 } else { 0.45 };
            tiles.push(overlay_labels(im.view(), a.view(), alpha, ignore).upscale(up));
        }
        tiles
    }

    /// Lays sample tiles out one sample per row and saves the montage.
    pub fn save_montage(path: &Path, samples: &[Vec<RgbImage>]) -> anyhow::Result<()> {
        if samples.is_empty() {
            return Ok(());
        }
        let cols = samples.iter().map(|s| s.len()).max().unwrap_or(1);
        // with two tiles per sample, put two samples side by side
        let per_row = if cols <= 2 { 2 } else { 1 };
        let tiles: Vec<RgbImage> = samples.iter().flat_map(|s| s.iter().cloned()).collect();
        let m = montage(&tiles, cols * per_row, 4);
        save_png(path, &m).with_context(|| format!("writing {}", path.display()))
    }

    /// Reads a manifest, naming it in the error.
    pub fn read_manifest(path: &Path) -> anyhow::Result<Manifest> {
        Manifest::read(path, None).with_context(|| format!("reading manifest {}", path.display()))
    }

    /// The subject of a row: its `subject` column, else its image stem.
    pub fn subject_of(row: &medseg_io::ManifestRow, column: &str) -> String {
        row.extra
            .get(column)
            .filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| row.images.first().map(|p| stem(p)).unwrap_or_default())
    }

    /// What a simulator returns for one row: the new label map, extra
    /// columns for the manifest, and the annotated classes (partial labels).
    pub struct Derived {
        /// The derived label map.
        pub label: LabelMap,
        /// Extra manifest columns `(name, value)`.
        pub columns: Vec<(String, String)>,
        /// Classes annotated in this row (`None`: keep the input's).
        pub annotated_classes: Option<Vec<u16>>,
    }

    /// Applies `f` to the label of every row of the manifest at
    /// `manifest_path`, writes each result to `out/labels/<stem>.<ext>`, and
    /// writes `out/<manifest file name>` (paths relative to `out`) and a
    /// preview montage `out/<name>_preview.png` of the first `preview` rows.
    /// Returns the new manifest and the preview path.
    pub fn derive_labels<F>(
        manifest_path: &Path,
        out: &Path,
        name: &str,
        preview: usize,
        display: (Option<u16>, Option<u16>),
        mut f: F,
    ) -> anyhow::Result<(Manifest, PathBuf)>
    where
        F: FnMut(usize, &medseg_io::ManifestRow, &LabelMap) -> anyhow::Result<Derived>,
    {
        let manifest = read_manifest(manifest_path)?;
        let labels_dir = out.join("labels");
        std::fs::create_dir_all(&labels_dir)
            .with_context(|| format!("creating {}", labels_dir.display()))?;
        let mut new = rebase(&manifest, out);
        new.source = None;
        let mut tiles = Vec::new();
        let mut written = std::collections::HashSet::new();
        for (i, row) in manifest.rows.iter().enumerate() {
            let lp = row.label.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "{}, row {}: no label file; {name} needs full labels",
                    manifest_path.display(),
                    i + 1
                )
            })?;
            let full = manifest.resolve(lp);
            let label = medseg_io::read_label(&full)
                .with_context(|| format!("reading label {}", full.display()))?;
            let d = f(i, row, &label).with_context(|| format!("{name}: {}", full.display()))?;
            let out_name = format!("{}.{}", stem(lp), label_ext(lp));
            if !written.insert(out_name.clone()) {
                anyhow::bail!(
                    "{}, row {}: a second label file named {out_name}; label file names must be unique",
                    manifest_path.display(),
                    i + 1
                );
            }
            let out_path = labels_dir.join(&out_name);
            medseg_io::write_label(&out_path, &d.label)
                .with_context(|| format!("writing {}", out_path.display()))?;
            let nrow = &mut new.rows[i];
            nrow.label = Some(PathBuf::from("labels").join(&out_name));
            for (k, v) in d.columns {
                nrow.extra.insert(k, v);
            }
            if d.annotated_classes.is_some() {
                nrow.annotated_classes = d.annotated_classes;
            }
            let stride = (manifest.rows.len() / preview.max(1)).max(1);
            if tiles.len() < preview && i % stride == 0 {
                if let Some(ip) = row.images.first() {
                    let ipath = manifest.resolve(ip);
                    let image = medseg_io::read_image(&ipath)
                        .with_context(|| format!("reading image {}", ipath.display()))?;
                    tiles.push(tile_pair(
                        &image,
                        &label,
                        Some((&d.label, display.0)),
                        display.1,
                    ));
                }
            }
        }
        let file = manifest_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("{name}.csv"));
        let mpath = out.join(file);
        new.write(&mpath)
            .with_context(|| format!("writing {}", mpath.display()))?;
        let ppath = out.join(format!("{name}_preview.png"));
        save_montage(&ppath, &tiles)?;
        Ok((new, ppath))
    }

    /// Parses `"lo,hi"` into a pair.
    pub fn parse_range(s: &str) -> Result<(f64, f64), String> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let num = |p: &str| {
            p.parse::<f64>()
                .map_err(|_| format!("{p:?} is not a number"))
        };
        match parts.as_slice() {
            [a] => {
                let v = num(a)?;
                Ok((v, v))
            }
            [a, b] => {
                let (lo, hi) = (num(a)?, num(b)?);
                if lo > hi {
                    return Err(format!("range {s:?} has lo > hi"));
                }
                Ok((lo, hi))
            }
            _ => Err(format!("expected \"lo,hi\", got {s:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::util::*;
    use super::*;
    use medseg_io::Manifest;
    use std::path::Path;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_to(Path::new("/a/b/c"), Path::new("/a/b/d/e.nii")),
            PathBuf::from("../d/e.nii")
        );
        assert_eq!(
            relative_to(Path::new("/a/b"), Path::new("/a/b/x.png")),
            PathBuf::from("x.png")
        );
        assert_eq!(
            relative_to(Path::new("/a/./b/../c"), Path::new("/a/c/x")),
            PathBuf::from("x")
        );
        assert_eq!(parse_range("0.1, 0.2").unwrap(), (0.1, 0.2));
        assert_eq!(parse_range("3").unwrap(), (3.0, 3.0));
        assert!(parse_range("0.3,0.1").is_err());
        assert!(parse_range("a,b").is_err());
    }

    #[test]
    fn synth_writes_images_labels_manifests_and_is_deterministic() {
        let base = std::env::temp_dir().join(format!("medseg_data_synth_{}", std::process::id()));
        let run_once = |dir: &Path| {
            run(Args {
                kind: Kind::Cardiac2d,
                subjects: 5,
                seed: 3,
                out: dir.to_path_buf(),
                format: Format::Nii,
                slices: Some(3),
                size: Some(64),
                valid: 0.2,
                test: 0.2,
                labelled: 0.5,
                preview: 2,
            })
            .unwrap();
        };
        let (a, b) = (base.join("a"), base.join("b"));
        run_once(&a);
        run_once(&b);
        let all = Manifest::read(&a.join("all.csv"), None).unwrap();
        assert_eq!(all.len(), 15);
        assert_eq!(all.rows[4].extra["subject"], "subject001");
        assert_eq!(all.rows[4].extra["slice"], "1");
        let img = medseg_io::read_image(&all.resolve(&all.rows[4].images[0])).unwrap();
        let lab = medseg_io::read_label(&all.resolve(all.rows[4].label.as_ref().unwrap())).unwrap();
        assert_eq!(img.data.shape(), &[1, 64, 64]);
        assert_eq!(lab.classes(), vec![0, 1, 2, 3]);
        assert!(
            (img.spacing()[0] - 3.0).abs() < 1e-6,
            "spacing {:?}",
            img.spacing()
        );
        // same seed, same bytes
        for f in [
            "images/subject002_slice01.nii.gz",
            "labels/subject002_slice01.nii.gz",
            "train.csv",
            "test.csv",
        ] {
            assert_eq!(
                std::fs::read(a.join(f)).unwrap(),
                std::fs::read(b.join(f)).unwrap(),
                "{f}"
            );
        }
        // splits by subject: 3 train (1 or 2 labelled), 1 valid, 1 test; slices stay together
        let part = |n: &str| Manifest::read(&a.join(n), None).unwrap();
        let (tr, va, te) = (part("train.csv"), part("valid.csv"), part("test.csv"));
        assert_eq!((tr.len(), va.len(), te.len()), (9, 3, 3));
        let lab_m = part("train_labelled.csv");
        let unl = part("train_unlabelled.csv");
        assert_eq!(lab_m.len() + unl.len(), 9);
        assert!(unl.rows.iter().all(|r| r.label.is_none()));
        let subj = |m: &Manifest| -> std::collections::BTreeSet<String> {
            m.rows.iter().map(|r| r.extra["subject"].clone()).collect()
        };
        assert!(subj(&tr).is_disjoint(&subj(&te)) && subj(&tr).is_disjoint(&subj(&va)));
        assert!(a.join("preview.png").is_file());
        assert!(a.join("phantom.json").is_file());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn png_for_volumes_is_refused() {
        let r = run(Args {
            kind: Kind::Cardiac3d,
            subjects: 1,
            seed: 1,
            out: std::env::temp_dir().join("medseg_never_written"),
            format: Format::Png,
            slices: None,
            size: None,
            valid: 0.2,
            test: 0.2,
            labelled: 0.1,
            preview: 1,
        });
        assert!(r.unwrap_err().to_string().contains("2D images only"));
    }
}

/// A small phantom data set for the subcommands' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::{Path, PathBuf};

    /// A fresh temporary folder for test `name`.
    pub fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("medseg_data_{name}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Writes `subjects` small phantom subjects (2 slices of 48 x 48 each).
    pub fn dataset(dir: &Path, kind: super::Kind, subjects: usize) {
        super::run(super::Args {
            kind,
            subjects,
            seed: 5,
            out: dir.to_path_buf(),
            format: super::Format::Nii,
            slices: Some(2),
            size: Some(48),
            valid: 0.2,
            test: 0.2,
            labelled: 0.3,
            preview: 2,
        })
        .unwrap();
    }
}
