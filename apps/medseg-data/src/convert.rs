//! `medseg-data convert IN OUT`: converts between NIfTI (.nii/.nii.gz) and
//! PNG (write) / PNG, JPEG, TIFF (read), keeping the geometry. NIfTI to
//! NIfTI keeps the input's qform and sform (codes and matrices) exactly.

use anyhow::{bail, Context, Result};
use medseg_core::Image;
use medseg_io::nifti::{read_nifti, read_nifti_label, write_nifti, write_nifti_label, NiftiHeader};
use medseg_io::raster::raster_sample_type;
use medseg_io::{read_image, read_label, write_image, write_label, DataType, FileFormat};
use std::path::{Path, PathBuf};

/// Arguments of `medseg-data convert`.
#[derive(clap::Args)]
pub struct Args {
    /// Input image (.nii, .nii.gz, .png, .jpg, .jpeg, .tif, .tiff).
    pub input: PathBuf,
    /// Output image (.nii, .nii.gz or .png).
    pub output: PathBuf,
    /// On-disk data type of the output (uint8, int8, uint16, int16, uint32,
    /// int32, float32, float64). Default: the input's, or float32 for scaled
    /// NIfTI data; for PNG, uint8 or uint16 by the value range.
    #[arg(long)]
    pub dtype: Option<String>,
    /// Treat the file as a label map (integer classes; uint8/uint16 chosen by
    /// the largest class).
    #[arg(long)]
    pub label: bool,
}

/// PNG can only hold uint8/uint16: pick by the values when `dtype` cannot.
fn png_dtype(image: &Image, dtype: DataType, path: &Path) -> Result<DataType> {
    if matches!(dtype, DataType::U8 | DataType::U16) {
        return Ok(dtype);
    }
    let ints = image.data.iter().all(|v| v.fract() == 0.0);
    let (lo, hi) = image
        .data
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if ints && lo >= 0.0 && hi <= 255.0 {
        Ok(DataType::U8)
    } else if ints && lo >= 0.0 && hi <= 65535.0 {
        Ok(DataType::U16)
    } else {
        bail!(
            "{}: values {lo}..{hi} do not fit an 8- or 16-bit PNG; pass --dtype uint8 or uint16 to round and clip, or write .nii.gz",
            path.display()
        )
    }
}

/// Runs `medseg-data convert`.
pub fn run(args: Args) -> Result<()> {
    let (src, dst) = (&args.input, &args.output);
    let in_fmt = FileFormat::of(src)?;
    let out_fmt = FileFormat::of(dst)?;
    if !matches!(out_fmt, FileFormat::Nifti | FileFormat::Png) {
        bail!("{}: can only write .nii, .nii.gz or .png", dst.display());
    }
    let requested: Option<DataType> = args
        .dtype
        .as_deref()
        .map(str::parse)
        .transpose()
        .context("--dtype")?;
    let ctx = || format!("converting {} to {}", src.display(), dst.display());
    if args.label {
        let (label, header): (_, Option<NiftiHeader>) = match in_fmt {
            FileFormat::Nifti => {
                let (l, h) = read_nifti_label(src)?;
                (l, Some(h))
            }
            _ => (read_label(src)?, None),
        };
        match out_fmt {
            FileFormat::Nifti => {
                write_nifti_label(dst, &label, header.as_ref()).with_context(ctx)?
            }
            _ => write_label(dst, &label).with_context(ctx)?,
        }
        return Ok(());
    }
    let (image, header, native) = match in_fmt {
        FileFormat::Nifti => {
            let (im, h) = read_nifti(src)?;
            let native = match (h.data_type(), h.scaling()) {
                (Some(DataType::Rgb24), _) => DataType::U8,
                (Some(t), None) => t,
                _ => DataType::F32,
            };
            (im, Some(h), native)
        }
        _ => (read_image(src)?, None, raster_sample_type(src)?),
    };
    let dtype = requested.unwrap_or(native);
    match out_fmt {
        FileFormat::Nifti => write_nifti(dst, &image, dtype, header.as_ref()).with_context(ctx)?,
        _ => {
            let d = png_dtype(&image, dtype, src)?;
            write_image(dst, &image, d).with_context(ctx)?
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use medseg_io::nifti::read_nifti_header;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../crates/medseg-io/tests/fixtures")
            .join(name)
    }

    fn convert(input: PathBuf, output: PathBuf, dtype: Option<&str>, label: bool) -> Result<()> {
        run(Args {
            input,
            output,
            dtype: dtype.map(str::to_string),
            label,
        })
    }

    #[test]
    fn nifti_to_nifti_keeps_forms_values_and_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.nii.gz");
        convert(fixture("be_int16.nii"), out.clone(), None, false).unwrap();
        let (a, ha) = read_nifti(&fixture("be_int16.nii")).unwrap();
        let (b, hb) = read_nifti(&out).unwrap();
        assert_eq!(a.data, b.data);
        assert_eq!(hb.data_type(), Some(DataType::I16));
        assert!(hb.little_endian && !ha.little_endian);
        assert_eq!(
            (hb.qform_code, hb.sform_code),
            (ha.qform_code, ha.sform_code)
        );
        assert_eq!(hb.srow, ha.srow);
        assert_eq!(hb.quatern, ha.quatern);

        // scaled int16 becomes float32 by default, with the scaled values
        let out2 = dir.path().join("s.nii");
        convert(fixture("scaled_int16.nii.gz"), out2.clone(), None, false).unwrap();
        let (s, hs) = read_nifti(&out2).unwrap();
        assert_eq!(hs.data_type(), Some(DataType::F32));
        assert_eq!(
            s.data,
            read_nifti(&fixture("scaled_int16.nii.gz")).unwrap().0.data
        );
    }

    #[test]
    fn png_nifti_png_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let nii = dir.path().join("g.nii.gz");
        convert(fixture("grey16.png"), nii.clone(), None, false).unwrap();
        assert_eq!(
            read_nifti_header(&nii).unwrap().data_type(),
            Some(DataType::U16)
        );
        let png = dir.path().join("g.png");
        convert(nii, png.clone(), None, false).unwrap();
        assert_eq!(
            read_image(&png).unwrap().data,
            read_image(&fixture("grey16.png")).unwrap().data
        );

        let lab = dir.path().join("l.png");
        convert(fixture("label_2d_u8.nii.gz"), lab.clone(), None, true).unwrap();
        let (l, _) = read_nifti_label(&fixture("label_2d_u8.nii.gz")).unwrap();
        assert_eq!(read_label(&lab).unwrap().data, l.data);

        // floats do not fit a PNG without an explicit dtype; 3D does not fit at all
        let e = convert(
            fixture("sform_only_f64.nii"),
            dir.path().join("f.png"),
            None,
            false,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("--dtype"), "{e:#}");
        let e = convert(
            fixture("be_int16.nii"),
            dir.path().join("v.png"),
            Some("uint16"),
            false,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("2D"), "{e:#}");
        let e = convert(
            fixture("be_int16.nii"),
            dir.path().join("v.nii"),
            Some("complex"),
            false,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("complex"), "{e:#}");
    }
}
