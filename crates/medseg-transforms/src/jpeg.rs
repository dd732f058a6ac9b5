//! JPEG-like quality loss: baseline JPEG's lossy steps (8 x 8 block DCT,
//! quantisation with the standard tables scaled by libjpeg's quality
//! formula, YCbCr with 4:2:0 chroma subsampling for RGB, 8-bit samples)
//! without the entropy coding, which is lossless.

// block code reads best with explicit indices
#![allow(clippy::needless_range_loop)]

use crate::photo::{check_opt_window, for_each_slice, from_unit, skipped, to_unit, window_of};
use crate::pipeline::{check_p, record, Transform, Validate};
use medseg_core::{Error, Result, Sample};
use ndarray::{Array2, ArrayView2, ArrayViewMut3, Axis};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use std::sync::OnceLock;

/// The luminance quantisation table of the JPEG standard (ITU T.81 Annex K,
/// table K.1), row-major: row = vertical frequency, column = horizontal.
pub const LUMA_TABLE: [u16; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, //
    12, 12, 14, 19, 26, 58, 60, 55, //
    14, 13, 16, 24, 40, 57, 69, 56, //
    14, 17, 22, 29, 51, 87, 80, 62, //
    18, 22, 37, 56, 68, 109, 103, 77, //
    24, 35, 55, 64, 81, 104, 113, 92, //
    49, 64, 78, 87, 103, 121, 120, 101, //
    72, 92, 95, 98, 112, 100, 103, 99,
];

/// The chrominance quantisation table of the JPEG standard (table K.2), row-major.
pub const CHROMA_TABLE: [u16; 64] = [
    17, 18, 24, 47, 99, 99, 99, 99, //
    18, 21, 26, 66, 99, 99, 99, 99, //
    24, 26, 56, 99, 99, 99, 99, 99, //
    47, 66, 99, 99, 99, 99, 99, 99, //
    99, 99, 99, 99, 99, 99, 99, 99, //
    99, 99, 99, 99, 99, 99, 99, 99, //
    99, 99, 99, 99, 99, 99, 99, 99, //
    99, 99, 99, 99, 99, 99, 99, 99,
];

/// The quantisation table for `quality` (1..=100, clamped) as libjpeg's
/// `jpeg_set_quality(.., force_baseline = TRUE)` makes it: scale
/// `5000 / q` below 50, `200 - 2 q` from 50; entries `(base * scale + 50) /
/// 100` (integer division) clamped to `1..=255`.
pub fn quant_table(quality: u32, chroma: bool) -> [u16; 64] {
    let q = quality.clamp(1, 100);
    let scale = if q < 50 { 5000 / q } else { 200 - 2 * q };
    let base = if chroma { &CHROMA_TABLE } else { &LUMA_TABLE };
    let mut out = [0u16; 64];
    for (o, &b) in out.iter_mut().zip(base) {
        *o = ((b as u32 * scale + 50) / 100).clamp(1, 255) as u16;
    }
    out
}

/// `C(u) / 2 * cos((2 x + 1) u pi / 16)`, `C(0) = 1 / sqrt(2)`, `C(u > 0) = 1`:
/// the orthonormal 8-point DCT-II matrix, indexed `[u][x]`.
fn dct_matrix() -> &'static [[f64; 8]; 8] {
    static M: OnceLock<[[f64; 8]; 8]> = OnceLock::new();
    M.get_or_init(|| {
        let mut m = [[0.0; 8]; 8];
        for u in 0..8 {
            let c = if u == 0 { 0.5f64.sqrt() } else { 1.0 };
            for x in 0..8 {
                m[u][x] =
                    c / 2.0 * ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos();
            }
        }
        m
    })
}

/// The JPEG forward DCT of an 8 x 8 block (row-major, `block[y * 8 + x]`):
/// `F(v, u) = 1/4 C(u) C(v) sum_{y,x} f(y, x) cos((2x+1) u pi / 16)
/// cos((2y+1) v pi / 16)`, stored `F[v * 8 + u]`.
pub fn dct8x8(block: &[f64; 64]) -> [f64; 64] {
    let m = dct_matrix();
    let mut tmp = [0.0; 64];
    // rows: tmp[y][u] = sum_x m[u][x] f[y][x]
    for y in 0..8 {
        for u in 0..8 {
            tmp[y * 8 + u] = (0..8).map(|x| m[u][x] * block[y * 8 + x]).sum();
        }
    }
    let mut out = [0.0; 64];
    for v in 0..8 {
        for u in 0..8 {
            out[v * 8 + u] = (0..8).map(|y| m[v][y] * tmp[y * 8 + u]).sum();
        }
    }
    out
}

/// The inverse of [`dct8x8`].
pub fn idct8x8(coef: &[f64; 64]) -> [f64; 64] {
    let m = dct_matrix();
    let mut tmp = [0.0; 64];
    // tmp[y][u] = sum_v m[v][y] F[v][u]
    for y in 0..8 {
        for u in 0..8 {
            tmp[y * 8 + u] = (0..8).map(|v| m[v][y] * coef[v * 8 + u]).sum();
        }
    }
    let mut out = [0.0; 64];
    for y in 0..8 {
        for x in 0..8 {
            out[y * 8 + x] = (0..8).map(|u| m[u][x] * tmp[y * 8 + u]).sum();
        }
    }
    out
}

/// Quantises DCT coefficients: `round(F / Q)`, halves rounded away from zero
/// (as libjpeg).
pub fn quantise(coef: &[f64; 64], table: &[u16; 64]) -> [i32; 64] {
    let mut out = [0i32; 64];
    for i in 0..64 {
        out[i] = (coef[i] / table[i] as f64).round() as i32;
    }
    out
}

/// One block through the lossy path: level shift by -128, DCT, quantise,
/// dequantise, inverse DCT, shift back, round and clamp to `0..=255`.
pub fn jpeg_block(block: &[f64; 64], table: &[u16; 64]) -> [f64; 64] {
    let mut shifted = [0.0; 64];
    for i in 0..64 {
        shifted[i] = block[i] - 128.0;
    }
    let q = quantise(&dct8x8(&shifted), table);
    let mut deq = [0.0; 64];
    for i in 0..64 {
        deq[i] = q[i] as f64 * table[i] as f64;
    }
    let mut out = idct8x8(&deq);
    for v in out.iter_mut() {
        *v = (*v + 128.0).round().clamp(0.0, 255.0);
    }
    out
}

/// A plane padded to `(ph, pw)` by repeating its last row and column.
fn pad_edge(p: ArrayView2<'_, f64>, ph: usize, pw: usize) -> Array2<f64> {
    let (h, w) = p.dim();
    Array2::from_shape_fn((ph, pw), |(y, x)| p[[y.min(h - 1), x.min(w - 1)]])
}

/// Runs every 8 x 8 block of a plane (dimensions multiples of 8) through
/// [`jpeg_block`], in place.
fn code_plane(p: &mut Array2<f64>, table: &[u16; 64]) {
    let (h, w) = p.dim();
    for by in (0..h).step_by(8) {
        for bx in (0..w).step_by(8) {
            let mut b = [0.0; 64];
            for y in 0..8 {
                for x in 0..8 {
                    b[y * 8 + x] = p[[by + y, bx + x]];
                }
            }
            let out = jpeg_block(&b, table);
            for y in 0..8 {
                for x in 0..8 {
                    p[[by + y, bx + x]] = out[y * 8 + x];
                }
            }
        }
    }
}

fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}

/// A grey plane (values `0..=255`) through JPEG at `quality`: padded by edge
/// replication to whole blocks, coded, cropped back.
fn jpeg_grey(p: ArrayView2<'_, f64>, quality: u32) -> Array2<f64> {
    let (h, w) = p.dim();
    let mut padded = pad_edge(p, round_up(h, 8), round_up(w, 8));
    code_plane(&mut padded, &quant_table(quality, false));
    padded.slice(ndarray::s![..h, ..w]).to_owned()
}

/// libjpeg's `h2v2_downsample`: 2 x 2 means with the alternating rounding
/// bias 1, 2, 1, 2... along each output row.
fn downsample(p: ArrayView2<'_, f64>) -> Array2<f64> {
    let (h, w) = p.dim();
    Array2::from_shape_fn((h / 2, w / 2), |(y, x)| {
        let s = p[[2 * y, 2 * x]]
            + p[[2 * y, 2 * x + 1]]
            + p[[2 * y + 1, 2 * x]]
            + p[[2 * y + 1, 2 * x + 1]];
        let bias = if x % 2 == 0 { 1.0 } else { 2.0 };
        ((s + bias) / 4.0).floor()
    })
}

/// libjpeg's `h2v2_fancy_upsample` (triangle filter, weights 9/3/3/1 out of
/// 16, integer rounding biases 8 and 7, edges replicated) of an `h x w`
/// plane to `2h x 2w`.
fn fancy_upsample(p: ArrayView2<'_, f64>) -> Array2<f64> {
    let (h, w) = p.dim();
    let mut out = Array2::zeros((2 * h, 2 * w));
    let mut colsum = vec![0.0; w];
    for y in 0..h {
        for v in 0..2 {
            let other = if v == 0 {
                y.saturating_sub(1)
            } else {
                (y + 1).min(h - 1)
            };
            for x in 0..w {
                colsum[x] = 3.0 * p[[y, x]] + p[[other, x]];
            }
            for x in 0..w {
                let last = colsum[x.saturating_sub(1)];
                let next = colsum[(x + 1).min(w - 1)];
                out[[2 * y + v, 2 * x]] = ((3.0 * colsum[x] + last + 8.0) / 16.0).floor();
                out[[2 * y + v, 2 * x + 1]] = ((3.0 * colsum[x] + next + 7.0) / 16.0).floor();
            }
        }
    }
    out
}

/// An RGB picture (3 planes, values `0..=255`) through JPEG at `quality` as
/// libjpeg codes it by default: JFIF YCbCr (rounded to 8 bits), chroma
/// 2 x 2 subsampled (4:2:0), luma coded with the luminance table and chroma
/// with the chrominance table, decoded with libjpeg's "fancy" upsampling and
/// converted back to RGB (rounded, clamped).
fn jpeg_rgb(
    r: ArrayView2<'_, f64>,
    g: ArrayView2<'_, f64>,
    b: ArrayView2<'_, f64>,
    quality: u32,
) -> [Array2<f64>; 3] {
    let (h, w) = r.dim();
    let clamp8 = |v: f64| v.round().clamp(0.0, 255.0);
    let mut y = Array2::zeros((h, w));
    let mut cb = Array2::zeros((h, w));
    let mut cr = Array2::zeros((h, w));
    for i in 0..h {
        for j in 0..w {
            let (rr, gg, bb) = (r[[i, j]], g[[i, j]], b[[i, j]]);
            y[[i, j]] = clamp8(0.299 * rr + 0.587 * gg + 0.114 * bb);
            cb[[i, j]] = clamp8(-0.168_735_89 * rr - 0.331_264_11 * gg + 0.5 * bb + 128.0);
            cr[[i, j]] = clamp8(0.5 * rr - 0.418_687_59 * gg - 0.081_312_41 * bb + 128.0);
        }
    }
    let luma_q = quant_table(quality, false);
    let chroma_q = quant_table(quality, true);
    let mut yp = pad_edge(y.view(), round_up(h, 8), round_up(w, 8));
    code_plane(&mut yp, &luma_q);
    // chroma: pad to the full width of the chroma blocks (x2) and to even
    // rows, downsample, then pad the subsampled rows to whole blocks
    let (ch, cw) = (h.div_ceil(2), w.div_ceil(2));
    let full_w = round_up(cw, 8) * 2;
    let mut chroma = [cb, cr].map(|c| {
        let ds = downsample(pad_edge(c.view(), 2 * ch, full_w).view());
        let mut p = pad_edge(ds.view(), round_up(ch, 8), round_up(cw, 8));
        code_plane(&mut p, &chroma_q);
        let real = p.slice(ndarray::s![..ch, ..cw]).to_owned();
        fancy_upsample(real.view())
    });
    let [cbu, cru] = &mut chroma;
    let mut out = [
        Array2::zeros((h, w)),
        Array2::zeros((h, w)),
        Array2::zeros((h, w)),
    ];
    for i in 0..h {
        for j in 0..w {
            let (yy, u, v) = (yp[[i, j]], cbu[[i, j]] - 128.0, cru[[i, j]] - 128.0);
            out[0][[i, j]] = clamp8(yy + 1.402 * v);
            out[1][[i, j]] = clamp8(yy - 0.344_136_29 * u - 0.714_136_29 * v);
            out[2][[i, j]] = clamp8(yy + 1.772 * u);
        }
    }
    out
}

/// A picture `[C, H, W]` with values in `0..=255` through JPEG coding at
/// `quality` (1..=100), in place. Values are first rounded and clamped to
/// 8 bits. Three channels are taken as RGB (YCbCr, 4:2:0 chroma); any other
/// number of channels is coded channel by channel as grey pictures.
pub fn jpeg_like(mut img: ArrayViewMut3<'_, f32>, quality: u32) {
    if img.is_empty() {
        return;
    }
    let to8 = |v: &f32| (*v as f64).round().clamp(0.0, 255.0);
    if img.len_of(Axis(0)) == 3 {
        let planes: Vec<Array2<f64>> = img.axis_iter(Axis(0)).map(|c| c.map(to8)).collect();
        let out = jpeg_rgb(
            planes[0].view(),
            planes[1].view(),
            planes[2].view(),
            quality,
        );
        for (mut c, o) in img.axis_iter_mut(Axis(0)).zip(out) {
            c.zip_mut_with(&o, |d, s| *d = *s as f32);
        }
    } else {
        for mut c in img.axis_iter_mut(Axis(0)) {
            let o = jpeg_grey(c.map(to8).view(), quality);
            c.zip_mut_with(&o, |d, s| *d = *s as f32);
        }
    }
}

fn default_p() -> f64 {
    0.5
}
fn default_quality() -> [u32; 2] {
    [30, 90]
}

/// With probability `p`, JPEG-like quality loss ([`jpeg_like`]) at a quality
/// drawn uniformly from `quality_range` (whole numbers, both ends included,
/// 1..=100 as libjpeg's). Values are mapped to `0..=255` through `window`
/// (default: the sample's own min and max over all channels; values outside
/// are clipped), rounded to 8 bits, coded and decoded, and mapped back. RGB
/// images (3 channels) are coded in YCbCr with 4:2:0 chroma, others channel
/// by channel as grey; volumes slice by slice.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JpegQuality {
    /// Range of the JPEG quality, `[low, high]` within 1..=100.
    #[serde(default = "default_quality")]
    pub quality_range: [u32; 2],
    /// Intensity window mapped to `0..=255` (default: the sample's min and max).
    #[serde(default)]
    pub window: Option<[f32; 2]>,
    /// Probability of applying.
    #[serde(default = "default_p")]
    pub p: f64,
}

impl Validate for JpegQuality {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)?;
        check_opt_window("window", self.window)?;
        let [a, b] = self.quality_range;
        if !(1..=100).contains(&a) || !(1..=100).contains(&b) || a > b {
            return Err(Error::invalid(
                "quality_range",
                format!("must be [low, high] with 1 <= low <= high <= 100, got [{a}, {b}]"),
            ));
        }
        Ok(())
    }
}

/// Codes every picture of `sample`'s image at `quality` through `window`.
pub(crate) fn apply_jpeg(sample: &mut Sample, quality: u32, window: [f32; 2]) -> Result<()> {
    for_each_slice(&mut sample.image.data, |mut v| {
        to_unit(v.view_mut(), window, 255.0);
        jpeg_like(v.view_mut(), quality);
        from_unit(v, window, 255.0);
        Ok(())
    })
}

impl Transform for JpegQuality {
    fn name(&self) -> &str {
        "JpegQuality"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, mut sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        if rng.random::<f64>() >= self.p {
            return Ok(skipped(sample, "JpegQuality"));
        }
        let [a, b] = self.quality_range;
        let quality = rng.random_range(a..=b);
        let window = window_of(&sample.image.data, self.window, "window")?;
        apply_jpeg(&mut sample, quality, window)?;
        record(
            &mut sample,
            "JpegQuality",
            serde_json::json!({ "quality": quality, "window": window }),
        );
        Ok(sample)
    }
}
