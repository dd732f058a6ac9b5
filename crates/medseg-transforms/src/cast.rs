//! Screen-photo colour cast: what a phone camera does to the colours of a
//! monitor it photographs (white balance off, display and camera gamma,
//! darker corners).

use crate::photo::{channels, check_opt_window, draw, for_each_slice, skipped, window_of};
use crate::pipeline::{check_p, check_range, record, Transform, Validate};
use medseg_core::{Error, Result, Sample};
use ndarray::{ArrayViewMut3, Axis};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

fn default_p() -> f64 {
    0.5
}
fn default_gain() -> [f64; 2] {
    [0.85, 1.1]
}
fn default_offset() -> [f64; 2] {
    [-0.03, 0.06]
}
fn default_gamma() -> [f64; 2] {
    [0.8, 1.25]
}
fn default_vignetting() -> [f64; 2] {
    [0.0, 0.4]
}

/// The parameters of one colour cast, as drawn by [`ScreenColorCast`].
#[derive(Debug, Clone, PartialEq)]
pub struct CastParams {
    /// Gain per channel.
    pub gain: Vec<f64>,
    /// Offset per channel, as a fraction of the window's width.
    pub offset: Vec<f64>,
    /// Gamma, the same for every channel.
    pub gamma: f64,
    /// Vignetting strength: the fraction of light lost at the corners.
    pub vignetting: f64,
    /// Centre of the vignetting, as a shift from the picture centre in
    /// fractions of `(H, W)`.
    pub centre_shift: [f64; 2],
}

/// Applies a colour cast to a picture `[C, H, W]` whose values are already
/// mapped to `[0, 1]`:
/// `u' = clamp((gain_c * clamp(u, 0, 1)^gamma + offset_c) * v(y, x), 0, 1)`
/// with the vignetting `v = 1 - vignetting * (r / r_max)^2`,
/// `r` the distance (in pixels) from the centre `((H - 1) / 2 + shift_y H,
/// (W - 1) / 2 + shift_x W)` and `r_max` the distance from the picture centre
/// to a corner.
pub fn apply_cast(mut img: ArrayViewMut3<'_, f32>, p: &CastParams) {
    let (h, w) = (img.shape()[1], img.shape()[2]);
    let cy = (h as f64 - 1.0) / 2.0;
    let cx = (w as f64 - 1.0) / 2.0;
    let rmax2 = (cy * cy + cx * cx).max(1.0);
    let (vy, vx) = (
        cy + p.centre_shift[0] * h as f64,
        cx + p.centre_shift[1] * w as f64,
    );
    for (c, mut chan) in img.axis_iter_mut(Axis(0)).enumerate() {
        let (g, o) = (p.gain[c], p.offset[c]);
        for ((y, x), u) in chan.indexed_iter_mut() {
            let (dy, dx) = (y as f64 - vy, x as f64 - vx);
            let v = 1.0 - p.vignetting * (dy * dy + dx * dx) / rmax2;
            let base = (*u as f64).clamp(0.0, 1.0).powf(p.gamma);
            *u = ((g * base + o) * v).clamp(0.0, 1.0) as f32;
        }
    }
}

/// With probability `p`, the colour cast of a photographed screen (see
/// [`apply_cast`]): per-channel gain (`gain_range`) and offset
/// (`offset_range`, a fraction of the window width), one gamma
/// (`gamma_range`) and radial vignetting (`vignetting_range`, the fraction of
/// light lost in the corners, centred within `centre_jitter` of the picture
/// centre, as fractions of the height and width). RGB images get a gain and
/// offset per channel (a colour cast); grey images one of each. Values are
/// mapped to `[0, 1]` through `window` (default: the sample's own min and
/// max), changed, clamped to `[0, 1]` (a camera saturates) and mapped back.
/// Volumes get the same cast on every depth slice.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreenColorCast {
    /// Range of the gain, drawn per channel.
    #[serde(default = "default_gain")]
    pub gain_range: [f64; 2],
    /// Range of the offset (fraction of the window width), drawn per channel.
    #[serde(default = "default_offset")]
    pub offset_range: [f64; 2],
    /// Range of the gamma.
    #[serde(default = "default_gamma")]
    pub gamma_range: [f64; 2],
    /// Range of the vignetting strength, in `[0, 1]`.
    #[serde(default = "default_vignetting")]
    pub vignetting_range: [f64; 2],
    /// Largest shift of the vignetting centre, as a fraction of the picture side.
    #[serde(default)]
    pub centre_jitter: f64,
    /// Intensity window mapped to `[0, 1]` (default: the sample's min and max).
    #[serde(default)]
    pub window: Option<[f32; 2]>,
    /// Probability of applying.
    #[serde(default = "default_p")]
    pub p: f64,
}

impl Validate for ScreenColorCast {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)?;
        check_opt_window("window", self.window)?;
        check_range("gain_range", self.gain_range)?;
        check_range("offset_range", self.offset_range)?;
        check_range("gamma_range", self.gamma_range)?;
        check_range("vignetting_range", self.vignetting_range)?;
        if self.gain_range[0] < 0.0 {
            return Err(Error::invalid("gain_range", "gains must be non-negative"));
        }
        if self.gamma_range[0] <= 0.0 {
            return Err(Error::invalid("gamma_range", "gamma must be positive"));
        }
        if self.vignetting_range[0] < 0.0 || self.vignetting_range[1] > 1.0 {
            return Err(Error::invalid(
                "vignetting_range",
                format!("must lie within [0, 1], got {:?}", self.vignetting_range),
            ));
        }
        if !(0.0..=0.5).contains(&self.centre_jitter) {
            return Err(Error::invalid(
                "centre_jitter",
                format!("must be in [0, 0.5], got {}", self.centre_jitter),
            ));
        }
        Ok(())
    }
}

impl ScreenColorCast {
    /// Draws the cast for an image of `c` channels.
    pub(crate) fn draw_params(&self, rng: &mut ChaCha8Rng, c: usize) -> CastParams {
        let gain = (0..c).map(|_| draw(rng, self.gain_range)).collect();
        let offset = (0..c).map(|_| draw(rng, self.offset_range)).collect();
        let gamma = draw(rng, self.gamma_range);
        let vignetting = draw(rng, self.vignetting_range);
        let j = self.centre_jitter;
        let centre_shift = [draw(rng, [-j, j]), draw(rng, [-j, j])];
        CastParams {
            gain,
            offset,
            gamma,
            vignetting,
            centre_shift,
        }
    }
}

impl Transform for ScreenColorCast {
    fn name(&self) -> &str {
        "ScreenColorCast"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, mut sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        if rng.random::<f64>() >= self.p {
            return Ok(skipped(sample, "ScreenColorCast"));
        }
        let params = self.draw_params(rng, channels(&sample.image.data));
        let window = window_of(&sample.image.data, self.window, "window")?;
        for_each_slice(&mut sample.image.data, |mut v| {
            crate::photo::to_unit(v.view_mut(), window, 1.0);
            apply_cast(v.view_mut(), &params);
            crate::photo::from_unit(v, window, 1.0);
            Ok(())
        })?;
        record(
            &mut sample,
            "ScreenColorCast",
            serde_json::json!({
                "gain": params.gain, "offset": params.offset, "gamma": params.gamma,
                "vignetting": params.vignetting, "centre_shift": params.centre_shift,
                "window": window,
            }),
        );
        Ok(sample)
    }
}
