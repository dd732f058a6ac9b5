//! Crop, pad, flip, rot90 and transpose: exact grid operations on the image,
//! label map and pixel-weight map at once.

use crate::grid::{apply_op, embed, from4, resolve_axis, to4, GridOp, Interp, Sampling};
use crate::pipeline::{check_p, record, Transform, Validate};
use medseg_core::{Error, LabelMap, Result, Sample, DEFAULT_IGNORE_LABEL};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

/// Fill values and interpolation used when a grid operation is applied.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fills {
    pub image: f32,
    pub label: u16,
    pub interp: Interp,
}

/// The spatial shape of the sample in the 3D embedding, and its spatial rank.
pub(crate) fn shape3(sample: &Sample) -> ([usize; 3], usize) {
    let ndim = sample.image.spatial_ndim();
    let s = sample.image.spatial_shape();
    let mut out = [1; 3];
    out[3 - ndim..].copy_from_slice(s);
    (out, ndim)
}

/// Applies `op` to every array of `sample`, updates the geometry and pushes
/// a record `{op, in_shape, ...extra}` under `name`.
pub(crate) fn apply_grid_op(
    mut sample: Sample,
    name: &str,
    op: GridOp,
    fills: Fills,
    extra: serde_json::Value,
) -> Result<Sample> {
    let (in_shape, ndim) = shape3(&sample);
    let out_shape = op.out_shape(in_shape);
    if ndim == 2 && out_shape[0] != 1 {
        return Err(Error::Shape(format!(
            "{name} would give a 2D image a depth of {}",
            out_shape[0]
        )));
    }
    let geometry = op.geometry(&sample.image.geometry, in_shape);
    let image = to4(std::mem::take(&mut sample.image.data))?;
    let sampling = match fills.interp {
        Interp::Linear => Sampling::Linear(fills.image),
        Interp::Nearest => Sampling::Nearest(fills.image),
    };
    sample.image.data = from4(apply_op(&op, &image, sampling), ndim);
    sample.image.geometry = geometry;
    if let Some(label) = sample.label.take() {
        let l = to4(label.data)?;
        let out = from4(apply_op(&op, &l, Sampling::Nearest(fills.label)), ndim);
        sample.label = Some(LabelMap::new(out, geometry)?);
    }
    for map in [&mut sample.pixel_weight, &mut sample.noisy_mask] {
        if let Some(w) = map.take() {
            let w = to4(w)?;
            *map = Some(from4(apply_op(&op, &w, Sampling::Nearest(0.0)), ndim));
        }
    }
    let mut params = serde_json::json!({
        "op": op,
        "in_shape": in_shape,
        "ndim": ndim,
    });
    if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            p.insert(k.clone(), v.clone());
        }
    }
    record(&mut sample, name, params);
    Ok(sample)
}

fn default_p() -> f64 {
    0.5
}

fn default_ignore() -> u16 {
    DEFAULT_IGNORE_LABEL
}

fn sizes3(size: &[usize], ndim: usize, key: &str) -> Result<[usize; 3]> {
    let s = embed(size, ndim, 1, key)?;
    if s.contains(&0) {
        return Err(Error::invalid(key, "sizes must be positive"));
    }
    Ok(s)
}

fn centered_start(n: usize, size: usize) -> i64 {
    if n >= size {
        ((n - size) / 2) as i64
    } else {
        -(((size - n) / 2) as i64)
    }
}

fn check_sizes(key: &str, size: &[usize]) -> Result<()> {
    if size.is_empty() || size.len() > 3 || size.contains(&0) {
        return Err(Error::invalid(
            key,
            format!("expected 2 or 3 positive sizes, got {size:?}"),
        ));
    }
    Ok(())
}

/// Pads symmetrically so that every spatial axis is at least `size` (extra
/// voxels go after, as in PyMIC's `Pad`). Axes already large enough are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pad {
    /// Minimum spatial size, one value per spatial axis (array axis order).
    pub size: Vec<usize>,
    /// Image value of padded voxels.
    #[serde(default)]
    pub image_fill: f32,
    /// Label value of padded voxels (0 background, or the ignore value for sparse labels).
    #[serde(default)]
    pub label_fill: u16,
}

impl Validate for Pad {
    fn validate(&self) -> Result<()> {
        check_sizes("size", &self.size)
    }
}

impl Transform for Pad {
    fn name(&self) -> &str {
        "Pad"
    }
    fn is_random(&self) -> bool {
        false
    }
    fn apply(&self, sample: Sample, _rng: &mut ChaCha8Rng) -> Result<Sample> {
        let (shape, ndim) = shape3(&sample);
        let want = sizes3(&self.size, ndim, "size")?;
        let mut start = [0i64; 3];
        let mut size = shape;
        for a in 0..3 {
            if shape[a] < want[a] {
                start[a] = centered_start(shape[a], want[a]);
                size[a] = want[a];
            }
        }
        let fills = Fills {
            image: self.image_fill,
            label: self.label_fill,
            interp: Interp::Nearest,
        };
        apply_grid_op(
            sample,
            "Pad",
            GridOp::Box { start, size },
            fills,
            serde_json::json!({}),
        )
    }
}

/// Crops the central box of `size` (padding axes that are smaller).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CenterCrop {
    /// Output spatial size, one value per spatial axis (array axis order).
    pub size: Vec<usize>,
    /// Image value of padded voxels.
    #[serde(default)]
    pub image_fill: f32,
    /// Label value of padded voxels.
    #[serde(default)]
    pub label_fill: u16,
}

impl Validate for CenterCrop {
    fn validate(&self) -> Result<()> {
        check_sizes("size", &self.size)
    }
}

impl Transform for CenterCrop {
    fn name(&self) -> &str {
        "CenterCrop"
    }
    fn is_random(&self) -> bool {
        false
    }
    fn apply(&self, sample: Sample, _rng: &mut ChaCha8Rng) -> Result<Sample> {
        let (shape, ndim) = shape3(&sample);
        let size = sizes3(&self.size, ndim, "size")?;
        let start = [0, 1, 2].map(|a| centered_start(shape[a], size[a]));
        let fills = Fills {
            image: self.image_fill,
            label: self.label_fill,
            interp: Interp::Nearest,
        };
        apply_grid_op(
            sample,
            "CenterCrop",
            GridOp::Box { start, size },
            fills,
            serde_json::json!({}),
        )
    }
}

/// Draws a box start per axis: uniform over the positions that keep the box
/// inside, or (when the image is smaller) over the paddings that keep the
/// image inside the box.
fn random_start(rng: &mut ChaCha8Rng, n: usize, size: usize) -> i64 {
    let lo = (n as i64 - size as i64).min(0);
    let hi = (n as i64 - size as i64).max(0);
    rng.random_range(lo..=hi)
}

/// Crops a box of `size` at a uniformly random position (padding when the
/// image is smaller than `size`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomCrop {
    /// Output spatial size, one value per spatial axis (array axis order).
    pub size: Vec<usize>,
    /// Image value of padded voxels.
    #[serde(default)]
    pub image_fill: f32,
    /// Label value of padded voxels.
    #[serde(default)]
    pub label_fill: u16,
}

impl Validate for RandomCrop {
    fn validate(&self) -> Result<()> {
        check_sizes("size", &self.size)
    }
}

impl Transform for RandomCrop {
    fn name(&self) -> &str {
        "RandomCrop"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        let (shape, ndim) = shape3(&sample);
        let size = sizes3(&self.size, ndim, "size")?;
        let start = [0, 1, 2].map(|a| random_start(rng, shape[a], size[a]));
        let fills = Fills {
            image: self.image_fill,
            label: self.label_fill,
            interp: Interp::Nearest,
        };
        apply_grid_op(
            sample,
            "RandomCrop",
            GridOp::Box { start, size },
            fills,
            serde_json::json!({}),
        )
    }
}

fn is_foreground(v: u16, classes: &Option<Vec<u16>>, ignore: u16) -> bool {
    match classes {
        Some(c) => c.contains(&v),
        None => v != 0 && v != ignore,
    }
}

/// Crops to the bounding box of the labelled foreground plus a margin
/// (PyMIC's `CropWithForeground`). Foreground is every label other than 0
/// and the ignore value, or the listed `classes`. A sample without label or
/// foreground is left whole (the record still allows inversion).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CropWithForeground {
    /// Margin in voxels per spatial axis (array axis order); zero by default.
    #[serde(default)]
    pub margin: Option<Vec<usize>>,
    /// Classes that count as foreground.
    #[serde(default)]
    pub classes: Option<Vec<u16>>,
    /// The unannotated value, never foreground.
    #[serde(default = "default_ignore")]
    pub ignore_label: u16,
}

impl Validate for CropWithForeground {
    fn validate(&self) -> Result<()> {
        if let Some(m) = &self.margin {
            if m.is_empty() || m.len() > 3 {
                return Err(Error::invalid("margin", "expected 2 or 3 values"));
            }
        }
        Ok(())
    }
}

/// Inclusive bounding box (3D embedding) of voxels matching `pred`.
fn bbox(label: &LabelMap, pred: impl Fn(u16) -> bool) -> Option<([usize; 3], [usize; 3])> {
    let l = to4(label.data.clone()).ok()?;
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let mut any = false;
    for ((_, z, y, x), &v) in l.indexed_iter() {
        if pred(v) {
            any = true;
            for (a, i) in [z, y, x].into_iter().enumerate() {
                lo[a] = lo[a].min(i);
                hi[a] = hi[a].max(i);
            }
        }
    }
    any.then_some((lo, hi))
}

impl Transform for CropWithForeground {
    fn name(&self) -> &str {
        "CropWithForeground"
    }
    fn is_random(&self) -> bool {
        false
    }
    fn apply(&self, sample: Sample, _rng: &mut ChaCha8Rng) -> Result<Sample> {
        let (shape, ndim) = shape3(&sample);
        let margin = match &self.margin {
            Some(m) => embed(m, ndim, 0, "margin")?,
            None => [0; 3],
        };
        let found = sample
            .label
            .as_ref()
            .and_then(|l| bbox(l, |v| is_foreground(v, &self.classes, self.ignore_label)));
        let (start, size) = match found {
            Some((lo, hi)) => {
                let mut start = [0i64; 3];
                let mut size = [0usize; 3];
                for a in 0..3 {
                    let s = lo[a].saturating_sub(margin[a]);
                    let e = (hi[a] + margin[a]).min(shape[a] - 1);
                    start[a] = s as i64;
                    size[a] = e - s + 1;
                }
                (start, size)
            }
            None => ([0; 3], shape),
        };
        let fills = Fills {
            image: 0.0,
            label: 0,
            interp: Interp::Nearest,
        };
        apply_grid_op(
            sample,
            "CropWithForeground",
            GridOp::Box { start, size },
            fills,
            serde_json::json!({}),
        )
    }
}

/// Crops a box of `size` that, with probability `foreground_prob`, is
/// centred on a voxel of a randomly chosen foreground class present in the
/// label (nnU-Net's oversampling); otherwise at a uniformly random position.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomForegroundCrop {
    /// Output spatial size, one value per spatial axis (array axis order).
    pub size: Vec<usize>,
    /// Probability of forcing a foreground voxel into the patch.
    #[serde(default = "default_fg_prob")]
    pub foreground_prob: f64,
    /// Classes to sample from; by default every label other than 0 and the ignore value.
    #[serde(default)]
    pub classes: Option<Vec<u16>>,
    /// The unannotated value, never foreground.
    #[serde(default = "default_ignore")]
    pub ignore_label: u16,
    /// Image value of padded voxels.
    #[serde(default)]
    pub image_fill: f32,
    /// Label value of padded voxels.
    #[serde(default)]
    pub label_fill: u16,
}

fn default_fg_prob() -> f64 {
    0.33
}

impl Validate for RandomForegroundCrop {
    fn validate(&self) -> Result<()> {
        check_sizes("size", &self.size)?;
        check_p("foreground_prob", self.foreground_prob)
    }
}

impl Transform for RandomForegroundCrop {
    fn name(&self) -> &str {
        "RandomForegroundCrop"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        let (shape, ndim) = shape3(&sample);
        let size = sizes3(&self.size, ndim, "size")?;
        let force = rng.random::<f64>() < self.foreground_prob;
        let mut centre: Option<([usize; 3], u16)> = None;
        if force {
            if let Some(label) = &sample.label {
                let present: Vec<u16> = label
                    .classes()
                    .into_iter()
                    .filter(|&v| is_foreground(v, &self.classes, self.ignore_label))
                    .collect();
                if !present.is_empty() {
                    let class = present[rng.random_range(0..present.len())];
                    let flat = label.data.as_standard_layout();
                    let slice = flat.as_slice().expect("standard layout");
                    let count = slice.iter().filter(|&&v| v == class).count();
                    let pick = rng.random_range(0..count);
                    let idx = slice
                        .iter()
                        .enumerate()
                        .filter(|(_, &v)| v == class)
                        .nth(pick)
                        .map(|(i, _)| i)
                        .expect("counted");
                    let (h, w) = (shape[1], shape[2]);
                    centre = Some(([idx / (h * w), (idx / w) % h, idx % w], class));
                }
            }
        }
        let start = match centre {
            Some((c, _)) => [0, 1, 2].map(|a| {
                let s = c[a] as i64 - (size[a] / 2) as i64;
                let lo = (shape[a] as i64 - size[a] as i64).min(0);
                let hi = (shape[a] as i64 - size[a] as i64).max(0);
                s.clamp(lo, hi)
            }),
            None => [0, 1, 2].map(|a| random_start(rng, shape[a], size[a])),
        };
        let fills = Fills {
            image: self.image_fill,
            label: self.label_fill,
            interp: Interp::Nearest,
        };
        apply_grid_op(
            sample,
            "RandomForegroundCrop",
            GridOp::Box { start, size },
            fills,
            serde_json::json!({ "class": centre.map(|c| c.1) }),
        )
    }
}

/// Flips each listed axis independently with probability `p`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomFlip {
    /// Array axes (1..=ndim after the channel axis, or negative from the
    /// last: -1 is W). Default: every spatial axis.
    #[serde(default)]
    pub axes: Option<Vec<i64>>,
    /// Probability of flipping each axis.
    #[serde(default = "default_p")]
    pub p: f64,
}

impl Validate for RandomFlip {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)
    }
}

fn axes3(axes: &Option<Vec<i64>>, ndim: usize, key: &str) -> Result<Vec<usize>> {
    match axes {
        Some(a) => a.iter().map(|&x| resolve_axis(x, ndim, key)).collect(),
        None => Ok((3 - ndim..3).collect()),
    }
}

impl Transform for RandomFlip {
    fn name(&self) -> &str {
        "RandomFlip"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        let (_, ndim) = shape3(&sample);
        let axes = axes3(&self.axes, ndim, "axes")?;
        let mut chosen = Vec::new();
        for a in axes {
            if rng.random::<f64>() < self.p && !chosen.contains(&a) {
                chosen.push(a);
            }
        }
        let fills = Fills {
            image: 0.0,
            label: 0,
            interp: Interp::Nearest,
        };
        apply_grid_op(
            sample,
            "RandomFlip",
            GridOp::Flip { axes: chosen },
            fills,
            serde_json::json!({}),
        )
    }
}

fn default_plane() -> [i64; 2] {
    [-2, -1]
}

fn plane3(axes: [i64; 2], ndim: usize) -> Result<[usize; 2]> {
    let a = resolve_axis(axes[0], ndim, "axes")?;
    let b = resolve_axis(axes[1], ndim, "axes")?;
    if a == b {
        return Err(Error::invalid(
            "axes",
            format!("needs two different axes, got {axes:?}"),
        ));
    }
    Ok([a, b])
}

/// With probability `p`, rotates by `k` quarter turns in the plane `axes`,
/// `k` uniform in {1, 2, 3} (`numpy.rot90` semantics).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomRot90 {
    /// The plane, as two array axes (default `[-2, -1]`, the H-W plane).
    #[serde(default = "default_plane")]
    pub axes: [i64; 2],
    /// Probability of rotating at all.
    #[serde(default = "default_p")]
    pub p: f64,
}

impl Validate for RandomRot90 {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)
    }
}

impl Transform for RandomRot90 {
    fn name(&self) -> &str {
        "RandomRot90"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        let (_, ndim) = shape3(&sample);
        let axes = plane3(self.axes, ndim)?;
        let k = if rng.random::<f64>() < self.p {
            rng.random_range(1..=3u8)
        } else {
            0
        };
        let fills = Fills {
            image: 0.0,
            label: 0,
            interp: Interp::Nearest,
        };
        apply_grid_op(
            sample,
            "RandomRot90",
            GridOp::Rot90 { k, axes },
            fills,
            serde_json::json!({}),
        )
    }
}

/// With probability `p`, permutes the listed axes by a uniformly random
/// permutation (for two axes: swaps them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomTranspose {
    /// Array axes to permute among themselves (default `[-2, -1]`).
    #[serde(default)]
    pub axes: Option<Vec<i64>>,
    /// Probability of permuting at all.
    #[serde(default = "default_p")]
    pub p: f64,
}

impl Validate for RandomTranspose {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)
    }
}

impl Transform for RandomTranspose {
    fn name(&self) -> &str {
        "RandomTranspose"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        let (_, ndim) = shape3(&sample);
        let axes = match &self.axes {
            Some(_) => axes3(&self.axes, ndim, "axes")?,
            None => vec![1, 2],
        };
        if (1..axes.len()).any(|i| axes[..i].contains(&axes[i])) {
            return Err(Error::invalid(
                "axes",
                format!("lists an axis twice: {:?}", self.axes),
            ));
        }
        let mut perm = [0usize, 1, 2];
        if rng.random::<f64>() < self.p {
            let mut shuffled = axes.clone();
            // Fisher-Yates with our rng
            for i in (1..shuffled.len()).rev() {
                let j = rng.random_range(0..=i);
                shuffled.swap(i, j);
            }
            for (src, dst) in axes.iter().zip(shuffled) {
                perm[*src] = dst;
            }
        }
        let fills = Fills {
            image: 0.0,
            label: 0,
            interp: Interp::Nearest,
        };
        apply_grid_op(
            sample,
            "RandomTranspose",
            GridOp::Permute { perm },
            fills,
            serde_json::json!({}),
        )
    }
}
