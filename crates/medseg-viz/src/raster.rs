//! Raster pictures: grey-level slices, label overlays, montages and PNG output.

use medseg_core::{Error, Result};
use ndarray::ArrayView2;
use std::path::Path;

/// An 8-bit RGB picture, row-major, three bytes per pixel.
///
/// Pixel `(x, y)` (column `x`, row `y`) starts at byte `3 * (y * width + x)`.
/// Row 0 is the top of the picture and corresponds to array row 0 (the first
/// index of the `H` axis of a `[H, W]` slice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Number of columns.
    pub width: usize,
    /// Number of rows.
    pub height: usize,
    /// `width * height * 3` bytes, RGB, row-major.
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// A picture filled with one colour.
    pub fn filled(width: usize, height: usize, colour: [u8; 3]) -> Self {
        let mut pixels = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            pixels.extend_from_slice(&colour);
        }
        RgbImage {
            width,
            height,
            pixels,
        }
    }

    /// The colour of pixel `(x, y)`, or `None` outside the picture.
    pub fn get(&self, x: usize, y: usize) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = 3 * (y * self.width + x);
        self.pixels.get(i..i + 3).map(|p| [p[0], p[1], p[2]])
    }

    /// Sets pixel `(x, y)`; does nothing outside the picture.
    pub fn put(&mut self, x: usize, y: usize, colour: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = 3 * (y * self.width + x);
            if let Some(p) = self.pixels.get_mut(i..i + 3) {
                p.copy_from_slice(&colour);
            }
        }
    }

    /// Repeats every pixel `factor` times along both axes (nearest neighbour),
    /// to make small slices readable. A factor of 0 is treated as 1.
    pub fn upscale(&self, factor: usize) -> RgbImage {
        let f = factor.max(1);
        let mut out = RgbImage::filled(self.width * f, self.height * f, [0, 0, 0]);
        for y in 0..out.height {
            for x in 0..out.width {
                if let Some(c) = self.get(x / f, y / f) {
                    out.put(x, y, c);
                }
            }
        }
        out
    }
}

/// The fixed colour of label class `class` in overlays (class 0 is drawn
/// transparent by [`overlay_labels`]; its entry here is black).
///
/// Classes 1, 2, 3 are red, green and blue (ACDC: RV, myocardium, LV); larger
/// classes cycle through a 12-colour palette.
pub fn class_colour(class: u16) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 12] = [
        [230, 25, 75],   // red
        [60, 180, 75],   // green
        [0, 130, 200],   // blue
        [255, 225, 25],  // yellow
        [245, 130, 48],  // orange
        [145, 30, 180],  // purple
        [70, 240, 240],  // cyan
        [240, 50, 230],  // magenta
        [210, 245, 60],  // lime
        [250, 190, 212], // pink
        [0, 128, 128],   // teal
        [170, 110, 40],  // brown
    ];
    if class == 0 {
        return [0, 0, 0];
    }
    PALETTE[(class as usize - 1) % PALETTE.len()]
}

/// Linear-interpolated percentile (`q` in `[0, 100]`) of sorted values, as
/// numpy's default `np.percentile`.
fn percentile_sorted(sorted: &[f32], q: f64) -> f32 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q.clamp(0.0, 100.0) / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let t = (pos - lo as f64) as f32;
    sorted[lo] + (sorted[hi] - sorted[lo]) * t
}

/// The default display window of a slice: the 1st and 99th percentiles of its
/// finite values (`(0, 0)` when there is none).
pub fn default_window(slice: ArrayView2<f32>) -> (f32, f32) {
    let mut v: Vec<f32> = slice.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    (percentile_sorted(&v, 1.0), percentile_sorted(&v, 99.0))
}

/// Maps a `[H, W]` slice to grey levels: `window = (lo, hi)` maps `lo` to black
/// and `hi` to white, clamping outside. `None` uses [`default_window`] (1st to
/// 99th percentile). Non-finite values are black. A degenerate window
/// (`hi <= lo`) gives black at or below `lo` and white above.
pub fn grey_to_rgb(slice: ArrayView2<f32>, window: Option<(f32, f32)>) -> RgbImage {
    let (lo, hi) = window.unwrap_or_else(|| default_window(slice));
    let (h, w) = slice.dim();
    let mut pixels = Vec::with_capacity(h * w * 3);
    for &v in slice.iter() {
        let g = if !v.is_finite() {
            0u8
        } else if hi > lo {
            (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0).round() as u8
        } else if v > lo {
            255
        } else {
            0
        };
        pixels.extend_from_slice(&[g, g, g]);
    }
    RgbImage {
        width: w,
        height: h,
        pixels,
    }
}

/// Draws a `[H, W]` label slice over the grey picture of `slice` (default
/// window): every pixel of class `c > 0` becomes
/// `(1 - alpha) * grey + alpha * class_colour(c)`. Class 0 and the `ignore`
/// value stay transparent. `alpha` is clamped to `[0, 1]`.
///
/// The picture has the shape of `slice`; label pixels outside it (when the
/// shapes differ) are not drawn.
pub fn overlay_labels(
    slice: ArrayView2<f32>,
    labels: ArrayView2<u16>,
    alpha: f32,
    ignore: Option<u16>,
) -> RgbImage {
    let mut img = grey_to_rgb(slice, None);
    let a = alpha.clamp(0.0, 1.0);
    let (lh, lw) = labels.dim();
    for y in 0..img.height.min(lh) {
        for x in 0..img.width.min(lw) {
            let c = labels[[y, x]];
            if c == 0 || Some(c) == ignore {
                continue;
            }
            let col = class_colour(c);
            if let Some(g) = img.get(x, y) {
                let mut out = [0u8; 3];
                for k in 0..3 {
                    out[k] = ((1.0 - a) * g[k] as f32 + a * col[k] as f32).round() as u8;
                }
                img.put(x, y, out);
            }
        }
    }
    img
}

/// Colour of the padding between montage tiles.
pub const MONTAGE_BACKGROUND: [u8; 3] = [40, 40, 40];

/// Lays `tiles` out on a grid of `cols` columns (0 is treated as 1), row by
/// row, with `pad` pixels of [`MONTAGE_BACKGROUND`] around and between them.
///
/// Every cell has the size of the largest tile; a smaller tile sits in its
/// cell's top-left corner. The result is
/// `cols * cell_w + (cols + 1) * pad` wide and `rows * cell_h + (rows + 1) * pad`
/// high, `rows = ceil(n / cols)`. With no tiles the result is `pad x pad`
/// (at least 1 x 1).
pub fn montage(tiles: &[RgbImage], cols: usize, pad: usize) -> RgbImage {
    let cols = cols.max(1).min(tiles.len().max(1));
    if tiles.is_empty() {
        let s = pad.max(1);
        return RgbImage::filled(s, s, MONTAGE_BACKGROUND);
    }
    let rows = tiles.len().div_ceil(cols);
    let cw = tiles.iter().map(|t| t.width).max().unwrap_or(0);
    let ch = tiles.iter().map(|t| t.height).max().unwrap_or(0);
    let width = cols * cw + (cols + 1) * pad;
    let height = rows * ch + (rows + 1) * pad;
    let mut out = RgbImage::filled(width, height, MONTAGE_BACKGROUND);
    for (i, t) in tiles.iter().enumerate() {
        let x0 = pad + (i % cols) * (cw + pad);
        let y0 = pad + (i / cols) * (ch + pad);
        for y in 0..t.height {
            for x in 0..t.width {
                if let Some(c) = t.get(x, y) {
                    out.put(x0 + x, y0 + y, c);
                }
            }
        }
    }
    out
}

/// Writes `img` as an 8-bit RGB PNG, atomically
/// ([`medseg_core::write_atomic`]: a temporary file in the same directory,
/// renamed onto `path`).
///
/// # Errors
/// [`Error::Shape`] when the picture is empty or its pixel buffer does not
/// hold `width * height * 3` bytes; [`Error::Io`] on file errors.
pub fn save_png(path: &Path, img: &RgbImage) -> Result<()> {
    if img.width == 0 || img.height == 0 {
        return Err(Error::Shape(format!(
            "{}: cannot write an empty {}x{} picture",
            path.display(),
            img.width,
            img.height
        )));
    }
    if img.pixels.len() != img.width * img.height * 3 {
        return Err(Error::Shape(format!(
            "{}: picture of {}x{} needs {} bytes, has {}",
            path.display(),
            img.width,
            img.height,
            img.width * img.height * 3,
            img.pixels.len()
        )));
    }
    let (w, h) = (
        u32::try_from(img.width).map_err(|_| Error::Shape("picture too wide".into()))?,
        u32::try_from(img.height).map_err(|_| Error::Shape("picture too high".into()))?,
    );
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc
            .write_header()
            .map_err(|e| Error::format(path, format!("PNG header: {e}")))?;
        writer
            .write_image_data(&img.pixels)
            .map_err(|e| Error::format(path, format!("PNG data: {e}")))?;
        writer
            .finish()
            .map_err(|e| Error::format(path, format!("PNG end: {e}")))?;
    }
    medseg_core::write_atomic(path, &bytes)
}
