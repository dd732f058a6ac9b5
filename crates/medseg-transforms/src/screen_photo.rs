//! `ScreenPhoto`: a preset chaining the screen-photo transforms, with one
//! severity knob, to make a "photographed" copy of a test set.

use crate::cast::ScreenColorCast;
use crate::grid::Interp;
use crate::intensity::{blur_channel, GaussianNoise};
use crate::jpeg::apply_jpeg;
use crate::moire::{apply_moire, Moire, MoireCombine, MoireMode};
use crate::perspective::RandomPerspective;
use crate::photo::{check_opt_window, draw, for_each_slice, skipped, window_of};
use crate::pipeline::{check_p, record, Transform, Validate};
use medseg_core::{Error, Result, Sample};
use ndarray::Axis;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

fn one() -> f64 {
    1.0
}

/// A phone photograph of the image shown on a screen, at `severity` in
/// `[0, 1]`; with probability `p` (default 1). Severity 0 is the identity;
/// every range below grows linearly with the severity `s`. The chain, in
/// order (each step draws its parameters from the sample's rng):
///
/// 1. perspective ([`RandomPerspective`], `distortion_scale = 0.3 s`; image
///    outside the screen filled with the window's low end, label with
///    `label_fill`): the only step that moves the label;
/// 2. colour cast ([`ScreenColorCast`]): gain `[1 - 0.25 s, 1 + 0.05 s]` and
///    offset `[-0.02 s, 0.06 s]` per channel, gamma `[1 - 0.2 s, 1 + 0.3 s]`,
///    vignetting `[0.15 s, 0.45 s]` with centre jitter `0.15 s`;
/// 3. moiré ([`Moire`], product of gratings, multiplicative): frequency
///    `[0.3, 0.48]` cycles per pixel, mis-rotation `[-4, 4]` degrees, detune
///    `[0.97, 1.03]`, amplitude `[0.04 s, 0.12 s]`;
/// 4. defocus blur: Gaussian in the H-W plane, sigma `[0.3 s, 1.2 s]` pixels;
/// 5. JPEG ([`crate::JpegQuality`]): quality `[round(100 - 85 s), round(100 -
///    55 s)]` (15 to 45 at severity 1);
/// 6. sensor noise ([`GaussianNoise`]): standard deviation `[0.005 s, 0.02 s]`
///    times the window width.
///
/// All steps share one intensity `window` (default: the sample's min and max
/// before the chain). Volumes are photographed slice by slice with the same
/// draws. Each step appends its own record, then `ScreenPhoto` one with the
/// severity, window and blur.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreenPhoto {
    /// Severity in `[0, 1]`.
    pub severity: f64,
    /// Intensity window shared by the steps (default: the sample's min and max).
    #[serde(default)]
    pub window: Option<[f32; 2]>,
    /// Label value for the area outside the photographed screen.
    #[serde(default)]
    pub label_fill: u16,
    /// Probability of applying.
    #[serde(default = "one")]
    pub p: f64,
}

impl Validate for ScreenPhoto {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)?;
        check_opt_window("window", self.window)?;
        if !(0.0..=1.0).contains(&self.severity) {
            return Err(Error::invalid(
                "severity",
                format!("must be in [0, 1], got {}", self.severity),
            ));
        }
        Ok(())
    }
}

impl ScreenPhoto {
    /// A preset of the given severity with default settings.
    pub fn new(severity: f64) -> Self {
        ScreenPhoto {
            severity,
            window: None,
            label_fill: 0,
            p: 1.0,
        }
    }

    /// The JPEG quality range at this severity.
    pub fn quality_range(&self) -> [u32; 2] {
        let s = self.severity;
        let q = |v: f64| (v.round() as u32).clamp(1, 100);
        [q(100.0 - 85.0 * s), q(100.0 - 55.0 * s)]
    }
}

impl Transform for ScreenPhoto {
    fn name(&self) -> &str {
        "ScreenPhoto"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        self.validate()?;
        if rng.random::<f64>() >= self.p {
            return Ok(skipped(sample, "ScreenPhoto"));
        }
        let s = self.severity;
        let window = window_of(&sample.image.data, self.window, "window")?;
        if s == 0.0 {
            let mut sample = sample;
            record(
                &mut sample,
                "ScreenPhoto",
                serde_json::json!({ "severity": s, "window": window }),
            );
            return Ok(sample);
        }
        let span = (window[1] - window[0]) as f64;
        let perspective = RandomPerspective {
            distortion_scale: 0.3 * s,
            p: 1.0,
            image_interp: Interp::Linear,
            image_fill: Some(window[0]),
            label_fill: self.label_fill,
        };
        let mut sample = perspective.apply(sample, rng)?;
        let cast = ScreenColorCast {
            gain_range: [1.0 - 0.25 * s, 1.0 + 0.05 * s],
            offset_range: [-0.02 * s, 0.06 * s],
            gamma_range: [1.0 - 0.2 * s, 1.0 + 0.3 * s],
            vignetting_range: [0.15 * s, 0.45 * s],
            centre_jitter: 0.15 * s,
            window: Some(window),
            p: 1.0,
        };
        sample = cast.apply(sample, rng)?;
        let moire = Moire {
            frequency_range: [0.3, 0.48],
            angle_range: [0.0, 180.0],
            mis_rotation_range: [-4.0, 4.0],
            detune_range: [0.97, 1.03],
            amplitude_range: [0.04 * s, 0.12 * s],
            combine: MoireCombine::Product,
            mode: MoireMode::Multiplicative,
            random_phase: true,
            window: Some(window),
            p: 1.0,
        };
        let (mp, amp) = moire.draw_params(rng);
        apply_moire(&mut sample, &mp, amp, moire.mode, window)?;
        record(
            &mut sample,
            "Moire",
            serde_json::json!({ "pattern": mp, "amplitude": amp, "mode": moire.mode, "window": window }),
        );
        let sigma = draw(rng, [0.3 * s, 1.2 * s]);
        for_each_slice(&mut sample.image.data, |mut v| {
            for c in v.axis_iter_mut(Axis(0)) {
                blur_channel(c.into_dyn(), sigma);
            }
            Ok(())
        })?;
        let [qa, qb] = self.quality_range();
        let quality = rng.random_range(qa..=qb);
        apply_jpeg(&mut sample, quality, window)?;
        record(
            &mut sample,
            "JpegQuality",
            serde_json::json!({ "quality": quality, "window": window }),
        );
        let noise = GaussianNoise {
            channels: None,
            mean: 0.0,
            std_range: [0.005 * s * span, 0.02 * s * span],
            p: 1.0,
        };
        sample = noise.apply(sample, rng)?;
        record(
            &mut sample,
            "ScreenPhoto",
            serde_json::json!({ "severity": s, "window": window, "blur_sigma": sigma }),
        );
        Ok(sample)
    }
}
