//! `medseg-data photograph`: a "photographed" copy of a data set, as if each
//! image had been shown on a screen and photographed with a phone.
//!
//! Every image of the manifest goes through the `ScreenPhoto` transform at
//! `--severity` (perspective, colour cast, moiré, blur, JPEG, noise; see
//! medseg-transforms), seen through the display `--window`, or through the `[[transforms]]` of a TOML file given
//! with `--transforms`:
//!
//! ```toml
//! [[transforms]]
//! name = "RandomPerspective"
//! distortion_scale = 0.3
//! p = 1.0
//!
//! [[transforms]]
//! name = "JpegQuality"
//! quality_range = [20, 40]
//! p = 1.0
//! ```
//!
//! Labels, pixel-weight maps and noisy-label masks go through the same
//! draws, so they move with the image (only geometric steps change them).
//! Each case draws from its own seed, `named_seed(--seed, image stem)`, so
//! the result does not depend on the order of the rows. The output folder
//! holds `images/`, `labels/` (and `weights/`, `noisy/` when the manifest
//! has them), a manifest with the same file name and columns pointing to the
//! new files, `photograph.json` (settings and every case's transform
//! records) and `photograph_preview.png`. An output folder that is not empty
//! is refused unless `--force` is given.

use crate::synth::util::{self, label_ext, pick_slice, stem};
use anyhow::{bail, Context, Result};
use medseg_core::{Image, LabelMap, Sample};
use medseg_io::{DataType, FileFormat};
use medseg_synth::named_seed;
use medseg_transforms::{build_pipeline, Mode, Pipeline};
use medseg_viz::{overlay_labels, RgbImage};
use ndarray::{s, Array2, ArrayD, Axis};
use rand_chacha::{rand_core::SeedableRng, ChaCha8Rng};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Arguments of `medseg-data photograph`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Manifest (CSV) of the data set to photograph.
    #[arg(long)]
    pub manifest: PathBuf,
    /// Output folder (created; must be empty unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Severity of the ScreenPhoto preset, in [0, 1] (0 copies the data
    /// unchanged); default 0.5.
    #[arg(long, conflicts_with = "transforms")]
    pub severity: Option<f64>,
    /// Display window "lo,hi" of the screen (e.g. "-160,240" for an
    /// abdominal CT window): values outside it are clipped in the photo.
    /// Default: each image's own min and max.
    #[arg(long, value_parser = util::parse_range, conflicts_with = "transforms")]
    pub window: Option<(f64, f64)>,
    /// TOML file with `[[transforms]]` tables to use instead of ScreenPhoto.
    #[arg(long)]
    pub transforms: Option<PathBuf>,
    /// Random seed; the same seed gives the same files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Overwrite files in a non-empty output folder.
    #[arg(long)]
    pub force: bool,
    /// Number of cases in the preview montage.
    #[arg(long, default_value_t = 4)]
    pub preview: usize,
}

/// The `--transforms` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransformsFile {
    transforms: Vec<toml::Value>,
}

/// The pipeline and a description of it for `photograph.json`.
fn pipeline(args: &Args) -> Result<(Pipeline, serde_json::Value)> {
    let specs: Vec<serde_json::Value> = match &args.transforms {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let file: TransformsFile =
                toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
            if file.transforms.is_empty() {
                bail!("{}: no [[transforms]] table", path.display());
            }
            file.transforms
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    serde_json::to_value(t)
                        .with_context(|| format!("{}: transforms[{i}]", path.display()))
                })
                .collect::<Result<_>>()?
        }
        None => {
            let severity = args.severity.unwrap_or(0.5);
            let mut spec = serde_json::json!({ "name": "ScreenPhoto", "severity": severity });
            if let Some((lo, hi)) = args.window {
                if lo >= hi {
                    bail!("--window: expected \"lo,hi\" with lo < hi, got {lo},{hi}");
                }
                spec["window"] = serde_json::json!([lo, hi]);
            }
            vec![spec]
        }
    };
    let what = match &args.transforms {
        Some(p) => format!("{}", p.display()),
        None => "--severity".to_string(),
    };
    let p = build_pipeline(&specs)
        .with_context(|| format!("{what}: transforms"))?
        .with_mode(Mode::Train);
    Ok((p, serde_json::Value::Array(specs)))
}

/// Refuses a non-empty output folder without `--force`.
fn check_out(out: &Path, force: bool) -> Result<()> {
    if let Ok(mut entries) = std::fs::read_dir(out) {
        if entries.next().is_some() && !force {
            bail!(
                "output folder {} is not empty; pass --force to overwrite its files",
                out.display()
            );
        }
    }
    Ok(())
}

/// The file written for an input file: same stem, same extension, except
/// read-only raster formats (JPEG, TIFF), which become PNG.
fn out_name(path: &Path) -> Result<(String, FileFormat)> {
    let fmt = FileFormat::of(path)?;
    let ext = match fmt {
        FileFormat::Nifti => label_ext(path),
        _ => "png".to_string(),
    };
    Ok((format!("{}.{ext}", stem(path)), fmt))
}

/// The data type to write an image in: NIfTI gets float32 (the degraded
/// values are not whole numbers); PNG keeps the input's 8 or 16 bits.
fn out_dtype(path: &Path, fmt: FileFormat) -> Result<DataType> {
    Ok(match fmt {
        FileFormat::Nifti => DataType::F32,
        _ => match medseg_io::raster::raster_sample_type(path)? {
            DataType::U8 => DataType::U8,
            _ => DataType::U16,
        },
    })
}

/// Clamps to the range of an integer data type (PNG output).
fn clamp_for(data: &mut ArrayD<f32>, dtype: DataType) {
    let hi = match dtype {
        DataType::U8 => 255.0,
        DataType::U16 => 65535.0,
        _ => return,
    };
    data.mapv_inplace(|v| v.clamp(0.0, hi));
}

/// The `[H, W]` slice shown in the preview.
fn slice2<T: Clone>(a: &ArrayD<T>, k: usize) -> Array2<T> {
    let v = if a.ndim() == 4 {
        a.slice(s![0, k, .., ..]).to_owned().into_dyn()
    } else {
        a.slice(s![0, .., ..]).to_owned().into_dyn()
    };
    v.into_dimensionality().expect("2D slice")
}

fn preview_tiles(before: &Sample, after: &Sample) -> Vec<RgbImage> {
    let depth = if before.image.data.ndim() == 4 {
        before.image.data.shape()[1]
    } else {
        1
    };
    let k = pick_slice(before.label.as_ref(), depth);
    let tile = |s: &Sample| {
        let im = slice2(&s.image.data, k);
        let lab = match &s.label {
            Some(l) => slice2(&l.data, k),
            None => Array2::zeros(im.dim()),
        };
        let up = if im.dim().0.max(im.dim().1) <= 160 {
            2
        } else {
            1
        };
        vec![
            medseg_viz::grey_to_rgb(im.view(), None).upscale(up),
            overlay_labels(
                im.view(),
                lab.view(),
                0.45,
                Some(medseg_core::DEFAULT_IGNORE_LABEL),
            )
            .upscale(up),
        ]
    };
    let mut t = tile(before);
    t.extend(tile(after));
    t
}

/// Reads the images of a row into one sample (modalities stacked as
/// channels); returns it with the channel count of each file.
fn read_row(
    manifest: &medseg_io::Manifest,
    row: &medseg_io::ManifestRow,
) -> Result<(Sample, Vec<usize>)> {
    let mut parts = Vec::new();
    let mut geometry = None;
    for p in &row.images {
        let full = manifest.resolve(p);
        let im = medseg_io::read_image(&full)
            .with_context(|| format!("reading image {}", full.display()))?;
        geometry.get_or_insert(im.geometry);
        parts.push(im.data);
    }
    let counts: Vec<usize> = parts.iter().map(|a| a.shape()[0]).collect();
    let views: Vec<_> = parts.iter().map(|a| a.view()).collect();
    let data = ndarray::concatenate(Axis(0), &views).with_context(|| {
        format!(
            "{}: the image files of a row must have the same spatial shape",
            row.images
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let name = row.images.first().map(|p| stem(p)).unwrap_or_default();
    let mut sample = Sample::new(name, Image::new(data, geometry.unwrap_or_default())?);
    if let Some(lp) = &row.label {
        let full = manifest.resolve(lp);
        let l = medseg_io::read_label(&full)
            .with_context(|| format!("reading label {}", full.display()))?;
        sample = sample
            .with_label(l)
            .with_context(|| format!("label {}", full.display()))?;
    }
    for (p, slot, what) in [
        (&row.pixel_weight, &mut sample.pixel_weight, "pixel weight"),
        (&row.noisy_mask, &mut sample.noisy_mask, "noisy mask"),
    ] {
        if let Some(p) = p {
            let full = manifest.resolve(p);
            let m = medseg_io::read_image(&full)
                .with_context(|| format!("reading {what} {}", full.display()))?;
            *slot = Some(m.data);
        }
    }
    Ok((sample, counts))
}

/// Writes a float map (weights, masks) next to the others, keeping its format.
fn write_map(dir: &Path, src: &Path, data: ArrayD<f32>, image: &Image) -> Result<PathBuf> {
    let (name, fmt) = out_name(src)?;
    let dtype = out_dtype(src, fmt).unwrap_or(DataType::F32);
    let mut data = data;
    clamp_for(&mut data, dtype);
    let path = dir.join(&name);
    medseg_io::write_image(&path, &Image::new(data, image.geometry)?, dtype)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Runs `medseg-data photograph`.
pub fn run(args: Args) -> Result<()> {
    if let Some(s) = args.severity {
        if !(0.0..=1.0).contains(&s) {
            bail!("--severity must be in [0, 1], got {s}");
        }
    }
    let (pipeline, specs) = pipeline(&args)?;
    let manifest = util::read_manifest(&args.manifest)?;
    check_out(&args.out, args.force)?;
    let dirs = ["images", "labels", "weights", "noisy"].map(|d| args.out.join(d));
    std::fs::create_dir_all(&dirs[0]).with_context(|| format!("creating {}", dirs[0].display()))?;
    let mut new = util::rebase(&manifest, &args.out);
    new.source = None;
    let mut written = std::collections::HashSet::new();
    let mut cases = Vec::new();
    let mut tiles = Vec::new();
    let stride = (manifest.rows.len() / args.preview.max(1)).max(1);
    let bar = indicatif::ProgressBar::new(manifest.rows.len() as u64);
    for (i, row) in manifest.rows.iter().enumerate() {
        let at = || format!("{}, row {}", args.manifest.display(), i + 1);
        let (sample, counts) = read_row(&manifest, row).with_context(at)?;
        let name = sample.name.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(named_seed(args.seed, &name));
        let before = (tiles.len() < args.preview && i % stride == 0).then(|| sample.clone());
        let out = pipeline
            .apply(sample, &mut rng)
            .with_context(|| format!("{}: photographing {name}", at()))?;
        // images: split the channels back into their files
        let mut start = 0;
        for (j, (p, n)) in row.images.iter().zip(&counts).enumerate() {
            let src = manifest.resolve(p);
            let (fname, fmt) = out_name(&src).with_context(at)?;
            if !written.insert(format!("images/{fname}")) {
                bail!(
                    "{}: a second image file named {fname}; image file names must be unique",
                    at()
                );
            }
            let dtype = out_dtype(&src, fmt).with_context(at)?;
            let mut data = out
                .image
                .data
                .slice_axis(Axis(0), ndarray::Slice::from(start..start + n))
                .to_owned();
            start += n;
            clamp_for(&mut data, dtype);
            let path = dirs[0].join(&fname);
            medseg_io::write_image(&path, &Image::new(data, out.image.geometry)?, dtype)
                .with_context(|| format!("writing {}", path.display()))?;
            new.rows[i].images[j] = PathBuf::from("images").join(&fname);
        }
        if let (Some(lp), Some(l)) = (&row.label, &out.label) {
            let fname = format!("{}.{}", stem(lp), label_ext(lp));
            if !written.insert(format!("labels/{fname}")) {
                bail!(
                    "{}: a second label file named {fname}; label file names must be unique",
                    at()
                );
            }
            std::fs::create_dir_all(&dirs[1])?;
            let path = dirs[1].join(&fname);
            medseg_io::write_label(&path, &LabelMap::new(l.data.clone(), l.geometry)?)
                .with_context(|| format!("writing {}", path.display()))?;
            new.rows[i].label = Some(PathBuf::from("labels").join(&fname));
        }
        let nrow = &mut new.rows[i];
        for (src, data, dir, sub, slot) in [
            (
                &row.pixel_weight,
                &out.pixel_weight,
                &dirs[2],
                "weights",
                &mut nrow.pixel_weight,
            ),
            (
                &row.noisy_mask,
                &out.noisy_mask,
                &dirs[3],
                "noisy",
                &mut nrow.noisy_mask,
            ),
        ] {
            if let (Some(p), Some(d)) = (src, data) {
                std::fs::create_dir_all(dir)?;
                let path =
                    write_map(dir, &manifest.resolve(p), d.clone(), &out.image).with_context(at)?;
                let fname = path.file_name().map(PathBuf::from).unwrap_or_default();
                if !written.insert(format!("{sub}/{}", fname.display())) {
                    bail!("{}: a second {sub} file named {}", at(), fname.display());
                }
                *slot = Some(PathBuf::from(sub).join(fname));
            }
        }
        if let Some(b) = before {
            tiles.push(preview_tiles(&b, &out));
        }
        cases.push(serde_json::json!({ "case": name, "history": out.history }));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let file = args
        .manifest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "photograph.csv".into());
    let mpath = args.out.join(&file);
    new.write(&mpath)
        .with_context(|| format!("writing {}", mpath.display()))?;
    let record = serde_json::json!({
        "source": args.manifest.display().to_string(),
        "seed": args.seed,
        "transforms": specs,
        "cases": cases,
    });
    util::write_text(
        &args.out.join("photograph.json"),
        &serde_json::to_string_pretty(&record)?,
    )?;
    let ppath = args.out.join("photograph_preview.png");
    util::save_montage(&ppath, &tiles)?;
    println!(
        "photographed {} cases -> {} (manifest {}, preview {})",
        manifest.len(),
        args.out.display(),
        mpath.display(),
        ppath.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::test_support::{dataset, temp_dir};
    use crate::synth::Kind;
    use medseg_io::Manifest;
    use medseg_transforms::{perspective_warp, Corners, Interp};

    fn args(manifest: PathBuf, out: PathBuf, severity: Option<f64>, seed: u64) -> Args {
        Args {
            manifest,
            out,
            severity,
            window: None,
            transforms: None,
            seed,
            force: false,
            preview: 2,
        }
    }

    /// (image, label) arrays of every row, read back.
    fn read_all(path: &Path) -> Vec<(Image, LabelMap)> {
        let m = Manifest::read(path, None).unwrap();
        m.rows
            .iter()
            .map(|r| {
                (
                    medseg_io::read_image(&m.resolve(&r.images[0])).unwrap(),
                    medseg_io::read_label(&m.resolve(r.label.as_ref().unwrap())).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn photographs_a_phantom_set_deterministically() {
        let d = temp_dir("photograph");
        dataset(&d, Kind::Abdomen2d, 2);
        let src = d.join("all.csv");
        let original = read_all(&src);
        // severity 0 copies the data unchanged
        run(args(src.clone(), d.join("s0"), Some(0.0), 1)).unwrap();
        let copy = read_all(&d.join("s0/all.csv"));
        assert_eq!(copy.len(), original.len());
        for ((a, la), (b, lb)) in original.iter().zip(&copy) {
            assert_eq!(a.data, b.data);
            assert_eq!(a.geometry, b.geometry);
            assert_eq!(la.data, lb.data);
        }
        // same columns, paths into the new folder
        let m0 = Manifest::read(&src, None).unwrap();
        let m1 = Manifest::read(&d.join("s0/all.csv"), None).unwrap();
        assert_eq!(m0.image_columns, m1.image_columns);
        for (r0, r1) in m0.rows.iter().zip(&m1.rows) {
            assert_eq!(r0.extra, r1.extra);
            assert!(r1.images[0].starts_with("images"));
            assert!(r1.label.as_ref().unwrap().starts_with("labels"));
        }
        // severity 0.8: same seed, same files; another seed, other files
        run(args(src.clone(), d.join("a"), Some(0.8), 3)).unwrap();
        run(args(src.clone(), d.join("b"), Some(0.8), 3)).unwrap();
        run(args(src.clone(), d.join("c"), Some(0.8), 4)).unwrap();
        let (a, b, c) = (
            read_all(&d.join("a/all.csv")),
            read_all(&d.join("b/all.csv")),
            read_all(&d.join("c/all.csv")),
        );
        let mut moved = 0;
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("a/photograph.json")).unwrap())
                .unwrap();
        for (i, ((im, lab), (o, lo))) in a.iter().zip(&original).enumerate() {
            assert_eq!(im.data, b[i].0.data);
            assert_eq!(lab.data, b[i].1.data);
            assert_ne!(im.data, c[i].0.data);
            assert_eq!(im.data.shape(), o.data.shape());
            assert_eq!(im.geometry, o.geometry);
            assert_ne!(im.data, o.data);
            // the label moved exactly as the recorded perspective moves it
            let rec = &record["cases"][i]["history"][0];
            assert_eq!(rec["name"], "RandomPerspective");
            let start: Corners =
                serde_json::from_value(rec["params"]["startpoints"].clone()).unwrap();
            let end: Corners = serde_json::from_value(rec["params"]["endpoints"].clone()).unwrap();
            let want = perspective_warp(
                lo.data.mapv(|v| v as f32),
                &start,
                &end,
                Interp::Nearest,
                0.0,
            )
            .unwrap();
            assert_eq!(lab.data.mapv(|v| v as f32), want);
            moved += (lab.data != lo.data) as usize;
        }
        assert!(moved * 2 > a.len(), "only {moved} labels moved");
        assert!(d.join("a/photograph_preview.png").is_file());
        // an existing output is kept unless --force
        let err = run(args(src.clone(), d.join("a"), Some(0.5), 3)).unwrap_err();
        assert!(format!("{err:#}").contains("--force"), "{err:#}");
        assert_eq!(read_all(&d.join("a/all.csv"))[0].0.data, a[0].0.data);
        let mut forced = args(src.clone(), d.join("a"), Some(0.5), 3);
        forced.force = true;
        run(forced).unwrap();
        assert_ne!(read_all(&d.join("a/all.csv"))[0].0.data, a[0].0.data);
        assert!(run(args(src.clone(), d.join("e"), Some(1.5), 3)).is_err());
        // a display window reaches the preset
        let mut w = args(src.clone(), d.join("w"), Some(0.5), 3);
        w.window = Some((-160.0, 240.0));
        run(w).unwrap();
        let rec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("w/photograph.json")).unwrap())
                .unwrap();
        let hist = rec["cases"][0]["history"].as_array().unwrap();
        let last = hist.last().unwrap();
        assert_eq!(last["name"], "ScreenPhoto");
        assert_eq!(last["params"]["window"], serde_json::json!([-160.0, 240.0]));
        let mut bad = args(src, d.join("e"), Some(0.5), 3);
        bad.window = Some((3.0, 3.0));
        assert!(run(bad).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_transform_list_moves_labels_with_the_image() {
        let d = temp_dir("photograph_list");
        let g = medseg_core::Geometry::identity();
        let lab = ArrayD::from_shape_fn(ndarray::IxDyn(&[1, 30, 36]), |i| {
            ((i[1] / 6 + i[2] / 9) % 3) as u16
        });
        let img = lab.mapv(|v| v as f32 * 10.0 + 1.0);
        medseg_io::write_image(
            &d.join("a.nii.gz"),
            &Image::new(img, g).unwrap(),
            DataType::F32,
        )
        .unwrap();
        medseg_io::write_label(
            &d.join("a_seg.nii.gz"),
            &LabelMap::new(lab.clone(), g).unwrap(),
        )
        .unwrap();
        std::fs::write(d.join("m.csv"), "image,label\na.nii.gz,a_seg.nii.gz\n").unwrap();
        let toml = d.join("t.toml");
        std::fs::write(
            &toml,
            "[[transforms]]\nname = \"RandomPerspective\"\ndistortion_scale = 0.5\np = 1.0\n\
             image_interp = \"nearest\"\nimage_fill = 1.0\n",
        )
        .unwrap();
        let mut a = args(d.join("m.csv"), d.join("out"), None, 2);
        a.transforms = Some(toml.clone());
        run(a).unwrap();
        let out = read_all(&d.join("out/m.csv"));
        let (im, l) = &out[0];
        assert_ne!(l.data, lab);
        for (v, c) in im.data.iter().zip(l.data.iter()) {
            assert_eq!(*v, *c as f32 * 10.0 + 1.0);
        }
        // a misspelt parameter names the entry
        std::fs::write(
            &toml,
            "[[transforms]]\nname = \"RandomPerspective\"\nscale = 0.5\n",
        )
        .unwrap();
        let mut a = args(d.join("m.csv"), d.join("out2"), None, 2);
        a.transforms = Some(toml);
        let err = format!("{:#}", run(a).unwrap_err());
        assert!(
            err.contains("scale") && err.contains("transforms[0]"),
            "{err}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
