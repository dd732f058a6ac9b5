//! Scribble simulation: thin curves inside each structure, like the ACDC
//! scribbles of Valvano et al., drawn from a full label map.
//!
//! Scribbles are drawn slice by slice (2D maps have one slice; volumes
//! `[1, D, H, W]` are scribbled on each of their `D` slices). For every class
//! present in a slice, including the background near the foreground, a curve
//! is drawn inside the structure eroded by [`ScribbleConfig::erosion_px`] —
//! along the structure's skeleton or as a random walk — and thickened by a
//! round brush until it covers the requested fraction of the structure.
//! Every other voxel gets the ignore value. Scribbles never contradict the
//! full label: each scribbled voxel keeps its true class.

use crate::grid::{dilate, disc_offsets, erode, label_volume, thin, volume_label};
use crate::phantom::subject_seed;
use medseg_core::{Error, LabelMap, Result, DEFAULT_IGNORE_LABEL};
use ndarray::{s, Array2, Array3};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How the curve inside a structure is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScribbleMethod {
    /// Walk along the skeleton (Zhang-Suen thinning) of the eroded structure;
    /// top up with random walks when the skeleton is too short.
    Skeleton,
    /// Smooth random walks inside the eroded structure.
    RandomWalk,
}

/// Settings of [`scribble`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScribbleConfig {
    /// Curve construction.
    pub method: ScribbleMethod,
    /// Range of the fraction of each structure's voxels (per slice) to
    /// scribble; the target is drawn uniformly in it per structure.
    pub coverage: (f64, f64),
    /// Erosion radius (pixels) of the region the curve may use, reduced
    /// automatically for structures too thin to hold the target.
    pub erosion_px: f64,
    /// Radius of the round brush (pixels); 0 gives one-pixel-wide curves.
    pub brush_px: f64,
    /// Also scribble the background.
    pub background: bool,
    /// Background scribbles stay within this many pixels of the foreground
    /// (the whole background when the slice has no foreground).
    pub background_margin_px: f64,
    /// Structures with fewer voxels in a slice get no scribble.
    pub min_pixels: usize,
    /// The value of unannotated voxels.
    pub ignore: u16,
}

impl Default for ScribbleConfig {
    fn default() -> Self {
        ScribbleConfig {
            method: ScribbleMethod::Skeleton,
            coverage: (0.05, 0.15),
            erosion_px: 2.0,
            brush_px: 1.0,
            background: true,
            background_margin_px: 12.0,
            min_pixels: 10,
            ignore: DEFAULT_IGNORE_LABEL,
        }
    }
}

impl ScribbleConfig {
    /// Checks ranges.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        let (lo, hi) = self.coverage;
        if !(lo.is_finite() && hi.is_finite() && 0.0 < lo && lo <= hi && hi <= 1.0) {
            return Err(Error::invalid(
                "coverage",
                format!("need 0 < lo <= hi <= 1, got ({lo}, {hi})"),
            ));
        }
        for (k, v) in [
            ("erosion_px", self.erosion_px),
            ("brush_px", self.brush_px),
            ("background_margin_px", self.background_margin_px),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::invalid(k, format!("must be >= 0, got {v}")));
            }
        }
        Ok(())
    }
}

/// Coverage of one structure in one slice.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StructureCoverage {
    /// Slice index along `D` (0 for 2D maps).
    pub slice: usize,
    /// Class value.
    pub class: u16,
    /// Voxels of the structure (for the background: of the band scribbles
    /// may use).
    pub pixels: usize,
    /// Scribbled voxels.
    pub scribbled: usize,
}

impl StructureCoverage {
    /// `scribbled / pixels`.
    pub fn fraction(&self) -> f64 {
        self.scribbled as f64 / self.pixels.max(1) as f64
    }
}

/// Draws scribbles from the full label map `label` (`[1, H, W]` or
/// `[1, D, H, W]`). Voxels equal to `cfg.ignore` in the input are never
/// scribbled. Deterministic for a given `seed`.
///
/// # Errors
/// [`Error::InvalidValue`] for an invalid config, [`Error::Shape`] for a
/// malformed map.
pub fn scribble(
    label: &LabelMap,
    cfg: &ScribbleConfig,
    seed: u64,
) -> Result<(LabelMap, Vec<StructureCoverage>)> {
    cfg.validate()?;
    let (vol, _) = label_volume(label)?;
    let (d, h, w) = vol.dim();
    let mut out = Array3::from_elem((d, h, w), cfg.ignore);
    let mut report = Vec::new();
    let brush = disc_offsets(cfg.brush_px);
    for z in 0..d {
        let mut rng = ChaCha8Rng::seed_from_u64(subject_seed(seed, z));
        let sl = vol.slice(s![z, .., ..]).to_owned();
        let mut classes: Vec<u16> = sl.iter().copied().filter(|&c| c != cfg.ignore).collect();
        classes.sort_unstable();
        classes.dedup();
        let fg: Array3<bool> = sl
            .mapv(|c| c != 0 && c != cfg.ignore)
            .insert_axis(ndarray::Axis(0));
        let has_fg = fg.iter().any(|&v| v);
        let band = if has_fg {
            Some(dilate(&fg, &disc_offsets(cfg.background_margin_px)))
        } else {
            None
        };
        for c in classes {
            if c == 0 && !cfg.background {
                continue;
            }
            let mut region: Array2<bool> = sl.mapv(|v| v == c);
            if c == 0 {
                if let Some(b) = &band {
                    region.zip_mut_with(&b.slice(s![0, .., ..]), |r, &b| *r = *r && b);
                }
            }
            let n = region.iter().filter(|&&v| v).count();
            if n < cfg.min_pixels.max(1) {
                continue;
            }
            let f = rng.random_range(cfg.coverage.0..=cfg.coverage.1);
            let cap = ((cfg.coverage.1 * n as f64).floor() as usize).max(1);
            let target = ((f * n as f64).round() as usize).clamp(1, cap);
            let painted = draw_structure(&region, target, cfg, &brush, &mut rng);
            let mut count = 0;
            for ((y, x), &p) in painted.indexed_iter() {
                if p {
                    out[[z, y, x]] = c;
                    count += 1;
                }
            }
            report.push(StructureCoverage {
                slice: z,
                class: c,
                pixels: n,
                scribbled: count,
            });
        }
    }
    Ok((
        volume_label(out, label.spatial_ndim(), label.geometry)?,
        report,
    ))
}

/// Paints up to `target` pixels of `region` and returns them.
fn draw_structure<R: Rng>(
    region: &Array2<bool>,
    target: usize,
    cfg: &ScribbleConfig,
    brush: &[[isize; 3]],
    rng: &mut R,
) -> Array2<bool> {
    let (h, w) = region.dim();
    let region3 = region.clone().insert_axis(ndarray::Axis(0));
    // the largest erosion that still leaves room for the target
    let mut r = cfg.erosion_px;
    let allowed = loop {
        let a = if r >= 1.0 {
            erode(&region3, &disc_offsets(r))
        } else {
            region3.clone()
        };
        let na = a.iter().filter(|&&v| v).count();
        if r < 1.0 || na >= target.max(4) * 2 {
            break a.index_axis_move(ndarray::Axis(0), 0);
        }
        r -= 1.0;
    };
    let mut painter = Painter {
        allowed: &allowed,
        painted: Array2::from_elem((h, w), false),
        count: 0,
        target,
        brush,
    };
    let cells: Vec<(usize, usize)> = allowed
        .indexed_iter()
        .filter(|(_, &v)| v)
        .map(|(i, _)| i)
        .collect();
    if cells.is_empty() {
        return painter.painted;
    }
    if cfg.method == ScribbleMethod::Skeleton {
        let skel = thin(&allowed);
        let mut visited = Array2::from_elem((h, w), false);
        let skel_cells: Vec<(usize, usize)> = skel
            .indexed_iter()
            .filter(|(_, &v)| v)
            .map(|(i, _)| i)
            .collect();
        // a few skeleton branches at most, like a hand-drawn stroke
        for _ in 0..3 {
            if painter.done() {
                break;
            }
            let free: Vec<&(usize, usize)> = skel_cells
                .iter()
                .filter(|&&(y, x)| !visited[[y, x]])
                .collect();
            let Some(&&start) = free.choose(rng) else {
                break;
            };
            walk_skeleton(&skel, &mut visited, start, &mut painter, rng);
        }
    }
    // random walks (top-up for the skeleton method)
    let max_steps = 200 * target + 10_000;
    let mut steps = 0;
    while !painter.done() && steps < max_steps {
        let Some(&(y0, x0)) = cells.choose(rng) else {
            break;
        };
        let (mut py, mut px) = (y0 as f64, x0 as f64);
        let mut angle: f64 = rng.random_range(0.0..std::f64::consts::TAU);
        painter.paint(y0, x0);
        let seg = rng.random_range(10..40);
        for _ in 0..seg {
            steps += 1;
            if painter.done() {
                break;
            }
            let mut moved = false;
            for attempt in 0..8 {
                let a = if attempt == 0 {
                    angle + rng.random_range(-0.35..0.35)
                } else {
                    rng.random_range(0.0..std::f64::consts::TAU)
                };
                let ny = py + a.sin();
                let nx = px + a.cos();
                let (iy, ix) = (ny.round(), nx.round());
                if iy >= 0.0
                    && ix >= 0.0
                    && (iy as usize) < h
                    && (ix as usize) < w
                    && allowed[[iy as usize, ix as usize]]
                {
                    py = ny;
                    px = nx;
                    angle = a;
                    painter.paint(iy as usize, ix as usize);
                    moved = true;
                    break;
                }
            }
            if !moved {
                break;
            }
        }
    }
    painter.painted
}

/// Paints brush stamps clipped to the allowed region, stopping at the target.
struct Painter<'a> {
    allowed: &'a Array2<bool>,
    painted: Array2<bool>,
    count: usize,
    target: usize,
    brush: &'a [[isize; 3]],
}

impl Painter<'_> {
    fn done(&self) -> bool {
        self.count >= self.target
    }

    fn paint(&mut self, y: usize, x: usize) {
        let (h, w) = self.allowed.dim();
        for o in self.brush {
            if self.done() {
                return;
            }
            let yy = y as isize + o[1];
            let xx = x as isize + o[2];
            if yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize {
                continue;
            }
            let (yy, xx) = (yy as usize, xx as usize);
            if self.allowed[[yy, xx]] && !self.painted[[yy, xx]] {
                self.painted[[yy, xx]] = true;
                self.count += 1;
            }
        }
    }
}

/// A candidate step: target pixel, direction, score.
type Step = ((usize, usize), (isize, isize), f64);

/// Follows unvisited 8-connected skeleton pixels from `start`, preferring to
/// keep the current direction, painting as it goes.
fn walk_skeleton<R: Rng>(
    skel: &Array2<bool>,
    visited: &mut Array2<bool>,
    start: (usize, usize),
    painter: &mut Painter<'_>,
    rng: &mut R,
) {
    let (h, w) = skel.dim();
    let (mut y, mut x) = start;
    let mut dir = (0isize, 0isize);
    loop {
        visited[[y, x]] = true;
        painter.paint(y, x);
        if painter.done() {
            return;
        }
        let mut best: Option<Step> = None;
        for dy in -1isize..=1 {
            for dx in -1isize..=1 {
                if dy == 0 && dx == 0 {
                    continue;
                }
                let ny = y as isize + dy;
                let nx = x as isize + dx;
                if ny < 0 || nx < 0 || ny >= h as isize || nx >= w as isize {
                    continue;
                }
                let (ny, nx) = (ny as usize, nx as usize);
                if !skel[[ny, nx]] || visited[[ny, nx]] {
                    continue;
                }
                let score = (dy * dir.0 + dx * dir.1) as f64 + rng.random_range(0.0..0.5);
                if best.is_none_or(|b| score > b.2) {
                    best = Some(((ny, nx), (dy, dx), score));
                }
            }
        }
        match best {
            Some((p, d, _)) => {
                y = p.0;
                x = p.1;
                dir = d;
            }
            None => return,
        }
    }
}
