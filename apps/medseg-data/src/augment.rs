//! `medseg-data augment`: render a grid of augmented samples with label
//! overlays, so that a user can see what a transform pipeline does.
//!
//! The config is a small TOML file (paths relative to the current directory):
//!
//! ```toml
//! manifest = "data/cardiac2d/train.csv"
//! root = "data/cardiac2d"          # optional, default: the manifest's folder
//!
//! [[transforms]]
//! name = "RandomFlip"
//! axes = [1, 2]
//! p = 0.5
//!
//! [[transforms]]
//! name = "RandomRotate"
//! angle_range_d = [-30, 30]
//! ```
//!
//! The first tile is the case as read, the others are `--n` augmented
//! versions of it (seeds `--seed`, `--seed + 1`, ...). Volumes show their
//! middle slice along the depth axis after augmentation.

use anyhow::{bail, Context, Result};
use medseg_core::{Sample, DEFAULT_IGNORE_LABEL};
use medseg_io::{Dataset, LabelledDataset, Manifest, UnlabelledDataset};
use medseg_transforms::{build_pipeline, Mode};
use medseg_viz::{montage, overlay_labels, save_png, RgbImage};
use ndarray::{Array2, Axis};
use rand_chacha::{rand_core::SeedableRng, ChaCha8Rng};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Arguments of `medseg-data augment`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// TOML file with `manifest`, optional `root` and `[[transforms]]` tables.
    #[arg(long)]
    pub config: PathBuf,
    /// Number of augmented samples to draw.
    #[arg(long, default_value_t = 8)]
    pub n: usize,
    /// Output PNG file.
    #[arg(long)]
    pub out: PathBuf,
    /// Row of the manifest to augment (0-based).
    #[arg(long, default_value_t = 0)]
    pub case: usize,
    /// Seed of the first augmented sample; sample i uses seed + i.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image channel to show.
    #[arg(long, default_value_t = 0)]
    pub channel: usize,
    /// Tiles per row of the grid.
    #[arg(long, default_value_t = 3)]
    pub cols: usize,
    /// Label value drawn transparent (unannotated).
    #[arg(long, default_value_t = DEFAULT_IGNORE_LABEL)]
    pub ignore: u16,
    /// Run the pipeline in inference mode (only the steps that run at test time).
    #[arg(long)]
    pub inference: bool,
}

/// The augment config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AugmentConfig {
    manifest: PathBuf,
    #[serde(default)]
    root: Option<PathBuf>,
    #[serde(default)]
    transforms: Vec<toml::Value>,
}

fn read_config(path: &Path) -> Result<(AugmentConfig, Vec<serde_json::Value>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    let cfg: AugmentConfig =
        toml::from_str(&text).with_context(|| format!("config {}", path.display()))?;
    let specs = cfg
        .transforms
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::to_value(t)
                .with_context(|| format!("config {}: transforms[{i}]", path.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((cfg, specs))
}

/// The `[H, W]` slice shown for a channel-first array: the channel itself
/// for 2D, its middle depth slice for 3D.
fn display_slice<T: Clone>(a: &ndarray::ArrayD<T>, channel: usize) -> Result<Array2<T>> {
    if channel >= a.shape()[0] {
        bail!(
            "--channel {channel}: the image has {} channels",
            a.shape()[0]
        );
    }
    let c = a.index_axis(Axis(0), channel);
    let c = if c.ndim() == 3 {
        let mid = c.shape()[0] / 2;
        c.index_axis(Axis(0), mid).to_owned()
    } else {
        c.to_owned()
    };
    c.into_dimensionality().context("expected a 2D slice")
}

fn tile(sample: &Sample, channel: usize, ignore: u16) -> Result<RgbImage> {
    let img = display_slice(&sample.image.data, channel)?;
    let lab = match &sample.label {
        Some(l) => display_slice(&l.data, 0)?,
        None => Array2::zeros(img.dim()),
    };
    let t = overlay_labels(img.view(), lab.view(), 0.45, Some(ignore));
    let long = t.width.max(t.height).max(1);
    let factor = (256 / long).max(1);
    Ok(if factor > 1 { t.upscale(factor) } else { t })
}

/// Runs `medseg-data augment`.
pub fn run(args: Args) -> Result<()> {
    if args.n == 0 {
        bail!("--n must be at least 1");
    }
    let (cfg, specs) = read_config(&args.config)?;
    let pipeline = build_pipeline(&specs)
        .with_context(|| format!("config {}: transforms", args.config.display()))?
        .with_mode(if args.inference {
            Mode::Inference
        } else {
            Mode::Train
        });
    let manifest = Manifest::read(&cfg.manifest, cfg.root.as_deref())
        .with_context(|| format!("config {}: manifest", args.config.display()))?;
    let labelled = manifest.rows.iter().all(|r| r.label.is_some());
    let dataset: Box<dyn Dataset> = if labelled {
        Box::new(LabelledDataset::new(manifest)?)
    } else {
        Box::new(UnlabelledDataset::new(manifest)?)
    };
    if args.case >= dataset.len() {
        bail!(
            "--case {}: the manifest {} has {} rows",
            args.case,
            cfg.manifest.display(),
            dataset.len()
        );
    }
    let original = dataset
        .get(args.case)
        .with_context(|| format!("loading row {} of {}", args.case, cfg.manifest.display()))?;
    let mut tiles = vec![tile(&original, args.channel, args.ignore)?];
    for i in 0..args.n {
        let seed = args.seed + i as u64;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let out = pipeline
            .apply(original.clone(), &mut rng)
            .with_context(|| {
                format!(
                    "config {}: applying the pipeline (seed {seed})",
                    args.config.display()
                )
            })?;
        let steps: Vec<String> = out
            .history
            .iter()
            .map(|r| {
                if r.params.get("applied") == Some(&serde_json::Value::Bool(false)) {
                    format!("{} (not drawn)", r.name)
                } else {
                    r.name.clone()
                }
            })
            .collect();
        println!(
            "seed {seed}: shape {:?}; {}",
            out.image.data.shape(),
            steps.join(", ")
        );
        tiles.push(tile(&out, args.channel, args.ignore)?);
    }
    let grid = montage(&tiles, args.cols, 4);
    save_png(&args.out, &grid).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({}x{}): the case as read, then {} augmented samples",
        args.out.display(),
        grid.width,
        grid.height,
        args.n
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use medseg_core::{Geometry, Image, LabelMap};
    use ndarray::{ArrayD, IxDyn};

    fn setup(dir: &Path) -> PathBuf {
        let img = ArrayD::from_shape_fn(IxDyn(&[1, 40, 48]), |i| (i[1] + 2 * i[2]) as f32);
        let lab = ArrayD::from_shape_fn(IxDyn(&[1, 40, 48]), |i| {
            if (10..30).contains(&i[1]) && (12..20).contains(&i[2]) {
                1u16
            } else {
                0
            }
        });
        let g = Geometry::identity();
        medseg_io::write_image(
            &dir.join("a.nii.gz"),
            &Image::new(img, g).unwrap(),
            medseg_io::DataType::F32,
        )
        .unwrap();
        medseg_io::write_label(&dir.join("a_seg.nii.gz"), &LabelMap::new(lab, g).unwrap()).unwrap();
        std::fs::write(dir.join("m.csv"), "image,label\na.nii.gz,a_seg.nii.gz\n").unwrap();
        dir.join("m.csv")
    }

    #[test]
    fn renders_a_grid() {
        let dir = tempfile::tempdir().unwrap();
        let csv = setup(dir.path());
        let cfg = dir.path().join("aug.toml");
        std::fs::write(
            &cfg,
            format!(
                "manifest = {:?}\n[[transforms]]\nname = \"RandomRotate\"\nangle_range_d = [-30, 30]\np = 1.0\n[[transforms]]\nname = \"RandomCrop\"\nsize = [32, 32]\n",
                csv.display().to_string()
            ),
        )
        .unwrap();
        let out = dir.path().join("grid.png");
        run(Args {
            config: cfg,
            n: 4,
            out: out.clone(),
            case: 0,
            seed: 1,
            channel: 0,
            cols: 5,
            ignore: 255,
            inference: false,
        })
        .unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        // 5 tiles in one row, 4 px apart; cells as large as the biggest tile:
        // the 32x32 crops upscaled by 8 (the 40x48 original by 5: 200x240)
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((w, h), (5 * 256 + 6 * 4, 256 + 2 * 4));
    }

    #[test]
    fn rejects_unknown_keys_and_transforms() {
        let dir = tempfile::tempdir().unwrap();
        let csv = setup(dir.path());
        let bad_key = dir.path().join("k.toml");
        std::fs::write(
            &bad_key,
            format!("manifest = {:?}\nseeds = 3\n", csv.display().to_string()),
        )
        .unwrap();
        let err = format!("{:#}", read_config(&bad_key).unwrap_err());
        assert!(err.contains("seeds"), "{err}");
        let bad_t = dir.path().join("t.toml");
        std::fs::write(
            &bad_t,
            format!(
                "manifest = {:?}\n[[transforms]]\nname = \"RandomFlip\"\nprob = 0.5\n",
                csv.display().to_string()
            ),
        )
        .unwrap();
        let err = run(Args {
            config: bad_t,
            n: 1,
            out: dir.path().join("x.png"),
            case: 0,
            seed: 0,
            channel: 0,
            cols: 3,
            ignore: 255,
            inference: false,
        })
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("prob") && msg.contains("transforms[0]"),
            "{msg}"
        );
        assert!(!dir.path().join("x.png").exists());
    }
}
