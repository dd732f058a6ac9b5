//! Colour and contrast jitter as torchvision's `ColorJitter`, and the
//! functional operations it is made of (`adjust_brightness`,
//! `adjust_contrast`, `adjust_saturation`, `adjust_hue`), computed in `f32`
//! as torchvision computes them on float tensors, on pictures `[C, H, W]`
//! with values in `[0, 1]`.

use crate::photo::{
    channels, check_opt_window, for_each_slice, from_unit, skipped, to_unit, window_of,
};
use crate::pipeline::{record, Transform, Validate};
use medseg_core::{Error, Result, Sample};
use ndarray::{ArrayViewMut3, Axis, Zip};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Deserializer};

/// torchvision's `rgb_to_grayscale` weights (ITU-R 601-2 luma, as TF).
const GREY: [f32; 3] = [0.2989, 0.587, 0.114];

/// `(ratio * a + (1 - ratio) * b)` clamped to `[0, 1]`, with torchvision's
/// `f32` rounding of the two weights.
#[inline]
fn blend(a: f32, b: f32, ratio: f64) -> f32 {
    let (r, q) = (ratio as f32, (1.0 - ratio) as f32);
    (r * a + q * b).clamp(0.0, 1.0)
}

/// Grey level of an RGB pixel (torchvision's `rgb_to_grayscale`).
#[inline]
fn grey(r: f32, g: f32, b: f32) -> f32 {
    GREY[0] * r + GREY[1] * g + GREY[2] * b
}

fn check_channels(c: usize, what: &str) -> Result<()> {
    if c == 1 || c == 3 {
        Ok(())
    } else {
        Err(Error::invalid(
            what,
            format!("needs a grey (1 channel) or RGB (3 channels) image, got {c} channels"),
        ))
    }
}

/// torchvision's `adjust_brightness` on a picture `[C, H, W]` in `[0, 1]`:
/// `clamp(factor * x, 0, 1)`.
pub fn adjust_brightness(mut img: ArrayViewMut3<'_, f32>, factor: f64) {
    img.mapv_inplace(|x| blend(x, 0.0, factor));
}

/// torchvision's `adjust_contrast` on a picture `[C, H, W]` in `[0, 1]`:
/// blends with the mean grey level of the picture (the mean of the single
/// channel for grey pictures), clamped to `[0, 1]`.
///
/// # Errors
/// [`Error::InvalidValue`] unless the picture has 1 or 3 channels.
pub fn adjust_contrast(mut img: ArrayViewMut3<'_, f32>, factor: f64) -> Result<()> {
    let c = img.len_of(Axis(0));
    check_channels(c, "contrast")?;
    let n = (img.len() / c).max(1) as f64;
    let mean = if c == 3 {
        let mut s = 0f64;
        Zip::from(img.index_axis(Axis(0), 0))
            .and(img.index_axis(Axis(0), 1))
            .and(img.index_axis(Axis(0), 2))
            .for_each(|&r, &g, &b| s += grey(r, g, b) as f64);
        s / n
    } else {
        img.iter().map(|&v| v as f64).sum::<f64>() / n
    } as f32;
    img.mapv_inplace(|x| blend(x, mean, factor));
    Ok(())
}

/// torchvision's `adjust_saturation` on a picture `[C, H, W]` in `[0, 1]`:
/// blends each pixel with its grey level. Grey pictures are returned as they
/// are (as torchvision and PIL do).
///
/// # Errors
/// [`Error::InvalidValue`] unless the picture has 1 or 3 channels.
pub fn adjust_saturation(mut img: ArrayViewMut3<'_, f32>, factor: f64) -> Result<()> {
    let c = img.len_of(Axis(0));
    check_channels(c, "saturation")?;
    if c == 1 {
        return Ok(());
    }
    let (mut r, mut rest) = img.view_mut().split_at(Axis(0), 1);
    let (mut g, mut b) = rest.view_mut().split_at(Axis(0), 1);
    Zip::from(&mut r)
        .and(&mut g)
        .and(&mut b)
        .for_each(|r, g, b| {
            let l = grey(*r, *g, *b);
            *r = blend(*r, l, factor);
            *g = blend(*g, l, factor);
            *b = blend(*b, l, factor);
        });
    Ok(())
}

/// RGB to HSV as torchvision's `_rgb2hsv` (hue in `[0, 1)`).
fn rgb2hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / if eqc { 1.0 } else { maxc };
    let div = if eqc { 1.0 } else { cr };
    let (rc, gc, bc) = ((maxc - r) / div, (maxc - g) / div, (maxc - b) / div);
    let h = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    let h = (h / 6.0 + 1.0) % 1.0;
    (h, s, maxc)
}

/// HSV to RGB as torchvision's `_hsv2rgb`.
fn hsv2rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let i = (i as i32).rem_euclid(6);
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match i {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// torchvision's `adjust_hue` on a picture `[C, H, W]` in `[0, 1]`: shifts
/// the hue by `factor` (a fraction of the colour circle, in
/// `[-0.5, 0.5]`). Grey pictures are returned as they are.
///
/// # Errors
/// [`Error::InvalidValue`] unless the picture has 1 or 3 channels, or for a
/// factor outside `[-0.5, 0.5]`.
pub fn adjust_hue(mut img: ArrayViewMut3<'_, f32>, factor: f64) -> Result<()> {
    let c = img.len_of(Axis(0));
    check_channels(c, "hue")?;
    if !(-0.5..=0.5).contains(&factor) {
        return Err(Error::invalid(
            "hue",
            format!("the hue shift must be in [-0.5, 0.5], got {factor}"),
        ));
    }
    if c == 1 {
        return Ok(());
    }
    let shift = factor as f32;
    let (mut r, mut rest) = img.view_mut().split_at(Axis(0), 1);
    let (mut g, mut b) = rest.view_mut().split_at(Axis(0), 1);
    Zip::from(&mut r)
        .and(&mut g)
        .and(&mut b)
        .for_each(|r, g, b| {
            let (h, s, v) = rgb2hsv(*r, *g, *b);
            let h = (h + shift).rem_euclid(1.0);
            let (nr, ng, nb) = hsv2rgb(h, s, v);
            (*r, *g, *b) = (nr, ng, nb);
        });
    Ok(())
}

/// Reads a jitter parameter: a number `j` or a range `[lo, hi]`.
fn de_jitter<'de, D: Deserializer<'de>>(
    d: D,
    key: &str,
    hue: bool,
) -> std::result::Result<Option<[f64; 2]>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Amount(f64),
        Range([f64; 2]),
    }
    use serde::de::Error as _;
    let raw = Option::<Raw>::deserialize(d).map_err(|_| {
        D::Error::custom(format!(
            "{key}: expected a number (jitter amount) or a [low, high] range"
        ))
    })?;
    Ok(match raw {
        None => None,
        Some(Raw::Range(r)) => Some(r),
        Some(Raw::Amount(j)) if hue => Some([-j, j]),
        Some(Raw::Amount(j)) => Some([(1.0 - j).max(0.0), 1.0 + j]),
    })
}

fn de_brightness<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<[f64; 2]>, D::Error> {
    de_jitter(d, "brightness", false)
}
fn de_contrast<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<[f64; 2]>, D::Error> {
    de_jitter(d, "contrast", false)
}
fn de_saturation<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<[f64; 2]>, D::Error> {
    de_jitter(d, "saturation", false)
}
fn de_hue<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<[f64; 2]>, D::Error> {
    de_jitter(d, "hue", true)
}

fn default_one() -> f64 {
    1.0
}

/// Random brightness, contrast, saturation and hue as torchvision's
/// `ColorJitter`: with probability `p`, a factor is drawn uniformly for each
/// given parameter and the four adjustments ([`adjust_brightness`],
/// [`adjust_contrast`], [`adjust_saturation`], [`adjust_hue`]) run in a
/// random order.
///
/// Each of `brightness`, `contrast`, `saturation` is a number `j >= 0`
/// (factor range `[max(0, 1 - j), 1 + j]`) or a range `[lo, hi]` of factors
/// `>= 0`; `hue` is a number `h` in `[0, 0.5]` (range `[-h, h]`) or a range
/// within `[-0.5, 0.5]`. A parameter that is absent, or whose range is the
/// identity (`[1, 1]`, hue `[0, 0]`), is not applied.
///
/// Grey images (1 channel) get brightness and contrast only: saturation and
/// hue are ignored for them (as in torchvision). RGB images have 3
/// channels; other channel counts are an error.
///
/// Values are mapped to `[0, 1]` through the intensity `window` (default:
/// the sample's own minimum and maximum over all channels), adjusted there
/// (torchvision clamps to `[0, 1]`) and mapped back. Volumes `[C, D, H, W]`
/// get the same factors on every depth slice; contrast uses each slice's
/// own mean.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColorJitter {
    /// Brightness jitter: `j` or `[lo, hi]`.
    #[serde(default, deserialize_with = "de_brightness")]
    pub brightness: Option<[f64; 2]>,
    /// Contrast jitter: `j` or `[lo, hi]`.
    #[serde(default, deserialize_with = "de_contrast")]
    pub contrast: Option<[f64; 2]>,
    /// Saturation jitter: `j` or `[lo, hi]` (RGB only).
    #[serde(default, deserialize_with = "de_saturation")]
    pub saturation: Option<[f64; 2]>,
    /// Hue jitter: `h` in `[0, 0.5]` or `[lo, hi]` within `[-0.5, 0.5]` (RGB only).
    #[serde(default, deserialize_with = "de_hue")]
    pub hue: Option<[f64; 2]>,
    /// Intensity window mapped to `[0, 1]` (default: the sample's min and max).
    #[serde(default)]
    pub window: Option<[f32; 2]>,
    /// Probability of applying.
    #[serde(default = "default_one")]
    pub p: f64,
}

impl Validate for ColorJitter {
    fn validate(&self) -> Result<()> {
        crate::pipeline::check_p("p", self.p)?;
        check_opt_window("window", self.window)?;
        for (k, r) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            if let Some(r) = r {
                crate::pipeline::check_range(k, r)?;
                if r[0] < 0.0 {
                    return Err(Error::invalid(
                        k,
                        format!("factors must be non-negative, got {r:?} (an amount must be >= 0)"),
                    ));
                }
            }
        }
        if let Some(h) = self.hue {
            crate::pipeline::check_range("hue", h)?;
            if h[0] < -0.5 || h[1] > 0.5 {
                return Err(Error::invalid(
                    "hue",
                    format!("must lie within [-0.5, 0.5] (an amount within [0, 0.5]), got {h:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// One adjustment of [`ColorJitter`].
#[derive(Debug, Clone, Copy)]
enum Adjust {
    Brightness,
    Contrast,
    Saturation,
    Hue,
}

impl ColorJitter {
    /// The adjustments that apply to an image of `c` channels, with ranges.
    fn active(&self, c: usize) -> Vec<(Adjust, [f64; 2])> {
        let mut out = Vec::new();
        let not_id = |r: [f64; 2], id: f64| !(r[0] == id && r[1] == id);
        for (a, r, id, rgb_only) in [
            (Adjust::Brightness, self.brightness, 1.0, false),
            (Adjust::Contrast, self.contrast, 1.0, false),
            (Adjust::Saturation, self.saturation, 1.0, true),
            (Adjust::Hue, self.hue, 0.0, true),
        ] {
            if let Some(r) = r {
                if not_id(r, id) && (c == 3 || !rgb_only) {
                    out.push((a, r));
                }
            }
        }
        out
    }
}

impl Transform for ColorJitter {
    fn name(&self) -> &str {
        "ColorJitter"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, mut sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        let c = channels(&sample.image.data);
        check_channels(c, "image")?;
        if rng.random::<f64>() >= self.p {
            return Ok(skipped(sample, "ColorJitter"));
        }
        let mut steps = self.active(c);
        // torchvision draws a random order of the four adjustments
        for i in (1..steps.len()).rev() {
            let j = rng.random_range(0..=i);
            steps.swap(i, j);
        }
        let factors: Vec<(Adjust, f64)> = steps
            .iter()
            .map(|&(a, r)| (a, crate::photo::draw(rng, r)))
            .collect();
        if factors.is_empty() {
            // nothing applies (e.g. saturation and hue on a grey image)
            record(
                &mut sample,
                "ColorJitter",
                serde_json::json!({ "steps": [] }),
            );
            return Ok(sample);
        }
        let window = window_of(&sample.image.data, self.window, "window")?;
        for_each_slice(&mut sample.image.data, |mut v| {
            to_unit(v.view_mut(), window, 1.0);
            for &(a, f) in &factors {
                match a {
                    Adjust::Brightness => adjust_brightness(v.view_mut(), f),
                    Adjust::Contrast => adjust_contrast(v.view_mut(), f)?,
                    Adjust::Saturation => adjust_saturation(v.view_mut(), f)?,
                    Adjust::Hue => adjust_hue(v.view_mut(), f)?,
                }
            }
            from_unit(v, window, 1.0);
            Ok(())
        })?;
        let shown: Vec<serde_json::Value> = factors
            .iter()
            .map(|(a, f)| serde_json::json!([format!("{a:?}").to_lowercase(), f]))
            .collect();
        record(
            &mut sample,
            "ColorJitter",
            serde_json::json!({ "steps": shown, "window": window }),
        );
        Ok(sample)
    }
}
