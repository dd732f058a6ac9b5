//! Moiré: the interference pattern that appears when a camera sensor grid
//! samples a screen's pixel grid, modelled as two slightly mis-rotated,
//! slightly detuned high-frequency gratings whose product (or sum) beats at
//! a low frequency.

use crate::photo::{check_opt_window, draw, for_each_slice, skipped, window_of};
use crate::pipeline::{check_p, check_range, record, Transform, Validate};
use medseg_core::{Error, Result, Sample};
use ndarray::{Array2, Axis};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// How the two gratings are combined into a pattern in `[-1, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MoireCombine {
    /// `g1 * g2`: sum and difference frequencies, the difference being the beat.
    #[default]
    Product,
    /// `(g1 + g2) / 2`: the beat shows as an envelope of the fine fringes.
    Sum,
}

/// How the pattern changes the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MoireMode {
    /// `x' = lo + (x - lo) (1 + a m)`: stronger where the screen is brighter.
    #[default]
    Multiplicative,
    /// `x' = x + a (hi - lo) m`.
    Additive,
}

/// The parameters of one moiré pattern (see [`moire_pattern`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MoireParams {
    /// Frequency of the first grating, cycles per pixel.
    pub frequency: f64,
    /// Direction of the first grating's wave vector, degrees from the W axis
    /// towards the H axis.
    pub angle_deg: f64,
    /// Frequency of the second grating, cycles per pixel.
    pub frequency2: f64,
    /// Direction of the second grating, degrees.
    pub angle2_deg: f64,
    /// Phase of the first grating, radians.
    pub phase: f64,
    /// Phase of the second grating, radians.
    pub phase2: f64,
    /// How the gratings combine.
    pub combine: MoireCombine,
}

/// The pattern `m(y, x)` on an `h x w` grid (`y` the row, `x` the column):
/// with `g_i = cos(2 pi f_i (x cos a_i + y sin a_i) + phi_i)`, `m = g1 g2`
/// (product) or `(g1 + g2) / 2` (sum); values in `[-1, 1]`.
pub fn moire_pattern(h: usize, w: usize, p: &MoireParams) -> Array2<f32> {
    let (s1, c1) = p.angle_deg.to_radians().sin_cos();
    let (s2, c2) = p.angle2_deg.to_radians().sin_cos();
    Array2::from_shape_fn((h, w), |(y, x)| {
        let (x, y) = (x as f64, y as f64);
        let g1 = (2.0 * PI * p.frequency * (x * c1 + y * s1) + p.phase).cos();
        let g2 = (2.0 * PI * p.frequency2 * (x * c2 + y * s2) + p.phase2).cos();
        (match p.combine {
            MoireCombine::Product => g1 * g2,
            MoireCombine::Sum => 0.5 * (g1 + g2),
        }) as f32
    })
}

fn default_p() -> f64 {
    0.5
}
fn default_frequency() -> [f64; 2] {
    [0.3, 0.48]
}
fn default_angle() -> [f64; 2] {
    [0.0, 180.0]
}
fn default_mis_rotation() -> [f64; 2] {
    [-4.0, 4.0]
}
fn default_detune() -> [f64; 2] {
    [0.97, 1.03]
}
fn default_amplitude() -> [f64; 2] {
    [0.03, 0.1]
}
fn yes() -> bool {
    true
}

/// With probability `p`, moiré-like interference (see [`moire_pattern`]): a
/// grating of frequency `frequency_range` (cycles per pixel; fine fringes
/// near the sampling limit of 0.5) at an angle from `angle_range` (degrees),
/// and a second one rotated by `mis_rotation_range` degrees and with its
/// frequency multiplied by `detune_range`; their product or sum (`combine`)
/// is scaled by an amplitude from `amplitude_range` (a fraction of the
/// window width for `additive`, of the brightness above the window's low end
/// for `multiplicative`, see [`MoireMode`]). Phases are uniform in
/// `[0, 2 pi)` unless `random_phase = false` (then 0). The window defaults to
/// the sample's own min and max. Every channel and every depth slice get the
/// same pattern.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Moire {
    /// Range of the first grating's frequency, cycles per pixel, in (0, 0.5].
    #[serde(default = "default_frequency")]
    pub frequency_range: [f64; 2],
    /// Range of the first grating's angle, degrees.
    #[serde(default = "default_angle")]
    pub angle_range: [f64; 2],
    /// Range of the second grating's extra rotation, degrees.
    #[serde(default = "default_mis_rotation")]
    pub mis_rotation_range: [f64; 2],
    /// Range of the second grating's frequency ratio.
    #[serde(default = "default_detune")]
    pub detune_range: [f64; 2],
    /// Range of the amplitude.
    #[serde(default = "default_amplitude")]
    pub amplitude_range: [f64; 2],
    /// Product or sum of the gratings.
    #[serde(default)]
    pub combine: MoireCombine,
    /// Multiplicative or additive.
    #[serde(default)]
    pub mode: MoireMode,
    /// Random phases (else both 0).
    #[serde(default = "yes")]
    pub random_phase: bool,
    /// Intensity window (default: the sample's min and max).
    #[serde(default)]
    pub window: Option<[f32; 2]>,
    /// Probability of applying.
    #[serde(default = "default_p")]
    pub p: f64,
}

impl Validate for Moire {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)?;
        check_opt_window("window", self.window)?;
        for (k, r) in [
            ("frequency_range", self.frequency_range),
            ("angle_range", self.angle_range),
            ("mis_rotation_range", self.mis_rotation_range),
            ("detune_range", self.detune_range),
            ("amplitude_range", self.amplitude_range),
        ] {
            check_range(k, r)?;
        }
        if self.frequency_range[0] <= 0.0 || self.frequency_range[1] > 0.5 {
            return Err(Error::invalid(
                "frequency_range",
                format!(
                    "frequencies must lie in (0, 0.5] cycles per pixel, got {:?}",
                    self.frequency_range
                ),
            ));
        }
        if self.detune_range[0] <= 0.0 {
            return Err(Error::invalid("detune_range", "ratios must be positive"));
        }
        if self.amplitude_range[0] < 0.0 {
            return Err(Error::invalid("amplitude_range", "must be non-negative"));
        }
        Ok(())
    }
}

impl Moire {
    /// Draws a pattern's parameters and amplitude.
    pub(crate) fn draw_params(&self, rng: &mut ChaCha8Rng) -> (MoireParams, f64) {
        let frequency = draw(rng, self.frequency_range);
        let angle_deg = draw(rng, self.angle_range);
        let angle2_deg = angle_deg + draw(rng, self.mis_rotation_range);
        let frequency2 = frequency * draw(rng, self.detune_range);
        let amplitude = draw(rng, self.amplitude_range);
        let (phase, phase2) = if self.random_phase {
            (
                rng.random_range(0.0..2.0 * PI),
                rng.random_range(0.0..2.0 * PI),
            )
        } else {
            (0.0, 0.0)
        };
        (
            MoireParams {
                frequency,
                angle_deg,
                frequency2,
                angle2_deg,
                phase,
                phase2,
                combine: self.combine,
            },
            amplitude,
        )
    }
}

/// Adds the pattern to every channel and slice of `sample`'s image.
pub(crate) fn apply_moire(
    sample: &mut Sample,
    params: &MoireParams,
    amplitude: f64,
    mode: MoireMode,
    window: [f32; 2],
) -> Result<()> {
    let a = amplitude as f32;
    let [lo, hi] = window;
    let mut pattern: Option<Array2<f32>> = None;
    for_each_slice(&mut sample.image.data, |mut v| {
        let (h, w) = (v.shape()[1], v.shape()[2]);
        let m = pattern.get_or_insert_with(|| moire_pattern(h, w, params));
        for mut chan in v.axis_iter_mut(Axis(0)) {
            chan.zip_mut_with(m, |x, &m| {
                *x = match mode {
                    MoireMode::Multiplicative => lo + (*x - lo) * (1.0 + a * m),
                    MoireMode::Additive => *x + a * (hi - lo) * m,
                }
            });
        }
        Ok(())
    })
}

impl Transform for Moire {
    fn name(&self) -> &str {
        "Moire"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, mut sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        if rng.random::<f64>() >= self.p {
            return Ok(skipped(sample, "Moire"));
        }
        let (params, amplitude) = self.draw_params(rng);
        let window = window_of(&sample.image.data, self.window, "window")?;
        apply_moire(&mut sample, &params, amplitude, self.mode, window)?;
        record(
            &mut sample,
            "Moire",
            serde_json::json!({
                "pattern": params, "amplitude": amplitude, "mode": self.mode, "window": window,
            }),
        );
        Ok(sample)
    }
}
