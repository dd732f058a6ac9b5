//! 2D images: PNG (8/16-bit grey, grey+alpha, RGB, RGBA), JPEG and TIFF read;
//! PNG write.
//!
//! A 2D file reads as `[C, H, W]` with its samples' raw values as `f32`
//! (0..=255 for 8-bit, 0..=65535 for 16-bit; no normalisation), channels in
//! file order (grey, or R, G, B, then alpha when present). The geometry is
//! unit spacing, zero origin and the identity direction.

use crate::dtype::DataType;
use image::DynamicImage;
use medseg_core::write_atomic_with;
use medseg_core::{Error, Geometry, Image, LabelMap, Result};
use ndarray::{ArrayD, IxDyn};
use std::path::Path;

fn planar<T: Copy + Into<f64>>(raw: &[T], c: usize, h: usize, w: usize) -> Vec<f64> {
    let n = h * w;
    let mut out = vec![0f64; c * n];
    for (p, px) in raw.chunks_exact(c).enumerate() {
        for (ch, &v) in px.iter().enumerate() {
            out[ch * n + p] = v.into();
        }
    }
    out
}

/// Decodes a PNG/JPEG/TIFF into `(planar f64 values, channels, height, width)`.
fn decode(path: &Path) -> Result<(Vec<f64>, usize, usize, usize)> {
    let reader = image::ImageReader::open(path).map_err(|e| Error::io(path, e))?;
    let reader = reader
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let img = reader
        .decode()
        .map_err(|e| Error::format(path, format!("cannot decode image: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(Error::format(path, "image has no pixels"));
    }
    let (vals, c) = match img {
        DynamicImage::ImageLuma8(b) => (planar(b.as_raw(), 1, h, w), 1),
        DynamicImage::ImageLumaA8(b) => (planar(b.as_raw(), 2, h, w), 2),
        DynamicImage::ImageRgb8(b) => (planar(b.as_raw(), 3, h, w), 3),
        DynamicImage::ImageRgba8(b) => (planar(b.as_raw(), 4, h, w), 4),
        DynamicImage::ImageLuma16(b) => (planar(b.as_raw(), 1, h, w), 1),
        DynamicImage::ImageLumaA16(b) => (planar(b.as_raw(), 2, h, w), 2),
        DynamicImage::ImageRgb16(b) => (planar(b.as_raw(), 3, h, w), 3),
        DynamicImage::ImageRgba16(b) => (planar(b.as_raw(), 4, h, w), 4),
        DynamicImage::ImageRgb32F(b) => (planar(b.as_raw(), 3, h, w), 3),
        DynamicImage::ImageRgba32F(b) => (planar(b.as_raw(), 4, h, w), 4),
        other => (planar(other.to_rgba32f().as_raw(), 4, h, w), 4),
    };
    Ok((vals, c, h, w))
}

/// Reads a PNG, JPEG or TIFF as a 2D image `[C, H, W]` (raw sample values).
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened; [`Error::Format`] naming the
/// file when it cannot be decoded.
pub fn read_raster(path: &Path) -> Result<Image> {
    let (vals, c, h, w) = decode(path)?;
    let data = vals.into_iter().map(|v| v as f32).collect();
    let arr = ArrayD::from_shape_vec(IxDyn(&[c, h, w]), data)
        .map_err(|e| Error::format(path, e.to_string()))?;
    Image::new(arr, Geometry::identity())
}

/// Reads a PNG, JPEG or TIFF as a label map `[1, H, W]`.
///
/// Grey images are used as they are; colour images are accepted only when
/// their colour channels are equal everywhere (alpha is ignored).
///
/// # Errors
/// [`Error::Format`] naming the file for colour labels, non-integer or
/// out-of-range values, or undecodable data.
pub fn read_raster_label(path: &Path) -> Result<LabelMap> {
    let (vals, c, h, w) = decode(path)?;
    let n = h * w;
    let colour = if c >= 3 { 3 } else { 1 };
    if colour == 3 {
        for p in 0..n {
            if vals[p] != vals[n + p] || vals[p] != vals[2 * n + p] {
                return Err(Error::format(
                    path,
                    format!(
                        "a label image must be greyscale; pixel (row {}, column {}) has colour ({}, {}, {})",
                        p / w,
                        p % w,
                        vals[p],
                        vals[n + p],
                        vals[2 * n + p]
                    ),
                ));
            }
        }
    }
    let mut out = Vec::with_capacity(n);
    for (p, &v) in vals[..n].iter().enumerate() {
        if v.fract() != 0.0 || !(0.0..=65535.0).contains(&v) {
            return Err(Error::format(
                path,
                format!(
                    "label values must be integers in 0..=65535, found {v} at (row {}, column {})",
                    p / w,
                    p % w
                ),
            ));
        }
        out.push(v as u16);
    }
    let arr = ArrayD::from_shape_vec(IxDyn(&[1, h, w]), out)
        .map_err(|e| Error::format(path, e.to_string()))?;
    LabelMap::new(arr, Geometry::identity())
}

/// `(channels, height, width)` of a 2D array, also accepting `[C, 1, H, W]`.
fn plane_shape(shape: &[usize], path: &Path) -> Result<(usize, usize, usize)> {
    match *shape {
        [c, h, w] => Ok((c, h, w)),
        [c, 1, h, w] => Ok((c, h, w)),
        _ => Err(Error::format(
            path,
            format!(
                "PNG holds 2D images only; got shape {shape:?} (write volumes as .nii/.nii.gz)"
            ),
        )),
    }
}

fn encode_png(
    path: &Path,
    samples: &[u8],
    c: usize,
    h: usize,
    w: usize,
    sixteen: bool,
) -> Result<()> {
    let colour = match c {
        1 => png::ColorType::Grayscale,
        2 => png::ColorType::GrayscaleAlpha,
        3 => png::ColorType::Rgb,
        4 => png::ColorType::Rgba,
        _ => {
            return Err(Error::format(
                path,
                format!("PNG holds 1 to 4 channels, the image has {c}"),
            ))
        }
    };
    let (w32, h32) = (
        u32::try_from(w).map_err(|_| Error::format(path, "image too wide for PNG"))?,
        u32::try_from(h).map_err(|_| Error::format(path, "image too tall for PNG"))?,
    );
    write_atomic_with(path, |out| {
        let mut enc = png::Encoder::new(out, w32, h32);
        enc.set_color(colour);
        enc.set_depth(if sixteen {
            png::BitDepth::Sixteen
        } else {
            png::BitDepth::Eight
        });
        let mut writer = enc.write_header().map_err(std::io::Error::other)?;
        writer
            .write_image_data(samples)
            .map_err(std::io::Error::other)?;
        writer.finish().map_err(std::io::Error::other)?;
        Ok(())
    })
}

/// Interleaves planar values `[C, H*W]` into PNG sample bytes.
fn interleave(planes: &[f64], c: usize, n: usize, sixteen: bool) -> Vec<u8> {
    let bytes = if sixteen { 2 } else { 1 };
    let mut out = vec![0u8; planes.len() * bytes];
    for p in 0..n {
        for ch in 0..c {
            let v = planes[ch * n + p];
            let v = if v.is_nan() { 0.0 } else { v.round() };
            let o = (p * c + ch) * bytes;
            if sixteen {
                out[o..o + 2].copy_from_slice(&(v as u16).to_be_bytes());
            } else {
                out[o] = v as u8;
            }
        }
    }
    out
}

/// Writes a 2D image (`[C, H, W]` or `[C, 1, H, W]`, 1 to 4 channels: grey,
/// grey+alpha, RGB, RGBA) as an 8-bit (`DataType::U8`) or 16-bit
/// (`DataType::U16`) PNG. Values are rounded and saturated.
///
/// # Errors
/// [`Error::Format`] naming the file for a volume, more than 4 channels or
/// a data type other than `uint8`/`uint16`; [`Error::Io`] on write failure.
pub fn write_png(path: &Path, image: &Image, dtype: DataType) -> Result<()> {
    let (c, h, w) = plane_shape(image.data.shape(), path)?;
    let sixteen = match dtype {
        DataType::U8 => false,
        DataType::U16 => true,
        other => {
            return Err(Error::format(
                path,
                format!("PNG stores uint8 or uint16, not {other}"),
            ))
        }
    };
    let planes: Vec<f64> = image.data.iter().map(|&v| v as f64).collect();
    let samples = interleave(&planes, c, h * w, sixteen);
    encode_png(path, &samples, c, h, w, sixteen)
}

/// Writes a 2D label map as a grey PNG: 8-bit when every value is below 256,
/// else 16-bit.
pub fn write_png_label(path: &Path, label: &LabelMap) -> Result<()> {
    let (c, h, w) = plane_shape(label.data.shape(), path)?;
    let sixteen = label.data.iter().any(|&v| v > 255);
    let planes: Vec<f64> = label.data.iter().map(|&v| v as f64).collect();
    let samples = interleave(&planes, c, h * w, sixteen);
    encode_png(path, &samples, c, h, w, sixteen)
}

/// The on-disk sample type of a PNG/JPEG/TIFF (`uint8`, `uint16` or
/// `float32`), read from its header without decoding the pixels.
///
/// # Errors
/// [`Error::Io`] or [`Error::Format`] naming the file.
pub fn raster_sample_type(path: &Path) -> Result<DataType> {
    use image::ImageDecoder;
    let reader = image::ImageReader::open(path).map_err(|e| Error::io(path, e))?;
    let reader = reader
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let dec = reader
        .into_decoder()
        .map_err(|e| Error::format(path, format!("cannot decode image: {e}")))?;
    let ct = dec.color_type();
    let per_sample = ct.bytes_per_pixel() as usize / ct.channel_count() as usize;
    Ok(match per_sample {
        1 => DataType::U8,
        2 => DataType::U16,
        _ => DataType::F32,
    })
}
