//! Model Genesis corruptions (Zhou et al. 2019; PyMIC's
//! `NonLinearTransform`, `LocalShuffling`, `InPainting`, `OutPainting`):
//! what a restoration network learns to undo in self-supervised
//! pre-training. They change the image only, 2D (`[C, H, W]`) or 3D
//! (`[C, D, H, W]`), with every random draw from the sample's generator.
//!
//! Differences from PyMIC, on purpose: painted blocks are filled with
//! values drawn uniformly between the channel's minimum and maximum (PyMIC
//! draws from [0, 1) whatever the intensity range, which is off-scale after
//! z-score normalisation), and local shuffling permutes the current image
//! in place (PyMIC reads every block from the input, so overlapping blocks
//! lose values; here the multiset of values is kept exactly).

use crate::pipeline::{check_p, record, skipped, Transform, Validate};
use medseg_core::{Error, Result, Sample};
use ndarray::{ArrayViewMutD, Axis};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

fn default_p() -> f64 {
    0.5
}

/// Spatial shape as `[D, H, W]` (`D = 1` for 2D).
fn dhw(sample: &Sample) -> Result<[usize; 3]> {
    let s = sample.image.spatial_shape();
    match s.len() {
        2 => Ok([1, s[0], s[1]]),
        3 => Ok([s[0], s[1], s[2]]),
        n => Err(Error::invalid(
            "image",
            format!("expected 2 or 3 spatial axes, got {n}"),
        )),
    }
}

/// A box in `[D, H, W]`: origin and size.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Block {
    at: [usize; 3],
    size: [usize; 3],
}

impl Block {
    /// Flat indices (row-major over `[D, H, W]`) of the voxels in the box.
    fn indices(&self, shape: [usize; 3]) -> Vec<usize> {
        let mut v = Vec::with_capacity(self.size.iter().product());
        for d in self.at[0]..self.at[0] + self.size[0] {
            for h in self.at[1]..self.at[1] + self.size[1] {
                for w in self.at[2]..self.at[2] + self.size[2] {
                    v.push((d * shape[1] + h) * shape[2] + w);
                }
            }
        }
        v
    }
}

/// Per spatial axis, a size range `[min, max]` (inclusive): `given` if set
/// (one value for every axis, or one per axis), else `default(axis_len)`.
fn size_ranges(
    given_min: &Option<Vec<usize>>,
    given_max: &Option<Vec<usize>>,
    shape: [usize; 3],
    nd: usize,
    default: impl Fn(usize) -> (usize, usize),
) -> Result<[(usize, usize); 3]> {
    let pick = |g: &Option<Vec<usize>>, key: &str, i: usize| -> Result<Option<usize>> {
        match g {
            None => Ok(None),
            Some(v) if v.len() == 1 => Ok(Some(v[0])),
            Some(v) if v.len() == nd => Ok(Some(v[i])),
            Some(v) => Err(Error::invalid(
                key,
                format!(
                    "give 1 or {nd} sizes (one per spatial axis), got {}",
                    v.len()
                ),
            )),
        }
    };
    let mut out = [(1, 1); 3];
    for (k, slot) in out.iter_mut().enumerate().skip(3 - nd) {
        let i = k - (3 - nd);
        let (dmin, dmax) = default(shape[k]);
        let lo = pick(given_min, "block_size_min", i)?.unwrap_or(dmin).max(1);
        let hi = pick(given_max, "block_size_max", i)?
            .unwrap_or(dmax)
            .max(lo);
        if hi > shape[k] {
            return Err(Error::invalid(
                "block_size_max",
                format!("{hi} exceeds the image axis of {} voxels", shape[k]),
            ));
        }
        *slot = (lo, hi);
    }
    Ok(out)
}

/// A random block with sizes drawn from `ranges`, placed at least
/// `margin` voxels from the border where the axis allows.
fn draw_block(
    rng: &mut ChaCha8Rng,
    ranges: &[(usize, usize); 3],
    shape: [usize; 3],
    margin: usize,
) -> Block {
    let mut b = Block {
        at: [0; 3],
        size: [1; 3],
    };
    for k in 0..3 {
        let (lo, hi) = ranges[k];
        let s = rng.random_range(lo..=hi).min(shape[k]);
        let m = if shape[k] >= s + 2 * margin {
            margin
        } else {
            0
        };
        let last = shape[k] - s - m;
        b.size[k] = s;
        b.at[k] = if last > m {
            rng.random_range(m..=last)
        } else {
            m.min(shape[k] - s)
        };
    }
    b
}

fn channel_views(sample: &mut Sample) -> Vec<ArrayViewMutD<'_, f32>> {
    sample.image.data.axis_iter_mut(Axis(0)).collect()
}

fn min_max(v: &ArrayViewMutD<'_, f32>) -> (f32, f32) {
    v.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        })
}

/// The look-up curve of [`NonLinearTransform`]: the cubic Bézier curve
/// through the control points `(0, 0), p1, p2, (1, 1)`, sampled at `n`
/// parameter values, as `(x, y)` pairs with `x` ascending. With `flip`,
/// the `y` values are taken in reverse order, which turns the mapping
/// roughly into an intensity inversion (PyMIC's half-chance "flip").
pub fn bezier_lut(p1: [f64; 2], p2: [f64; 2], n: usize, flip: bool) -> (Vec<f64>, Vec<f64>) {
    let n = n.max(2);
    let pts = [[0.0, 0.0], p1, p2, [1.0, 1.0]];
    let mut xs = Vec::with_capacity(n);
    let mut ys = Vec::with_capacity(n);
    for i in 0..n {
        let t = i as f64 / (n - 1) as f64;
        let b = [
            (1.0 - t).powi(3),
            3.0 * t * (1.0 - t).powi(2),
            3.0 * t * t * (1.0 - t),
            t.powi(3),
        ];
        xs.push((0..4).map(|j| b[j] * pts[j][0]).sum::<f64>());
        ys.push((0..4).map(|j| b[j] * pts[j][1]).sum::<f64>());
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    if flip {
        ys.reverse();
    } else {
        ys.sort_by(|a, b| a.total_cmp(b));
    }
    (xs, ys)
}

/// Piecewise-linear interpolation of `x` in the table `(xs, ys)` (`xs`
/// ascending), clamped at both ends, as `numpy.interp`.
pub fn interp(x: f64, xs: &[f64], ys: &[f64]) -> f64 {
    if x <= xs[0] {
        return ys[0];
    }
    let last = xs.len() - 1;
    if x >= xs[last] {
        return ys[last];
    }
    let i = xs.partition_point(|&v| v <= x).clamp(1, last);
    let (x0, x1) = (xs[i - 1], xs[i]);
    if x1 <= x0 {
        return ys[i];
    }
    ys[i - 1] + (ys[i] - ys[i - 1]) * (x - x0) / (x1 - x0)
}

/// With probability `p`, maps each channel's intensities (scaled to [0, 1]
/// by its minimum and maximum, and back) through a random monotone cubic
/// Bézier curve with two random inner control points; half of the time
/// the curve is flipped (see [`bezier_lut`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonLinearTransform {
    /// Probability of applying.
    #[serde(default = "default_p")]
    pub p: f64,
    /// Probability of the flipped curve, given that the transform applies.
    #[serde(default = "default_half")]
    pub flip_p: f64,
}

fn default_half() -> f64 {
    0.5
}

impl Validate for NonLinearTransform {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)?;
        check_p("flip_p", self.flip_p)
    }
}

impl Transform for NonLinearTransform {
    fn name(&self) -> &str {
        "NonLinearTransform"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, mut sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        if rng.random::<f64>() >= self.p {
            return Ok(skipped(sample, self.name()));
        }
        let c = sample.image.channels();
        let draws: Vec<([f64; 2], [f64; 2], bool)> = (0..c)
            .map(|_| {
                let p1 = [rng.random::<f64>(), rng.random::<f64>()];
                let p2 = [rng.random::<f64>(), rng.random::<f64>()];
                (p1, p2, rng.random::<f64>() < self.flip_p)
            })
            .collect();
        for (mut v, &(p1, p2, flip)) in channel_views(&mut sample).into_iter().zip(&draws) {
            let (lo, hi) = min_max(&v);
            if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
                continue;
            }
            let (xs, ys) = bezier_lut(p1, p2, 1000, flip);
            let span = (hi - lo) as f64;
            v.mapv_inplace(|x| {
                let u = (x - lo) as f64 / span;
                (interp(u, &xs, &ys) * span + lo as f64) as f32
            });
        }
        let flips: Vec<bool> = draws.iter().map(|d| d.2).collect();
        record(
            &mut sample,
            self.name(),
            serde_json::json!({ "flip": flips }),
        );
        Ok(sample)
    }
}

/// With probability `p`, permutes the voxels inside many small random
/// blocks (the same permutation for every channel): local texture is lost,
/// global shape kept. Block count from `block_range` (PyMIC's default
/// 5000..10000), sizes from `block_size_min` (default 2) to
/// `block_size_max` (default a tenth of the axis).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalShuffling {
    /// Probability of applying.
    #[serde(default = "default_p")]
    pub p: f64,
    /// Range of the number of blocks (inclusive).
    #[serde(default = "default_shuffle_blocks")]
    pub block_range: [usize; 2],
    /// Smallest block size, one value or one per spatial axis.
    #[serde(default)]
    pub block_size_min: Option<Vec<usize>>,
    /// Largest block size, one value or one per spatial axis.
    #[serde(default)]
    pub block_size_max: Option<Vec<usize>>,
}

fn default_shuffle_blocks() -> [usize; 2] {
    [5000, 10000]
}

impl Validate for LocalShuffling {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)?;
        check_count_range(self.block_range)
    }
}

fn check_count_range(r: [usize; 2]) -> Result<()> {
    if r[0] > r[1] {
        return Err(Error::invalid(
            "block_range",
            format!("[{}, {}]: the first must not exceed the second", r[0], r[1]),
        ));
    }
    Ok(())
}

impl Transform for LocalShuffling {
    fn name(&self) -> &str {
        "LocalShuffling"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, mut sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        if rng.random::<f64>() >= self.p {
            return Ok(skipped(sample, self.name()));
        }
        let shape = dhw(&sample)?;
        let nd = sample.image.spatial_ndim();
        let ranges = size_ranges(&self.block_size_min, &self.block_size_max, shape, nd, |n| {
            (2.min(n), (n / 10).max(2).min(n))
        })?;
        let blocks = rng.random_range(self.block_range[0]..=self.block_range[1]);
        let c = sample.image.channels();
        let per = shape.iter().product::<usize>();
        let data = sample
            .image
            .data
            .as_slice_mut()
            .ok_or_else(|| Error::invalid("image", "not contiguous"))?;
        for _ in 0..blocks {
            let b = draw_block(rng, &ranges, shape, 0);
            let idx = b.indices(shape);
            let mut perm: Vec<usize> = (0..idx.len()).collect();
            perm.shuffle(rng);
            for ch in 0..c {
                let base = ch * per;
                let vals: Vec<f32> = idx.iter().map(|&i| data[base + i]).collect();
                for (k, &i) in idx.iter().enumerate() {
                    data[base + i] = vals[perm[k]];
                }
            }
        }
        record(
            &mut sample,
            self.name(),
            serde_json::json!({ "blocks": blocks }),
        );
        Ok(sample)
    }
}

/// Which painting [`InOutPainting`] does.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Paint {
    In,
    Out,
}

/// With probability `p`, in-paints (with probability `inpaint_p`: a few
/// random blocks replaced by uniform noise between the channel's minimum
/// and maximum) or out-paints (the image replaced by such noise except a
/// few random blocks, which keep the original). Block counts from
/// `block_range` (default 1..6 in-painting, 1..6 out-painting as PyMIC);
/// in-painting blocks measure a sixth to a third of each axis and stay 3
/// voxels from the border, out-painting blocks three to four sevenths.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InOutPainting {
    /// Probability of applying.
    #[serde(default = "default_paint_p")]
    pub p: f64,
    /// Probability of in-painting (else out-painting), given that the
    /// transform applies (Model Genesis: 0.2).
    #[serde(default = "default_inpaint_p")]
    pub inpaint_p: f64,
    /// Range of the number of blocks (inclusive).
    #[serde(default = "default_paint_blocks")]
    pub block_range: [usize; 2],
}

fn default_paint_p() -> f64 {
    0.9
}
fn default_inpaint_p() -> f64 {
    0.2
}
fn default_paint_blocks() -> [usize; 2] {
    [1, 6]
}

impl Validate for InOutPainting {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)?;
        check_p("inpaint_p", self.inpaint_p)?;
        check_count_range(self.block_range)?;
        if self.block_range[0] == 0 {
            return Err(Error::invalid("block_range", "at least one block"));
        }
        Ok(())
    }
}

impl Transform for InOutPainting {
    fn name(&self) -> &str {
        "InOutPainting"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, mut sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        if rng.random::<f64>() >= self.p {
            return Ok(skipped(sample, self.name()));
        }
        let mode = if rng.random::<f64>() < self.inpaint_p {
            Paint::In
        } else {
            Paint::Out
        };
        let shape = dhw(&sample)?;
        let nd = sample.image.spatial_ndim();
        let ranges = match mode {
            Paint::In => size_ranges(&None, &None, shape, nd, |n| {
                ((n / 6).max(1), (n / 3).max(1))
            })?,
            Paint::Out => size_ranges(&None, &None, shape, nd, |n| {
                ((n - 4 * n / 7).max(1), (n - 3 * n / 7).max(1))
            })?,
        };
        let margin = if mode == Paint::In { 3 } else { 0 };
        let nblocks = rng.random_range(self.block_range[0]..=self.block_range[1]);
        let blocks: Vec<Block> = (0..nblocks)
            .map(|_| draw_block(rng, &ranges, shape, margin))
            .collect();
        let per = shape.iter().product::<usize>();
        let mut inside = vec![false; per];
        for b in &blocks {
            for i in b.indices(shape) {
                inside[i] = true;
            }
        }
        // noise where painted: inside the blocks (in), outside them (out)
        let paint = |i: usize| inside[i] == (mode == Paint::In);
        for mut v in channel_views(&mut sample) {
            let (lo, hi) = min_max(&v);
            let flat = v
                .as_slice_mut()
                .ok_or_else(|| Error::invalid("image", "not contiguous"))?;
            for (i, x) in flat.iter_mut().enumerate() {
                if paint(i) {
                    *x = if hi > lo {
                        rng.random_range(lo..=hi)
                    } else {
                        lo
                    };
                }
            }
        }
        record(
            &mut sample,
            self.name(),
            serde_json::json!({
                "mode": if mode == Paint::In { "in" } else { "out" },
                "blocks": blocks.iter().map(|b| serde_json::json!({"at": b.at, "size": b.size})).collect::<Vec<_>>(),
            }),
        );
        Ok(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medseg_core::{Geometry, Image};
    use ndarray::ArrayD;
    use rand::SeedableRng;

    fn sample(shape: &[usize]) -> Sample {
        let n: usize = shape.iter().product();
        let data = ArrayD::from_shape_vec(shape, (0..n).map(|i| (i as f32 * 0.37).sin()).collect())
            .unwrap();
        let g = Geometry::identity();
        Sample::new("s", Image::new(data, g).unwrap())
    }

    #[test]
    fn bezier_with_collinear_points_is_the_identity_and_its_flip_the_inversion() {
        let (xs, ys) = bezier_lut([1.0 / 3.0, 1.0 / 3.0], [2.0 / 3.0, 2.0 / 3.0], 1001, false);
        for u in [0.0, 0.1, 0.25, 0.5, 0.9, 1.0] {
            assert!((interp(u, &xs, &ys) - u).abs() < 1e-9, "{u}");
        }
        let (xs, ys) = bezier_lut([1.0 / 3.0, 1.0 / 3.0], [2.0 / 3.0, 2.0 / 3.0], 1001, true);
        for u in [0.0, 0.3, 0.7, 1.0] {
            assert!((interp(u, &xs, &ys) - (1.0 - u)).abs() < 1e-9, "{u}");
        }
        // numpy.interp's clamping
        assert_eq!(interp(-1.0, &[0.0, 1.0], &[2.0, 3.0]), 2.0);
        assert_eq!(interp(2.0, &[0.0, 1.0], &[2.0, 3.0]), 3.0);
        assert_eq!(interp(0.25, &[0.0, 1.0], &[2.0, 3.0]), 2.25);
    }

    #[test]
    fn nonlinear_keeps_the_range_and_the_order_unless_flipped() {
        let t = NonLinearTransform {
            p: 1.0,
            flip_p: 0.0,
        };
        let s = sample(&[1, 16, 16]);
        let orig: Vec<f32> = s.image.data.iter().copied().collect();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let out = t.apply(s, &mut rng).unwrap();
        let new: Vec<f32> = out.image.data.iter().copied().collect();
        let (lo, hi) = orig
            .iter()
            .fold((f32::MAX, f32::MIN), |a, &x| (a.0.min(x), a.1.max(x)));
        for i in 0..orig.len() {
            assert!(new[i] >= lo - 1e-5 && new[i] <= hi + 1e-5);
            for j in 0..orig.len() {
                if orig[i] < orig[j] {
                    assert!(new[i] <= new[j] + 1e-5, "order broken at {i},{j}");
                }
            }
        }
        assert_ne!(orig, new);
    }

    #[test]
    fn local_shuffling_permutes_within_blocks_and_keeps_every_value() {
        for shape in [vec![2, 20, 24], vec![1, 6, 10, 12]] {
            let s = sample(&shape);
            let mut before: Vec<f32> = s.image.data.iter().copied().collect();
            let t = LocalShuffling {
                p: 1.0,
                block_range: [50, 50],
                block_size_min: None,
                block_size_max: Some(vec![3]),
            };
            let out = t.apply(s, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
            let mut after: Vec<f32> = out.image.data.iter().copied().collect();
            assert_ne!(before, after);
            before.sort_by(f32::total_cmp);
            after.sort_by(f32::total_cmp);
            assert_eq!(before, after);
        }
    }

    #[test]
    fn painting_touches_only_its_region_with_in_range_values() {
        for (inpaint_p, mode) in [(1.0, "in"), (0.0, "out")] {
            let s = sample(&[1, 32, 32]);
            let orig = s.image.data.clone();
            let t = InOutPainting {
                p: 1.0,
                inpaint_p,
                block_range: [2, 2],
            };
            let out = t.apply(s, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
            let rec = &out.history.last().unwrap().params;
            assert_eq!(rec["mode"], mode);
            let mut inside = vec![false; 32 * 32];
            for b in rec["blocks"].as_array().unwrap() {
                let at: Vec<usize> = serde_json::from_value(b["at"].clone()).unwrap();
                let size: Vec<usize> = serde_json::from_value(b["size"].clone()).unwrap();
                if mode == "in" {
                    assert!(
                        at[1] >= 3 && at[1] + size[1] <= 29,
                        "margin: {at:?} {size:?}"
                    );
                }
                for h in at[1]..at[1] + size[1] {
                    for w in at[2]..at[2] + size[2] {
                        inside[h * 32 + w] = true;
                    }
                }
            }
            let (lo, hi) = orig
                .iter()
                .fold((f32::MAX, f32::MIN), |a, &x| (a.0.min(x), a.1.max(x)));
            let mut changed = 0;
            for (i, (a, b)) in orig.iter().zip(out.image.data.iter()).enumerate() {
                let painted = inside[i] == (mode == "in");
                if !painted {
                    assert_eq!(a, b, "unpainted voxel {i} changed");
                } else {
                    assert!(*b >= lo && *b <= hi);
                    changed += (a != b) as usize;
                }
            }
            assert!(changed > 0);
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(InOutPainting {
            p: 1.5,
            inpaint_p: 0.2,
            block_range: [1, 2]
        }
        .validate()
        .is_err());
        assert!(InOutPainting {
            p: 0.5,
            inpaint_p: 0.2,
            block_range: [3, 2]
        }
        .validate()
        .is_err());
        let t = LocalShuffling {
            p: 1.0,
            block_range: [1, 1],
            block_size_min: None,
            block_size_max: Some(vec![40]),
        };
        let e = t
            .apply(sample(&[1, 16, 16]), &mut ChaCha8Rng::seed_from_u64(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("block_size_max"), "{e}");
    }
}
