//! Array helpers shared by the phantoms and the simulators: conversion between
//! label maps and `[D, H, W]` volumes, morphology with physical radii, thinning,
//! smooth random fields, blur, nearest-label filling and Dice.

use medseg_core::{Error, Geometry, LabelMap, Result};
use ndarray::{Array2, Array3, ArrayD, IxDyn};
use rand::Rng;
use std::collections::VecDeque;

/// The spatial part of a label map as a `[D, H, W]` volume (`D = 1` for 2D
/// maps) together with the in-volume spacing `(D, H, W)`.
pub(crate) fn label_volume(label: &LabelMap) -> Result<(Array3<u16>, [f64; 3])> {
    let shape = label.data.shape();
    let (d, h, w) = match shape.len() {
        3 => (1, shape[1], shape[2]),
        4 => (shape[1], shape[2], shape[3]),
        _ => {
            return Err(Error::Shape(format!(
                "label map must be [1, H, W] or [1, D, H, W], got {shape:?}"
            )))
        }
    };
    let data: Vec<u16> = label.data.iter().copied().collect();
    let vol = Array3::from_shape_vec((d, h, w), data)
        .map_err(|e| Error::Shape(format!("label map to volume: {e}")))?;
    Ok((vol, label.geometry.spacing))
}

/// Wraps a `[D, H, W]` volume back into a label map of rank `ndim + 1`
/// (`ndim` = 2 requires `D = 1`).
pub(crate) fn volume_label(vol: Array3<u16>, ndim: usize, geometry: Geometry) -> Result<LabelMap> {
    let (d, h, w) = vol.dim();
    let shape: Vec<usize> = if ndim == 2 {
        if d != 1 {
            return Err(Error::Shape(format!(
                "2D label map from a volume of depth {d}"
            )));
        }
        vec![1, h, w]
    } else {
        vec![1, d, h, w]
    };
    let data = ArrayD::from_shape_vec(IxDyn(&shape), vol.into_raw_vec_and_offset().0)
        .map_err(|e| Error::Shape(format!("volume to label map: {e}")))?;
    LabelMap::new(data, geometry)
}

/// Offsets of the voxels of an ellipsoid of `radius_mm` (in every axis) on a
/// grid with `spacing` `(D, H, W)`. Axes whose spacing exceeds the radius get
/// no extent (a 2D disc for thick slices).
pub(crate) fn ball_offsets(radius_mm: f64, spacing: [f64; 3], depth: usize) -> Vec<[isize; 3]> {
    let r: Vec<f64> = (0..3)
        .map(|a| {
            if a == 0 && depth == 1 {
                0.0
            } else {
                radius_mm / spacing[a].max(1e-9)
            }
        })
        .collect();
    let e: Vec<isize> = r.iter().map(|v| v.floor() as isize).collect();
    let mut out = Vec::new();
    for dz in -e[0]..=e[0] {
        for dy in -e[1]..=e[1] {
            for dx in -e[2]..=e[2] {
                let mut s = 0.0;
                for (k, dv) in [dz, dy, dx].iter().enumerate() {
                    if r[k] > 0.0 {
                        s += (*dv as f64 / r[k]).powi(2);
                    }
                }
                if s <= 1.0 + 1e-9 {
                    out.push([dz, dy, dx]);
                }
            }
        }
    }
    out
}

/// Offsets of a disc of `radius` pixels in the `(H, W)` plane.
pub(crate) fn disc_offsets(radius: f64) -> Vec<[isize; 3]> {
    ball_offsets(radius, [1.0, 1.0, 1.0], 1)
}

fn shifted(
    idx: (usize, usize, usize),
    o: &[isize; 3],
    dim: (usize, usize, usize),
) -> Option<(usize, usize, usize)> {
    let z = idx.0 as isize + o[0];
    let y = idx.1 as isize + o[1];
    let x = idx.2 as isize + o[2];
    if z < 0 || y < 0 || x < 0 || z >= dim.0 as isize || y >= dim.1 as isize || x >= dim.2 as isize
    {
        None
    } else {
        Some((z as usize, y as usize, x as usize))
    }
}

/// Binary dilation by the structuring element `offsets`.
pub(crate) fn dilate(mask: &Array3<bool>, offsets: &[[isize; 3]]) -> Array3<bool> {
    let dim = mask.dim();
    let mut out = mask.clone();
    for (idx, &m) in mask.indexed_iter() {
        if !m {
            continue;
        }
        for o in offsets {
            if let Some(j) = shifted(idx, o, dim) {
                out[j] = true;
            }
        }
    }
    out
}

/// Binary erosion by the structuring element `offsets`; voxels outside the
/// array count as outside the mask.
pub(crate) fn erode(mask: &Array3<bool>, offsets: &[[isize; 3]]) -> Array3<bool> {
    let dim = mask.dim();
    let mut out = Array3::from_elem(dim, false);
    for (idx, &m) in mask.indexed_iter() {
        if m && offsets
            .iter()
            .all(|o| shifted(idx, o, dim).is_some_and(|j| mask[j]))
        {
            out[idx] = true;
        }
    }
    out
}

/// Zhang-Suen thinning of a 2D mask to a one-pixel-wide skeleton.
pub(crate) fn thin(mask: &Array2<bool>) -> Array2<bool> {
    let (h, w) = mask.dim();
    let mut m = mask.clone();
    let get = |m: &Array2<bool>, y: isize, x: isize| -> bool {
        y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w && m[[y as usize, x as usize]]
    };
    // only the bounding box of the mask can change
    let (mut y0, mut y1, mut x0, mut x1) = (h, 0, w, 0);
    for ((y, x), &v) in mask.indexed_iter() {
        if v {
            y0 = y0.min(y);
            y1 = y1.max(y + 1);
            x0 = x0.min(x);
            x1 = x1.max(x + 1);
        }
    }
    if y0 >= y1 {
        return m;
    }
    loop {
        let mut changed = false;
        for step in 0..2 {
            let mut remove = Vec::new();
            for y in y0 as isize..y1 as isize {
                for x in x0 as isize..x1 as isize {
                    if !m[[y as usize, x as usize]] {
                        continue;
                    }
                    // P2..P9 clockwise from north
                    let p = [
                        get(&m, y - 1, x),
                        get(&m, y - 1, x + 1),
                        get(&m, y, x + 1),
                        get(&m, y + 1, x + 1),
                        get(&m, y + 1, x),
                        get(&m, y + 1, x - 1),
                        get(&m, y, x - 1),
                        get(&m, y - 1, x - 1),
                    ];
                    let b = p.iter().filter(|&&v| v).count();
                    if !(2..=6).contains(&b) {
                        continue;
                    }
                    let a = (0..8).filter(|&i| !p[i] && p[(i + 1) % 8]).count();
                    if a != 1 {
                        continue;
                    }
                    let (c1, c2) = if step == 0 {
                        (p[0] && p[2] && p[4], p[2] && p[4] && p[6])
                    } else {
                        (p[0] && p[2] && p[6], p[0] && p[4] && p[6])
                    };
                    if !c1 && !c2 {
                        remove.push((y as usize, x as usize));
                    }
                }
            }
            if !remove.is_empty() {
                changed = true;
            }
            for (y, x) in remove {
                m[[y, x]] = false;
            }
        }
        if !changed {
            return m;
        }
    }
}

/// A smooth random field on a `[D, H, W]` grid: a sum of `terms` random
/// cosines with wavelengths between `min_wavelength` and `2 * min_wavelength`
/// pixels (in-plane; through-plane frequencies use the same wavelengths in
/// slices), scaled to unit standard deviation over random phases.
pub(crate) fn smooth_field<R: Rng>(
    rng: &mut R,
    dim: (usize, usize, usize),
    min_wavelength: f64,
    terms: usize,
) -> Array3<f32> {
    let mut waves = Vec::with_capacity(terms);
    for _ in 0..terms {
        let wl = min_wavelength * rng.random_range(1.0..2.0);
        let theta: f64 = rng.random_range(0.0..std::f64::consts::TAU);
        let fz = if dim.0 > 1 {
            rng.random_range(-0.5..0.5) / wl * 4.0
        } else {
            0.0
        };
        let fy = theta.sin() / wl;
        let fx = theta.cos() / wl;
        let phase = rng.random_range(0.0..std::f64::consts::TAU);
        waves.push((fz, fy, fx, phase));
    }
    let norm = (2.0 / terms.max(1) as f64).sqrt() as f32;
    let (d, h, w) = dim;
    // cos(a + b) = cos a cos b - sin a sin b with a from (z, y), b from x
    let mut out = Array3::<f32>::zeros(dim);
    let tau = std::f64::consts::TAU;
    for &(fz, fy, fx, ph) in &waves {
        let col: Vec<(f32, f32)> = (0..w)
            .map(|x| {
                let b = tau * fx * x as f64;
                (b.cos() as f32, b.sin() as f32)
            })
            .collect();
        for z in 0..d {
            for y in 0..h {
                let a = tau * (fz * z as f64 + fy * y as f64) + ph;
                let (ca, sa) = (a.cos() as f32, a.sin() as f32);
                let mut row = out.slice_mut(ndarray::s![z, y, ..]);
                for (o, (cb, sb)) in row.iter_mut().zip(&col) {
                    *o += ca * cb - sa * sb;
                }
            }
        }
    }
    out.mapv_inplace(|v| v * norm);
    out
}

/// In-place separable Gaussian blur of every `(H, W)` slice with standard
/// deviation `sigma` pixels (edges replicated). No-op for `sigma <= 0`.
pub(crate) fn blur_slices(vol: &mut Array3<f32>, sigma: f64) {
    if sigma <= 0.0 {
        return;
    }
    let rad = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-rad..=rad)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp() as f32)
        .collect();
    let ksum: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / ksum).collect();
    let (d, h, w) = vol.dim();
    let mut tmp = vec![0f32; h * w];
    for z in 0..d {
        // rows
        for y in 0..h {
            for x in 0..w {
                let mut s = 0.0;
                for (k, kv) in kernel.iter().enumerate() {
                    let xx = (x as isize + k as isize - rad).clamp(0, w as isize - 1) as usize;
                    s += kv * vol[[z, y, xx]];
                }
                tmp[y * w + x] = s;
            }
        }
        // columns
        for y in 0..h {
            for x in 0..w {
                let mut s = 0.0;
                for (k, kv) in kernel.iter().enumerate() {
                    let yy = (y as isize + k as isize - rad).clamp(0, h as isize - 1) as usize;
                    s += kv * tmp[yy * w + x];
                }
                vol[[z, y, x]] = s;
            }
        }
    }
}

/// Gives every voxel marked in `unknown` the label of its nearest known voxel
/// (breadth-first over 6-neighbours). Known voxels labelled `exclude` do not
/// spread. Voxels unreachable from any known voxel get 0.
pub(crate) fn fill_from_neighbours(
    labels: &mut Array3<u16>,
    unknown: &Array3<bool>,
    exclude: Option<u16>,
) {
    let dim = labels.dim();
    let mut todo = unknown.clone();
    let mut queue = VecDeque::new();
    for (idx, &u) in unknown.indexed_iter() {
        if u || Some(labels[idx]) == exclude {
            continue;
        }
        // known voxel next to an unknown one seeds the search
        for o in [
            [0, 0, 1],
            [0, 0, -1],
            [0, 1, 0],
            [0, -1, 0],
            [1, 0, 0],
            [-1, 0, 0],
        ] {
            if let Some(j) = shifted(idx, &o, dim) {
                if todo[j] {
                    queue.push_back(idx);
                    break;
                }
            }
        }
    }
    while let Some(idx) = queue.pop_front() {
        let v = labels[idx];
        for o in [
            [0, 0, 1],
            [0, 0, -1],
            [0, 1, 0],
            [0, -1, 0],
            [1, 0, 0],
            [-1, 0, 0],
        ] {
            if let Some(j) = shifted(idx, &o, dim) {
                if todo[j] {
                    todo[j] = false;
                    labels[j] = v;
                    queue.push_back(j);
                }
            }
        }
    }
    for (idx, t) in todo.indexed_iter() {
        if *t {
            labels[idx] = 0;
        }
    }
}

/// Dice of class `class` between two label arrays: `2|A∩B| / (|A| + |B|)`,
/// `None` when the class is absent from both.
pub(crate) fn class_dice<'a>(
    a: impl Iterator<Item = &'a u16>,
    b: impl Iterator<Item = &'a u16>,
    class: u16,
) -> Option<f64> {
    let (mut na, mut nb, mut both) = (0usize, 0usize, 0usize);
    for (x, y) in a.zip(b) {
        let (ia, ib) = (*x == class, *y == class);
        na += ia as usize;
        nb += ib as usize;
        both += (ia && ib) as usize;
    }
    if na + nb == 0 {
        None
    } else {
        Some(2.0 * both as f64 / (na + nb) as f64)
    }
}

/// Mean Dice over the foreground classes (`> 0`, not `ignore`) present in
/// either map; 1 when neither has a foreground class.
///
/// # Errors
/// [`Error::Shape`] when the shapes differ.
pub fn mean_foreground_dice(
    clean: &LabelMap,
    other: &LabelMap,
    ignore: Option<u16>,
) -> Result<f64> {
    if clean.data.shape() != other.data.shape() {
        return Err(Error::Shape(format!(
            "Dice between shapes {:?} and {:?}",
            clean.data.shape(),
            other.data.shape()
        )));
    }
    let mut classes: Vec<u16> = clean
        .classes()
        .into_iter()
        .chain(other.classes())
        .filter(|&c| c != 0 && Some(c) != ignore)
        .collect();
    classes.sort_unstable();
    classes.dedup();
    if classes.is_empty() {
        return Ok(1.0);
    }
    let mut sum = 0.0;
    for &c in &classes {
        sum += class_dice(clean.data.iter(), other.data.iter(), c).unwrap_or(1.0);
    }
    Ok(sum / classes.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disc_and_morphology() {
        let d = disc_offsets(1.0);
        assert_eq!(d.len(), 5); // cross
        let d2 = disc_offsets(2.0);
        assert_eq!(d2.len(), 13);
        let mut m = Array3::from_elem((1, 9, 9), false);
        m[[0, 4, 4]] = true;
        let dil = dilate(&m, &d2);
        assert_eq!(dil.iter().filter(|&&v| v).count(), 13);
        let back = erode(&dil, &d2);
        assert_eq!(back.iter().filter(|&&v| v).count(), 1);
        assert!(back[[0, 4, 4]]);
        // thick slices: a 3 mm ball on 8 mm slices has no through-plane extent
        let b = ball_offsets(3.0, [8.0, 1.5, 1.5], 5);
        assert!(b.iter().all(|o| o[0] == 0));
        assert_eq!(b.len(), 13);
    }

    #[test]
    fn thinning_a_bar_gives_a_line() {
        let mut m = Array2::from_elem((9, 20), false);
        for y in 3..6 {
            for x in 2..18 {
                m[[y, x]] = true;
            }
        }
        let s = thin(&m);
        let n = s.iter().filter(|&&v| v).count();
        assert!(
            (10..=16).contains(&n),
            "skeleton of a 3x16 bar has {n} pixels"
        );
        // one pixel wide: every column holds at most one skeleton pixel
        for x in 0..20 {
            assert!((0..9).filter(|&y| s[[y, x]]).count() <= 1);
        }
        // skeleton inside the mask
        assert!(s.indexed_iter().all(|(i, &v)| !v || m[i]));
    }

    #[test]
    fn fill_takes_nearest_label() {
        let mut l = Array3::from_shape_fn((1, 1, 7), |(_, _, x)| if x < 3 { 1 } else { 2 });
        let mut u = Array3::from_elem((1, 1, 7), false);
        u[[0, 0, 1]] = true;
        u[[0, 0, 2]] = true;
        u[[0, 0, 3]] = true;
        u[[0, 0, 4]] = true;
        fill_from_neighbours(&mut l, &u, None);
        assert_eq!(
            l.iter().copied().collect::<Vec<_>>(),
            vec![1, 1, 1, 2, 2, 2, 2]
        );
        let mut l2 = Array3::from_shape_fn((1, 1, 7), |(_, _, x)| if x < 3 { 1 } else { 2 });
        fill_from_neighbours(&mut l2, &u, Some(1));
        assert_eq!(
            l2.iter().copied().collect::<Vec<_>>(),
            vec![1, 2, 2, 2, 2, 2, 2]
        );
        assert_eq!(
            l.iter().copied().collect::<Vec<_>>(),
            vec![1, 1, 1, 2, 2, 2, 2]
        );
    }

    #[test]
    fn dice_closed_form() {
        let a = LabelMap::new(
            ArrayD::from_shape_vec(IxDyn(&[1, 1, 4]), vec![1, 1, 0, 2]).unwrap(),
            Geometry::identity(),
        )
        .unwrap();
        let b = LabelMap::new(
            ArrayD::from_shape_vec(IxDyn(&[1, 1, 4]), vec![1, 0, 0, 3]).unwrap(),
            Geometry::identity(),
        )
        .unwrap();
        // class 1: 2*1/3, class 2: 0, class 3: 0
        let d = mean_foreground_dice(&a, &b, None).unwrap();
        assert!((d - (2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert_eq!(mean_foreground_dice(&a, &a, None).unwrap(), 1.0);
    }
}
