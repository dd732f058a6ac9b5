//! Noisy-label simulation, as in PyMIC's noisy-label examples: each image is
//! corrupted with probability `p`; in a corrupted image every structure gets
//! one random geometric corruption (dilation or erosion, elastic boundary
//! perturbation, or a shift) and, with a small probability, its whole label
//! is flipped to another class.
//!
//! Radii, amplitudes and shifts are given in mm and converted with the map's
//! spacing; shifts and elastic displacements act in-plane `(H, W)` only, so
//! thick-sliced volumes stay consistent. Optionally a target Dice range is
//! enforced by redrawing the corruption with a stronger or weaker scale.

use crate::grid::{
    ball_offsets, dilate, erode, fill_from_neighbours, label_volume, mean_foreground_dice,
    smooth_field, volume_label,
};
use medseg_core::{Error, LabelMap, Result};
use ndarray::Array3;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Settings of [`corrupt`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoisyConfig {
    /// Probability that an image is corrupted at all.
    pub probability: f64,
    /// Allow dilation/erosion.
    pub dilate_erode: bool,
    /// Allow elastic boundary perturbation.
    pub elastic: bool,
    /// Allow shifts.
    pub shift: bool,
    /// Dilation/erosion radius range in mm.
    pub radius_mm: (f64, f64),
    /// Elastic displacement amplitude range in mm (standard deviation of the
    /// displacement field).
    pub elastic_mm: (f64, f64),
    /// Wavelength of the elastic displacement field in mm.
    pub elastic_wavelength_mm: f64,
    /// Shift length range in mm.
    pub shift_mm: (f64, f64),
    /// Probability, per structure of a corrupted image, of flipping its whole
    /// label to another class (background included).
    pub flip_probability: f64,
    /// When set, a corrupted image's mean foreground Dice against the clean
    /// label is brought within this range by redrawing with a larger or
    /// smaller scale (up to `max_attempts` draws; the closest is kept).
    pub target_dice: Option<(f64, f64)>,
    /// Draws allowed to reach `target_dice`.
    pub max_attempts: usize,
    /// Voxels with this value are left alone and excluded from the Dice.
    pub ignore: Option<u16>,
}

impl Default for NoisyConfig {
    fn default() -> Self {
        NoisyConfig {
            probability: 0.5,
            dilate_erode: true,
            elastic: true,
            shift: true,
            radius_mm: (1.5, 4.5),
            elastic_mm: (1.5, 4.0),
            elastic_wavelength_mm: 30.0,
            shift_mm: (1.5, 5.0),
            flip_probability: 0.05,
            target_dice: None,
            max_attempts: 24,
            ignore: Some(medseg_core::DEFAULT_IGNORE_LABEL),
        }
    }
}

impl NoisyConfig {
    /// Checks ranges.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        for (k, p) in [
            ("probability", self.probability),
            ("flip_probability", self.flip_probability),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::invalid(k, format!("must be in [0, 1], got {p}")));
            }
        }
        for (k, (lo, hi)) in [
            ("radius_mm", self.radius_mm),
            ("elastic_mm", self.elastic_mm),
            ("shift_mm", self.shift_mm),
        ] {
            if !(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi) {
                return Err(Error::invalid(
                    k,
                    format!("need 0 <= lo <= hi, got ({lo}, {hi})"),
                ));
            }
        }
        if !(self.elastic_wavelength_mm.is_finite() && self.elastic_wavelength_mm > 0.0) {
            return Err(Error::invalid(
                "elastic_wavelength_mm",
                format!("must be > 0, got {}", self.elastic_wavelength_mm),
            ));
        }
        if !(self.dilate_erode || self.elastic || self.shift) && self.flip_probability == 0.0 {
            return Err(Error::invalid(
                "noise operations",
                "all corruptions are disabled",
            ));
        }
        if let Some((lo, hi)) = self.target_dice {
            if !(0.0 <= lo && lo <= hi && hi <= 1.0) {
                return Err(Error::invalid(
                    "target_dice",
                    format!("need 0 <= lo <= hi <= 1, got ({lo}, {hi})"),
                ));
            }
        }
        Ok(())
    }
}

/// What [`corrupt`] did to one label map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoisyReport {
    /// Whether the image was drawn for corruption.
    pub corrupted: bool,
    /// Mean foreground Dice of the noisy map against the clean one.
    pub dice: f64,
    /// The corruptions applied, e.g. `"3:dilate 2.1mm"`.
    pub operations: Vec<String>,
    /// Scale of the magnitudes finally used (1 without a target Dice).
    pub scale: f64,
    /// Whether the Dice lies in `target_dice` (true without a target).
    pub in_target: bool,
}

/// Corrupts `label` (`[1, H, W]` or `[1, D, H, W]`). Deterministic for a
/// given `seed`.
///
/// # Errors
/// [`Error::InvalidValue`] for an invalid config; [`Error::Shape`] for a
/// malformed map.
pub fn corrupt(label: &LabelMap, cfg: &NoisyConfig, seed: u64) -> Result<(LabelMap, NoisyReport)> {
    cfg.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    if !rng.random_bool(cfg.probability) {
        return Ok((
            label.clone(),
            NoisyReport {
                corrupted: false,
                dice: 1.0,
                operations: Vec::new(),
                scale: 0.0,
                in_target: true,
            },
        ));
    }
    let (vol, spacing) = label_volume(label)?;
    let mut scale = 1.0;
    let mut best: Option<(f64, LabelMap, NoisyReport)> = None;
    let attempts = if cfg.target_dice.is_some() {
        cfg.max_attempts.max(1)
    } else {
        1
    };
    for _ in 0..attempts {
        let (noisy_vol, ops) = corrupt_once(&vol, spacing, cfg, scale, &mut rng);
        let noisy = volume_label(noisy_vol, label.spatial_ndim(), label.geometry)?;
        let dice = mean_foreground_dice(label, &noisy, cfg.ignore)?;
        let (distance, in_target) = match cfg.target_dice {
            Some((lo, hi)) => {
                if dice < lo {
                    (lo - dice, false)
                } else if dice > hi {
                    (dice - hi, false)
                } else {
                    (0.0, true)
                }
            }
            None => (0.0, true),
        };
        let report = NoisyReport {
            corrupted: true,
            dice,
            operations: ops,
            scale,
            in_target,
        };
        if best.as_ref().is_none_or(|b| distance < b.0) {
            best = Some((distance, noisy, report));
        }
        if in_target {
            break;
        }
        if let Some((lo, _)) = cfg.target_dice {
            scale *= if dice < lo { 0.75 } else { 1.4 };
            scale = scale.clamp(0.05, 20.0);
        }
    }
    let (_, noisy, report) = best.ok_or_else(|| Error::Other("no corruption drawn".into()))?;
    Ok((noisy, report))
}

/// One draw of the corruptions at magnitude `scale`.
fn corrupt_once<R: Rng>(
    clean: &Array3<u16>,
    spacing: [f64; 3],
    cfg: &NoisyConfig,
    scale: f64,
    rng: &mut R,
) -> (Array3<u16>, Vec<String>) {
    let mut vol = clean.clone();
    let (d, h, w) = vol.dim();
    let mut classes: Vec<u16> = clean
        .iter()
        .copied()
        .filter(|&c| c != 0 && Some(c) != cfg.ignore)
        .collect();
    classes.sort_unstable();
    classes.dedup();
    let max_class = classes.last().copied().unwrap_or(0);
    let ignore_mask = clean.mapv(|v| Some(v) == cfg.ignore);
    let mut geometric: Vec<u8> = Vec::new();
    if cfg.dilate_erode {
        geometric.push(0);
    }
    if cfg.elastic {
        geometric.push(1);
    }
    if cfg.shift {
        geometric.push(2);
    }
    let mut order = classes.clone();
    order.shuffle(rng);
    let mut ops = Vec::new();
    let draw = |rng: &mut R, r: (f64, f64)| {
        if r.1 > r.0 {
            rng.random_range(r.0..=r.1)
        } else {
            r.0
        }
    };
    for c in order {
        let mask = vol.mapv(|v| v == c);
        if !mask.iter().any(|&v| v) {
            continue;
        }
        if rng.random_bool(cfg.flip_probability) && max_class > 0 {
            // flip the whole structure to another class (0..=max_class, not c)
            let mut to = rng.random_range(0..max_class);
            if to >= c {
                to += 1;
            }
            vol.zip_mut_with(&mask, |v, &m| {
                if m {
                    *v = to;
                }
            });
            ops.push(format!("{c}:flip->{to}"));
            continue;
        }
        let Some(&op) = geometric.choose(rng) else {
            continue;
        };
        let new_mask = match op {
            0 => {
                let r = draw(rng, cfg.radius_mm) * scale;
                let offs = ball_offsets(r, spacing, d);
                if rng.random_bool(0.5) {
                    ops.push(format!("{c}:dilate {r:.1}mm"));
                    dilate(&mask, &offs)
                } else {
                    ops.push(format!("{c}:erode {r:.1}mm"));
                    erode(&mask, &offs)
                }
            }
            1 => {
                let amp = draw(rng, cfg.elastic_mm) * scale;
                let wl = cfg.elastic_wavelength_mm / spacing[2].min(spacing[1]);
                let fy = smooth_field(rng, (d, h, w), wl, 6);
                let fx = smooth_field(rng, (d, h, w), wl, 6);
                ops.push(format!("{c}:elastic {amp:.1}mm"));
                Array3::from_shape_fn((d, h, w), |(z, y, x)| {
                    let sy = y as f64 + fy[[z, y, x]] as f64 * amp / spacing[1];
                    let sx = x as f64 + fx[[z, y, x]] as f64 * amp / spacing[2];
                    let (iy, ix) = (sy.round(), sx.round());
                    iy >= 0.0
                        && ix >= 0.0
                        && (iy as usize) < h
                        && (ix as usize) < w
                        && mask[[z, iy as usize, ix as usize]]
                })
            }
            _ => {
                let len = draw(rng, cfg.shift_mm) * scale;
                let a: f64 = rng.random_range(0.0..std::f64::consts::TAU);
                let dy = (len * a.sin() / spacing[1]).round() as isize;
                let dx = (len * a.cos() / spacing[2]).round() as isize;
                ops.push(format!("{c}:shift {len:.1}mm"));
                Array3::from_shape_fn((d, h, w), |(z, y, x)| {
                    let sy = y as isize - dy;
                    let sx = x as isize - dx;
                    sy >= 0
                        && sx >= 0
                        && (sy as usize) < h
                        && (sx as usize) < w
                        && mask[[z, sy as usize, sx as usize]]
                })
            }
        };
        // voxels the structure leaves take their nearest other label
        let left = ndarray::Zip::from(&mask)
            .and(&new_mask)
            .map_collect(|&m, &n| m && !n);
        fill_from_neighbours(&mut vol, &left, Some(c));
        ndarray::Zip::from(&mut vol)
            .and(&new_mask)
            .and(&ignore_mask)
            .for_each(|v, &n, &ig| {
                if n && !ig {
                    *v = c;
                }
            });
    }
    (vol, ops)
}
