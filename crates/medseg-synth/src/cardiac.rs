//! Cardiac short-axis phantom (cine-MR-like) with ACDC classes.
//!
//! Image rows run anterior (top) to posterior (bottom), columns patient-right
//! (left of the picture) to patient-left, as short-axis views are shown. The
//! left ventricle sits right of centre, the crescent-shaped right ventricle
//! wraps around its septal side, the lungs flank the heart, the liver and
//! the descending aorta lie below it. Blood in the LV, the RV and the aorta
//! has the same intensity, the myocardium, the RV free wall, the papillary
//! muscles and the liver nearly the same.

use crate::phantom::shape::{harmonics, Blob};
use crate::phantom::{fill_slice, PhantomConfig, Scene};
use ndarray::Array3;
use rand::Rng;
use rand_distr::{Distribution, Normal};
use std::f64::consts::PI;

/// Tissue indices of the cardiac scene.
mod tissue {
    pub const AIR: u8 = 0;
    pub const FAT: u8 = 1;
    pub const MUSCLE: u8 = 2;
    pub const LUNG: u8 = 3;
    pub const LIVER: u8 = 4;
    pub const MYO: u8 = 5;
    pub const BLOOD: u8 = 6;
    pub const RV_WALL: u8 = 7;
    pub const BONE: u8 = 8;
    pub const PAPILLARY: u8 = 9;
    pub const COUNT: usize = 10;
}

use crate::cardiac_classes::{LV, MYOCARDIUM, RV};

fn normal<R: Rng>(rng: &mut R, mean: f64, sd: f64) -> f64 {
    Normal::new(mean, sd).map(|n| n.sample(rng)).unwrap_or(mean)
}

/// Draws the tissue and class maps of one cardiac subject.
pub(crate) fn draw<R: Rng>(cfg: &PhantomConfig, rng: &mut R) -> Scene {
    let d = cfg.slices;
    // --- subject parameters (mm, radians) ---
    let body = Blob {
        harm: harmonics(rng, 0.04),
        ..Blob::ellipse(
            normal(rng, 0.0, 4.0),
            normal(rng, 6.0, 4.0),
            rng.random_range(74.0..88.0),
            rng.random_range(56.0..68.0),
            normal(rng, 0.0, 0.05),
        )
    };
    let fat_thick = rng.random_range(3.0..8.0);
    let inner = body.grown(-fat_thick);
    let hc0 = (
        body.cx + rng.random_range(8.0..22.0),
        body.cy + rng.random_range(-20.0..-6.0),
    );
    let drift = (normal(rng, 0.0, 4.0), normal(rng, 0.0, 4.0));
    let beta = rng.random_range(-0.45..0.45);
    let ecc = rng.random_range(0.82..1.0);
    let re0 = rng.random_range(17.0..27.0);
    let w0 = rng.random_range(6.0..11.0);
    let wall_phase = rng.random_range(0.0..2.0 * PI);
    let apex_shrink = rng.random_range(0.45..0.65);
    let endo_harm = harmonics(rng, 0.08);
    let harm_drift: [f64; 3] = [
        normal(rng, 0.0, 0.5),
        normal(rng, 0.0, 0.5),
        normal(rng, 0.0, 0.5),
    ];
    let alpha = PI + 0.6 * beta - rng.random_range(0.15..0.45);
    let rv_au0 = rng.random_range(13.0..22.0);
    let rv_fac = rng.random_range(1.05..1.45);
    let rv_end = rng.random_range(0.72..0.95);
    let rv_wall = rng.random_range(2.0..3.5);
    let rv_harm = harmonics(rng, 0.05);
    let fat_epi = rng.random_range(2.0..6.0);
    let fat_phase = rng.random_range(0.0..2.0 * PI);
    let pm_r = rng.random_range(2.0..3.5);
    let pm_spread = rng.random_range(0.5..0.9);
    let liver_dx = rng.random_range(-0.4..-0.15);
    let liver_harm = harmonics(rng, 0.12);
    let liver_grow = rng.random_range(0.7..1.1);
    let lung_l = (rng.random_range(0.25..0.34), rng.random_range(0.6..0.75));
    let lung_r = (rng.random_range(0.3..0.38), rng.random_range(0.6..0.75));
    let spine_r = rng.random_range(9.0..12.0);
    let aorta_r = rng.random_range(8.0..11.0);
    let aorta_dx = rng.random_range(8.0..18.0);

    let mut tissue_map = Array3::<u8>::zeros((d, cfg.height, cfg.width));
    let mut label_map = Array3::<u16>::zeros((d, cfg.height, cfg.width));
    for k in 0..d {
        let t = (k as f64 + 0.5) / d as f64;
        let jitter = (normal(rng, 0.0, 0.8), normal(rng, 0.0, 0.8));
        let hc = (
            hc0.0 + t * drift.0 + jitter.0,
            hc0.1 + t * drift.1 + jitter.1,
        );
        let re = (re0 * (1.0 - apex_shrink * t.powf(1.6))).max(3.5);
        let w = w0 * (1.0 + 0.15 * t);
        let mut eh = endo_harm;
        for (h, dr) in eh.iter_mut().zip(harm_drift) {
            h.1 += t * dr;
        }
        let r_epi_mean = re + w;
        // right ventricle
        let rv = if t < rv_end {
            let s = (1.0 - (t / rv_end).powi(2)).sqrt();
            let au = rv_au0 * s;
            if au >= 3.0 {
                let av = (r_epi_mean + 4.0) * rv_fac * (0.6 + 0.4 * s);
                let dist = r_epi_mean - 0.2 * au;
                Some(Blob {
                    harm: rv_harm,
                    ..Blob::ellipse(
                        hc.0 + dist * alpha.cos(),
                        hc.1 + dist * alpha.sin(),
                        au,
                        av,
                        alpha,
                    )
                })
            } else {
                None
            }
        } else {
            None
        };
        let papillary = if (0.15..0.8).contains(&t) && re > 10.0 {
            let pa = [alpha + PI - pm_spread, alpha + PI + pm_spread];
            Some(pa.map(|a| (hc.0 + 0.55 * re * a.cos(), hc.1 + 0.55 * re * a.sin())))
        } else {
            None
        };
        let liver = Blob {
            harm: liver_harm,
            ..Blob::ellipse(
                body.cx + body.ax * liver_dx,
                body.cy + body.ay * 0.6,
                body.ax * 0.55,
                body.ay * 0.38,
                0.15,
            )
        }
        .scaled((0.25 + liver_grow * t).min(1.1));
        let lung_left = Blob::ellipse(
            body.cx + body.ax * 0.55,
            body.cy - 6.0,
            body.ax * lung_l.0,
            body.ay * lung_l.1,
            0.1,
        );
        let lung_right = Blob::ellipse(
            body.cx - body.ax * 0.5,
            body.cy - 4.0,
            body.ax * lung_r.0,
            body.ay * lung_r.1,
            -0.1,
        );
        let spine = Blob::ellipse(
            body.cx,
            body.cy + body.ay * 0.75,
            spine_r,
            spine_r * 0.9,
            0.0,
        );
        let aorta = Blob::ellipse(
            body.cx + aorta_dx,
            body.cy + body.ay * 0.55,
            aorta_r,
            aorta_r,
            0.0,
        );
        let (sb, cb) = beta.sin_cos();
        let amp: f64 = eh.iter().map(|h| h.0.abs()).sum();
        let far = re * (1.0 + amp) + 1.25 * w + fat_epi + 1.0;
        let rv_wall_blob = rv.map(|b| b.grown(rv_wall));
        // everything outside the LV, the myocardium and the epicardial fat
        let outer = |x: f64, y: f64| -> (u8, u16) {
            if let (Some(rvb), Some(rvw)) = (&rv, &rv_wall_blob) {
                if rvw.inside(x, y) {
                    return if rvb.inside(x, y) {
                        (tissue::BLOOD, RV)
                    } else {
                        (tissue::RV_WALL, 0)
                    };
                }
            }
            if aorta.inside(x, y) {
                return (tissue::BLOOD, 0);
            }
            if spine.inside(x, y) {
                return (tissue::BONE, 0);
            }
            if !body.inside(x, y) {
                return (tissue::AIR, 0);
            }
            if !inner.inside(x, y) {
                return (tissue::FAT, 0);
            }
            if liver.inside(x, y) {
                return (tissue::LIVER, 0);
            }
            if lung_left.inside(x, y) || lung_right.inside(x, y) {
                return (tissue::LUNG, 0);
            }
            (tissue::MUSCLE, 0)
        };
        fill_slice(cfg, &mut tissue_map, &mut label_map, k, |x, y| {
            // heart polar coordinates in the rotated, eccentric frame
            let dx = x - hc.0;
            let dy = y - hc.1;
            let u = dx * cb + dy * sb;
            let v = (-dx * sb + dy * cb) / ecc;
            let r = (u * u + v * v).sqrt();
            if r > far {
                return outer(x, y);
            }
            let th = v.atan2(u);
            let mut m = 1.0;
            for (i, (a, p)) in eh.iter().enumerate() {
                m += a * ((i as f64 + 2.0) * th + p).cos();
            }
            let r_endo = re * m;
            let r_epi = r_endo + w * (1.0 + 0.25 * (th - wall_phase).cos());
            if r <= r_endo {
                if let Some(pm) = papillary {
                    if pm.iter().any(|p| (x - p.0).hypot(y - p.1) <= pm_r) {
                        return (tissue::PAPILLARY, LV);
                    }
                }
                return (tissue::BLOOD, LV);
            }
            if r <= r_epi {
                return (tissue::MYO, MYOCARDIUM);
            }
            if let Some(rvb) = &rv {
                if rvb.inside(x, y) {
                    return (tissue::BLOOD, RV);
                }
            }
            // epicardial fat in patches around the heart
            let fat_w = fat_epi * ((2.0 * (th - fat_phase)).cos() - 0.2).max(0.0);
            if r <= r_epi + fat_w {
                return (tissue::FAT, 0);
            }
            outer(x, y)
        });
    }

    // --- appearance: relative means, jittered per subject ---
    let base: [f32; tissue::COUNT] = [0.02, 0.9, 0.33, 0.07, 0.30, 0.27, 0.85, 0.27, 0.45, 0.29];
    let gain = rng.random_range(400.0..800.0) as f32;
    let mut means: Vec<f32> = base
        .iter()
        .map(|b| b * (1.0 + normal(rng, 0.0, 0.06) as f32).max(0.5) * gain)
        .collect();
    // the two blood pools and the aorta share one intensity; papillary
    // muscles and the RV wall look like myocardium
    means[tissue::PAPILLARY as usize] = means[tissue::MYO as usize] * 1.05;
    means[tissue::RV_WALL as usize] = means[tissue::MYO as usize];
    let texture = vec![0.0, 0.05, 0.06, 0.3, 0.06, 0.05, 0.08, 0.05, 0.1, 0.05];
    Scene {
        tissue: tissue_map,
        label: label_map,
        noise_scale: gain * 0.9,
        means,
        texture,
    }
}
