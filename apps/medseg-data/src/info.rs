//! `medseg-data info FILE...`: one JSON object per file with its shape,
//! on-disk data type, geometry, NIfTI codes and value range.

use anyhow::{Context, Result};
use medseg_io::nifti::nifti_statistics;
use medseg_io::raster::{raster_sample_type, read_raster};
use medseg_io::FileFormat;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Arguments of `medseg-data info`.
#[derive(clap::Args)]
pub struct Args {
    /// Images to describe (.nii, .nii.gz, .png, .jpg, .jpeg, .tif, .tiff).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print each object on one line (JSON Lines) instead of indented.
    #[arg(long)]
    pub compact: bool,
}

/// The JSON description of one file.
///
/// `shape` is medseg's channel-first array shape; `spacing`, `origin` and
/// `direction` are in array axis order `(D, H, W)` (direction columns are the
/// world RAS+ vectors of those axes); `affine` is the NIfTI voxel `(i, j, k)`
/// to RAS+ mm matrix. `min`, `max` and `mean` are over the scaled values.
pub fn describe(path: &Path) -> Result<Value> {
    let format = FileFormat::of(path)?;
    // NIfTI: the header, and statistics streamed from the voxel data, so
    // that describing a volume of any size holds one chunk of it at a time
    let (shape, geometry, (min, max, mean, n), mut extra) = match format {
        FileFormat::Nifti => {
            let (h, min, max, mean, n) = nifti_statistics(path)?;
            let dtype = h
                .data_type()
                .map(|d| d.name().to_string())
                .unwrap_or_default();
            let extra = json!({
                "format": "nifti",
                "nifti_version": h.version,
                "byte_order": if h.little_endian { "little" } else { "big" },
                "dim": h.file_shape(),
                "dtype": dtype,
                "pixdim": &h.pixdim[1..=h.ndim()],
                "qform_code": h.qform_code,
                "sform_code": h.sform_code,
                "scl_slope": h.scl_slope,
                "scl_inter": h.scl_inter,
                "affine": h.affine(),
                "description": h.descrip,
            });
            (h.array_shape(), h.geometry(), (min, max, mean, n), extra)
        }
        other => {
            let image = read_raster(path)?;
            let dtype = raster_sample_type(path)?;
            let name = match other {
                FileFormat::Png => "png",
                FileFormat::Jpeg => "jpeg",
                _ => "tiff",
            };
            let extra = json!({
                "format": name,
                "dtype": dtype.name(),
                "affine": image.geometry.to_affine(),
            });
            let (mut min, mut max, mut sum, mut n) =
                (f64::INFINITY, f64::NEG_INFINITY, 0.0f64, 0usize);
            for &v in image.data.iter() {
                if v.is_nan() {
                    continue;
                }
                let v = v as f64;
                min = min.min(v);
                max = max.max(v);
                sum += v;
                n += 1;
            }
            let mean = if n > 0 { sum / n as f64 } else { f64::NAN };
            (
                image.data.shape().to_vec(),
                image.geometry,
                (min, max, mean, n),
                extra,
            )
        }
    };
    let obj = extra.as_object_mut().expect("json object");
    obj.insert("file".into(), json!(path.display().to_string()));
    obj.insert("shape".into(), json!(shape));
    obj.insert(
        "spacing".into(),
        json!(geometry.spatial_spacing(shape.len() - 1)),
    );
    obj.insert("origin".into(), json!(geometry.origin));
    obj.insert("direction".into(), json!(geometry.direction));
    let num = |v: f64| if n > 0 { json!(v) } else { Value::Null };
    obj.insert("min".into(), num(min));
    obj.insert("max".into(), num(max));
    obj.insert("mean".into(), num(mean));
    Ok(extra)
}

/// Runs `medseg-data info`: describes every file, reporting failures at the
/// end (the command fails if any file could not be read).
pub fn run(args: Args) -> Result<()> {
    let mut failed = Vec::new();
    for f in &args.files {
        match describe(f).with_context(|| format!("reading {}", f.display())) {
            Ok(v) => {
                let text = if args.compact {
                    serde_json::to_string(&v)?
                } else {
                    serde_json::to_string_pretty(&v)?
                };
                println!("{text}");
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                failed.push(f.display().to_string());
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "{} of {} files could not be read: {}",
            failed.len(),
            args.files.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../crates/medseg-io/tests/fixtures")
            .join(name)
    }

    #[test]
    fn describes_nifti_and_png_like_nibabel() {
        let refs: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture("reference.json")).unwrap())
                .unwrap();
        let rec = refs["nifti"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["file"] == "scaled_int16.nii.gz")
            .unwrap();
        let v = describe(&fixture("scaled_int16.nii.gz")).unwrap();
        assert_eq!(v["dtype"], "int16");
        assert_eq!(v["shape"], rec["array_shape"]);
        assert_eq!(v["sform_code"], rec["sform_code"]);
        for key in ["min", "max", "mean"] {
            let (a, b) = (v[key].as_f64().unwrap(), rec[key].as_f64().unwrap());
            assert!((a - b).abs() < 1e-4, "{key}: {a} vs {b}");
        }
        let aff = v["affine"].as_array().unwrap();
        for (row, want) in aff.iter().zip(rec["affine"].as_array().unwrap()) {
            for (x, y) in row.as_array().unwrap().iter().zip(want.as_array().unwrap()) {
                assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-6);
            }
        }
        // spacing is (D, H, W): the reverse of nibabel's zooms
        assert_eq!(v["spacing"], json!([3.0, 1.0, 1.0]));

        let p = describe(&fixture("grey16.png")).unwrap();
        assert_eq!(p["dtype"], "uint16");
        assert_eq!(p["format"], "png");
        assert_eq!(p["shape"], json!([1, 4, 6]));

        let e = describe(&fixture("missing.nii")).unwrap_err();
        assert!(format!("{e:#}").contains("missing.nii"));
    }
}
