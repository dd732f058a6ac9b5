//! Abdominal axial phantom (contrast CT-like, intensities in HU) with four
//! organs: liver, spleen, left and right kidney.
//!
//! Rows run anterior (top) to posterior, columns patient-right (left of the
//! picture) to patient-left; slices run cranial to caudal, so the liver and
//! spleen fill the first slices and the kidneys the later ones. Liver and
//! spleen have nearly the same intensity; bowel loops of random intensity
//! overlap the organ intensities.

use crate::abdomen_classes::{LEFT_KIDNEY, LIVER, RIGHT_KIDNEY, SPLEEN};
use crate::phantom::shape::{harmonics, Blob};
use crate::phantom::{fill_slice, PhantomConfig, Scene};
use ndarray::Array3;
use rand::Rng;
use rand_distr::{Distribution, Normal};

mod tissue {
    pub const AIR: u8 = 0;
    pub const FAT: u8 = 1;
    pub const MUSCLE: u8 = 2;
    pub const BONE: u8 = 3;
    pub const LIVER: u8 = 4;
    pub const SPLEEN: u8 = 5;
    pub const CORTEX: u8 = 6;
    pub const MEDULLA: u8 = 7;
    pub const AORTA: u8 = 8;
    pub const IVC: u8 = 9;
    pub const STOMACH: u8 = 10;
    pub const GAS: u8 = 11;
    pub const BOWEL0: u8 = 12; // 12..16: four bowel contents
    pub const GALL: u8 = 16;
    pub const COUNT: usize = 17;
}

fn normal<R: Rng>(rng: &mut R, mean: f64, sd: f64) -> f64 {
    Normal::new(mean, sd).map(|n| n.sample(rng)).unwrap_or(mean)
}

/// A blob whose axes follow an ellipsoidal profile along the slices: full
/// size at `tc`, gone at `tc ± th` (fractions of the scanned range).
#[derive(Clone, Copy)]
struct Organ {
    blob: Blob,
    tc: f64,
    th: f64,
}

impl Organ {
    fn at(&self, t: f64) -> Option<Blob> {
        let z = (t - self.tc) / self.th;
        let s2 = 1.0 - z * z;
        if s2 <= 0.09 {
            None
        } else {
            Some(self.blob.scaled(s2.sqrt()))
        }
    }
}

/// Draws the tissue and class maps of one abdominal subject.
pub(crate) fn draw<R: Rng>(cfg: &PhantomConfig, rng: &mut R) -> Scene {
    let d = cfg.slices;
    let body = Blob {
        harm: harmonics(rng, 0.05),
        ..Blob::ellipse(
            normal(rng, 0.0, 5.0),
            normal(rng, 0.0, 5.0),
            rng.random_range(125.0..148.0),
            rng.random_range(92.0..112.0),
            normal(rng, 0.0, 0.04),
        )
    };
    let (bx, by, ax, ay) = (body.cx, body.cy, body.ax, body.ay);
    let fat_thick = rng.random_range(8.0..22.0);
    let wall = body.grown(-fat_thick);
    let cavity = wall.grown(-rng.random_range(6.0..12.0));
    let spine = Blob::ellipse(bx, by + ay * 0.62, rng.random_range(16.0..20.0), 17.0, 0.0);
    let para =
        [-1.0, 1.0].map(|s| Blob::ellipse(bx + s * 32.0, by + ay * 0.82, 24.0, 15.0, s * 0.2));
    let aorta = Blob::ellipse(bx + 14.0, by + ay * 0.36, 10.0, 10.0, 0.0);
    let ivc = Blob::ellipse(bx - 22.0, by + ay * 0.34, 13.0, 10.0, 0.3);
    let jit = |rng: &mut R, v: f64, sd: f64| normal(rng, v, sd);
    let liver = Organ {
        blob: Blob {
            harm: harmonics(rng, 0.12),
            ..Blob::ellipse(
                bx - ax * jit(rng, 0.38, 0.03),
                by - ay * jit(rng, 0.05, 0.04),
                ax * jit(rng, 0.48, 0.04),
                ay * jit(rng, 0.7, 0.05),
                jit(rng, 0.3, 0.1),
            )
        },
        tc: jit(rng, 0.2, 0.05),
        th: jit(rng, 0.68, 0.05),
    };
    let spleen = Organ {
        blob: Blob {
            harm: harmonics(rng, 0.1),
            ..Blob::ellipse(
                bx + ax * jit(rng, 0.58, 0.03),
                by + ay * jit(rng, 0.22, 0.04),
                ax * jit(rng, 0.17, 0.02),
                ay * jit(rng, 0.36, 0.04),
                jit(rng, -0.6, 0.15),
            )
        },
        tc: jit(rng, 0.25, 0.05),
        th: jit(rng, 0.3, 0.04),
    };
    let kidney = |rng: &mut R, side: f64, tc: f64| Organ {
        blob: Blob {
            harm: harmonics(rng, 0.06),
            ..Blob::ellipse(
                bx + side * ax * jit(rng, 0.36, 0.03),
                by + ay * jit(rng, 0.5, 0.04),
                ax * jit(rng, 0.17, 0.015),
                ay * jit(rng, 0.27, 0.02),
                side * jit(rng, -0.5, 0.15),
            )
        },
        tc: jit(rng, tc, 0.05),
        th: jit(rng, 0.3, 0.03),
    };
    let kid_l = kidney(rng, 1.0, 0.58);
    let kid_r = kidney(rng, -1.0, 0.64);
    let stomach = Organ {
        blob: Blob {
            harm: harmonics(rng, 0.1),
            ..Blob::ellipse(bx + ax * 0.3, by - ay * 0.42, ax * 0.24, ay * 0.25, 0.3)
        },
        tc: jit(rng, 0.15, 0.04),
        th: 0.35,
    };
    let gall = Organ {
        blob: Blob::ellipse(
            liver.blob.cx + ax * 0.2,
            liver.blob.cy + ay * 0.25,
            11.0,
            17.0,
            0.4,
        ),
        tc: jit(rng, 0.42, 0.05),
        th: 0.15,
    };
    let n_bowel = rng.random_range(8..=14);
    let bowel: Vec<(Organ, u8, bool)> = (0..n_bowel)
        .map(|_| {
            let o = Organ {
                blob: Blob {
                    harm: harmonics(rng, 0.15),
                    ..Blob::ellipse(
                        bx + ax * rng.random_range(-0.5..0.6),
                        by + ay * rng.random_range(-0.65..0.3),
                        rng.random_range(8.0..18.0),
                        rng.random_range(8.0..18.0),
                        rng.random_range(0.0..3.0),
                    )
                },
                tc: rng.random_range(0.35..1.0),
                th: rng.random_range(0.1..0.3),
            };
            (
                o,
                tissue::BOWEL0 + rng.random_range(0..4u8),
                rng.random_bool(0.3),
            )
        })
        .collect();

    let mut tissue_map = Array3::<u8>::zeros((d, cfg.height, cfg.width));
    let mut label_map = Array3::<u16>::zeros((d, cfg.height, cfg.width));
    for k in 0..d {
        let t = (k as f64 + 0.5) / d as f64;
        let li = liver.at(t);
        let sp = spleen.at(t);
        let kl = kid_l.at(t);
        let kr = kid_r.at(t);
        let st = stomach.at(t);
        let gb = gall.at(t);
        let bw: Vec<(Blob, u8, bool)> = bowel
            .iter()
            .filter_map(|(o, tis, gas)| o.at(t).map(|b| (b, *tis, *gas)))
            .collect();
        fill_slice(cfg, &mut tissue_map, &mut label_map, k, |x, y| {
            if !body.inside(x, y) {
                return (tissue::AIR, 0);
            }
            if !wall.inside(x, y) {
                return (tissue::FAT, 0);
            }
            if spine.inside(x, y) {
                return (tissue::BONE, 0);
            }
            if para.iter().any(|p| p.inside(x, y)) || !cavity.inside(x, y) {
                return (tissue::MUSCLE, 0);
            }
            if aorta.inside(x, y) {
                return (tissue::AORTA, 0);
            }
            if ivc.inside(x, y) {
                return (tissue::IVC, 0);
            }
            for (kid, class, side) in [(kl, LEFT_KIDNEY, 1.0), (kr, RIGHT_KIDNEY, -1.0)] {
                if let Some(b) = kid {
                    if b.inside(x, y) {
                        // renal sinus towards the spine
                        let sinus = Blob::ellipse(
                            b.cx - side * b.ax * 0.45,
                            b.cy,
                            b.ax * 0.45,
                            b.ay * 0.45,
                            b.rot,
                        );
                        let tis = if sinus.inside(x, y) {
                            tissue::MEDULLA
                        } else {
                            tissue::CORTEX
                        };
                        return (tis, class);
                    }
                }
            }
            if let Some(b) = gb {
                if b.inside(x, y) {
                    return (tissue::GALL, 0);
                }
            }
            if let Some(b) = li {
                if b.inside(x, y) {
                    return (tissue::LIVER, LIVER);
                }
            }
            if let Some(b) = sp {
                if b.inside(x, y) {
                    return (tissue::SPLEEN, SPLEEN);
                }
            }
            if let Some(b) = st {
                if b.inside(x, y) {
                    let top = b.cy - 0.55 * b.ay;
                    return (
                        if y < top {
                            tissue::GAS
                        } else {
                            tissue::STOMACH
                        },
                        0,
                    );
                }
            }
            for (b, tis, gas) in &bw {
                let rho = b.rho(x, y);
                if rho <= 1.0 {
                    return (if *gas && rho < 0.4 { tissue::GAS } else { *tis }, 0);
                }
            }
            (tissue::FAT, 0)
        });
    }

    let base: [f32; tissue::COUNT] = [
        -1000.0, -100.0, 50.0, 450.0, 105.0, 115.0, 170.0, 110.0, 200.0, 140.0, 25.0, -850.0,
        -10.0, 40.0, 90.0, 130.0, 10.0,
    ];
    let means: Vec<f32> = base
        .iter()
        .map(|b| b + normal(rng, 0.0, 8.0) as f32)
        .collect();
    let mut texture = vec![0.03f32; tissue::COUNT];
    texture[tissue::AIR as usize] = 0.0;
    texture[tissue::GAS as usize] = 0.02;
    texture[tissue::BONE as usize] = 0.15;
    Scene {
        tissue: tissue_map,
        label: label_map,
        means,
        texture,
        noise_scale: 1000.0,
    }
}
