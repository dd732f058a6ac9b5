//! Resampling transforms: rotation, affine, rescaling, resampling to a
//! spacing, and elastic deformation. Images are interpolated linearly (or by
//! nearest neighbour), labels and scribbles always by nearest neighbour, so
//! no label value is ever invented and the unannotated value stays as it is.

use crate::grid::{embed, from4, matmul3, to4, warp, GridOp, Interp, Mapping, Sampling};
use crate::pipeline::{check_p, check_range, record, skipped, Transform, Validate};
use crate::spatial::{apply_grid_op, shape3, Fills};
use medseg_core::{Error, LabelMap, Result, Sample};
use ndarray::Array4;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::Deserialize;

fn default_p() -> f64 {
    0.5
}

fn one() -> f64 {
    1.0
}

fn draw(rng: &mut ChaCha8Rng, r: [f64; 2]) -> f64 {
    if r[0] == r[1] {
        r[0]
    } else {
        rng.random_range(r[0]..r[1])
    }
}

/// Rotation by `theta` radians in the plane of embedding axes `(a, b)`.
fn rotation(a: usize, b: usize, theta: f64) -> [[f64; 3]; 3] {
    let mut m = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let (s, c) = theta.sin_cos();
    m[a][a] = c;
    m[a][b] = -s;
    m[b][a] = s;
    m[b][b] = c;
    m
}

/// The affine op mapping output voxel `o` to input `m (o - c) + c + t`
/// (rotation/scaling about the centre of the grid, keeping its shape).
fn about_centre(m: [[f64; 3]; 3], shape: [usize; 3], t: [f64; 3]) -> GridOp {
    let c = shape.map(|n| (n as f64 - 1.0) / 2.0);
    let mut offset = [0.0; 3];
    for r in 0..3 {
        offset[r] = c[r] + t[r] - (0..3).map(|k| m[r][k] * c[k]).sum::<f64>();
    }
    GridOp::Affine {
        matrix: m,
        offset,
        out_shape: shape,
    }
}

/// Draws a rotation from per-plane angle ranges (degrees).
fn draw_rotation(
    rng: &mut ChaCha8Rng,
    ndim: usize,
    d: Option<[f64; 2]>,
    h: Option<[f64; 2]>,
    w: Option<[f64; 2]>,
) -> Result<([[f64; 3]; 3], [f64; 3])> {
    if ndim == 2 && (h.is_some() || w.is_some()) {
        return Err(Error::invalid(
            "angle_range_h",
            "a 2D image rotates in the H-W plane only: use angle_range_d",
        ));
    }
    let mut m = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let mut angles = [0.0; 3];
    for (i, (range, plane)) in [(d, (1, 2)), (h, (0, 2)), (w, (0, 1))]
        .into_iter()
        .enumerate()
    {
        if let Some(r) = range {
            let deg = draw(rng, r);
            angles[i] = deg;
            m = matmul3(&rotation(plane.0, plane.1, deg.to_radians()), &m);
        }
    }
    Ok((m, angles))
}

fn check_angles(d: Option<[f64; 2]>, h: Option<[f64; 2]>, w: Option<[f64; 2]>) -> Result<()> {
    for (k, r) in [
        ("angle_range_d", d),
        ("angle_range_h", h),
        ("angle_range_w", w),
    ] {
        if let Some(r) = r {
            check_range(k, r)?;
        }
    }
    Ok(())
}

/// With probability `p`, rotates about the image centre by angles drawn
/// uniformly from the given ranges (degrees), keeping the shape (corners
/// that come from outside the image are filled). `angle_range_d` rotates in
/// the H-W plane (about the depth axis; the only plane of a 2D image),
/// `angle_range_h` in the D-W plane and `angle_range_w` in the D-H plane, as
/// in PyMIC's `RandomRotate`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomRotate {
    /// Angle range (degrees) in the H-W plane.
    #[serde(default)]
    pub angle_range_d: Option<[f64; 2]>,
    /// Angle range (degrees) in the D-W plane (3D only).
    #[serde(default)]
    pub angle_range_h: Option<[f64; 2]>,
    /// Angle range (degrees) in the D-H plane (3D only).
    #[serde(default)]
    pub angle_range_w: Option<[f64; 2]>,
    /// Probability of rotating.
    #[serde(default = "default_p")]
    pub p: f64,
    /// Image interpolation (`linear` or `nearest`).
    #[serde(default)]
    pub image_interp: Interp,
    /// Image value outside the input.
    #[serde(default)]
    pub image_fill: f32,
    /// Label value outside the input (0, or the ignore value for sparse labels).
    #[serde(default)]
    pub label_fill: u16,
}

impl Validate for RandomRotate {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)?;
        check_angles(self.angle_range_d, self.angle_range_h, self.angle_range_w)?;
        if self.angle_range_d.is_none()
            && self.angle_range_h.is_none()
            && self.angle_range_w.is_none()
        {
            return Err(Error::invalid(
                "angle_range_d",
                "give at least one of angle_range_d, angle_range_h, angle_range_w",
            ));
        }
        Ok(())
    }
}

impl Transform for RandomRotate {
    fn name(&self) -> &str {
        "RandomRotate"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        let (shape, ndim) = shape3(&sample);
        if rng.random::<f64>() >= self.p {
            return Ok(skipped(sample, "RandomRotate"));
        }
        let (m, angles) = draw_rotation(
            rng,
            ndim,
            self.angle_range_d,
            self.angle_range_h,
            self.angle_range_w,
        )?;
        let op = about_centre(m, shape, [0.0; 3]);
        let fills = Fills {
            image: self.image_fill,
            label: self.label_fill,
            interp: self.image_interp,
        };
        apply_grid_op(
            sample,
            "RandomRotate",
            op,
            fills,
            serde_json::json!({ "angles_dhw": angles }),
        )
    }
}

/// With probability `p`, a random rotation (as [`RandomRotate`]), isotropic
/// scaling (a factor above 1 zooms in) and translation (voxels, per axis)
/// about the image centre, in one interpolation, keeping the shape.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomAffine {
    /// Angle range (degrees) in the H-W plane.
    #[serde(default)]
    pub angle_range_d: Option<[f64; 2]>,
    /// Angle range (degrees) in the D-W plane (3D only).
    #[serde(default)]
    pub angle_range_h: Option<[f64; 2]>,
    /// Angle range (degrees) in the D-H plane (3D only).
    #[serde(default)]
    pub angle_range_w: Option<[f64; 2]>,
    /// Range of the zoom factor.
    #[serde(default = "unit_range")]
    pub scale_range: [f64; 2],
    /// Range of the shift in voxels, drawn per spatial axis.
    #[serde(default)]
    pub translate_range: [f64; 2],
    /// Probability of applying.
    #[serde(default = "default_p")]
    pub p: f64,
    /// Image interpolation (`linear` or `nearest`).
    #[serde(default)]
    pub image_interp: Interp,
    /// Image value outside the input.
    #[serde(default)]
    pub image_fill: f32,
    /// Label value outside the input.
    #[serde(default)]
    pub label_fill: u16,
}

fn unit_range() -> [f64; 2] {
    [1.0, 1.0]
}

impl Validate for RandomAffine {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)?;
        check_angles(self.angle_range_d, self.angle_range_h, self.angle_range_w)?;
        check_range("scale_range", self.scale_range)?;
        if self.scale_range[0] <= 0.0 {
            return Err(Error::invalid("scale_range", "factors must be positive"));
        }
        check_range("translate_range", self.translate_range)
    }
}

impl Transform for RandomAffine {
    fn name(&self) -> &str {
        "RandomAffine"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        let (shape, ndim) = shape3(&sample);
        if rng.random::<f64>() >= self.p {
            return Ok(skipped(sample, "RandomAffine"));
        }
        let (r, angles) = draw_rotation(
            rng,
            ndim,
            self.angle_range_d,
            self.angle_range_h,
            self.angle_range_w,
        )?;
        let s = draw(rng, self.scale_range);
        let mut t = [0.0; 3];
        for v in t.iter_mut().skip(3 - ndim) {
            *v = draw(rng, self.translate_range);
        }
        let mut scale = [
            [1.0 / s, 0.0, 0.0],
            [0.0, 1.0 / s, 0.0],
            [0.0, 0.0, 1.0 / s],
        ];
        if ndim == 2 {
            scale[0][0] = 1.0;
        }
        let op = about_centre(matmul3(&r, &scale), shape, t);
        let fills = Fills {
            image: self.image_fill,
            label: self.label_fill,
            interp: self.image_interp,
        };
        apply_grid_op(
            sample,
            "RandomAffine",
            op,
            fills,
            serde_json::json!({ "angles_dhw": angles, "scale": s, "translate": t }),
        )
    }
}

/// The op resampling a grid of `in_shape` to `out_shape` over the same
/// physical extent (voxel centres, `align_corners = false`).
fn resize_op(in_shape: [usize; 3], out_shape: [usize; 3]) -> GridOp {
    let mut matrix = [[0.0; 3]; 3];
    let mut offset = [0.0; 3];
    for a in 0..3 {
        let f = in_shape[a] as f64 / out_shape[a] as f64;
        matrix[a][a] = f;
        offset[a] = 0.5 * f - 0.5;
    }
    GridOp::Affine {
        matrix,
        offset,
        out_shape,
    }
}

/// Rescales by a random ratio (output size `round(n * ratio)`, at least 1),
/// isotropic by default, as PyMIC's `RandomRescale`. The spacing in the
/// geometry is updated so that the physical extent is kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomRescale {
    /// Range of the size ratio.
    pub ratio_range: [f64; 2],
    /// One ratio for all axes (default) or one per axis.
    #[serde(default = "yes")]
    pub isotropic: bool,
    /// Probability of applying.
    #[serde(default = "one")]
    pub p: f64,
    /// Image interpolation (`linear` or `nearest`).
    #[serde(default)]
    pub image_interp: Interp,
}

fn yes() -> bool {
    true
}

impl Validate for RandomRescale {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)?;
        check_range("ratio_range", self.ratio_range)?;
        if self.ratio_range[0] <= 0.0 {
            return Err(Error::invalid("ratio_range", "ratios must be positive"));
        }
        Ok(())
    }
}

impl Transform for RandomRescale {
    fn name(&self) -> &str {
        "RandomRescale"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        let (shape, ndim) = shape3(&sample);
        if rng.random::<f64>() >= self.p {
            return Ok(skipped(sample, "RandomRescale"));
        }
        let iso = draw(rng, self.ratio_range);
        let mut out = shape;
        for a in 3 - ndim..3 {
            let r = if self.isotropic {
                iso
            } else {
                draw(rng, self.ratio_range)
            };
            out[a] = ((shape[a] as f64 * r).round() as usize).max(1);
        }
        let fills = Fills {
            image: 0.0,
            label: 0,
            interp: self.image_interp,
        };
        apply_grid_op(
            sample,
            "RandomRescale",
            resize_op(shape, out),
            fills,
            serde_json::json!({}),
        )
    }
}

/// Resamples to a target voxel spacing (array axis order, spatial axes
/// only): output size `round(n * spacing / target)`; the grid keeps its
/// physical extent and the geometry gets the exact new spacing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resample {
    /// Target spacing, one value per spatial axis (array axis order), in mm.
    pub spacing: Vec<f64>,
    /// Image interpolation (`linear` or `nearest`).
    #[serde(default)]
    pub image_interp: Interp,
}

impl Validate for Resample {
    fn validate(&self) -> Result<()> {
        if self.spacing.is_empty()
            || self.spacing.len() > 3
            || self.spacing.iter().any(|s| !(*s > 0.0 && s.is_finite()))
        {
            return Err(Error::invalid(
                "spacing",
                format!("expected 2 or 3 positive spacings, got {:?}", self.spacing),
            ));
        }
        Ok(())
    }
}

impl Transform for Resample {
    fn name(&self) -> &str {
        "Resample"
    }
    fn is_random(&self) -> bool {
        false
    }
    fn apply(&self, sample: Sample, _rng: &mut ChaCha8Rng) -> Result<Sample> {
        let (shape, ndim) = shape3(&sample);
        let target = embed(&self.spacing, ndim, 1.0, "spacing")?;
        let sp = sample.image.geometry.spacing;
        let mut out = shape;
        for a in 3 - ndim..3 {
            out[a] = ((shape[a] as f64 * sp[a] / target[a]).round() as usize).max(1);
        }
        let fills = Fills {
            image: 0.0,
            label: 0,
            interp: self.image_interp,
        };
        apply_grid_op(
            sample,
            "Resample",
            resize_op(shape, out),
            fills,
            serde_json::json!({}),
        )
    }
}

/// Elastic deformation: with probability `p`, random displacements (normal,
/// standard deviation drawn from `magnitude_range`, in voxels) on a coarse
/// control grid every `grid_spacing` voxels, smoothed once with a [1, 2, 1]
/// filter and interpolated trilinearly to every voxel. Zero magnitude is the
/// identity. Not invertible (training-time augmentation).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticDeformation {
    /// Control-point spacing in voxels.
    #[serde(default = "default_grid_spacing")]
    pub grid_spacing: f64,
    /// Range of the displacement standard deviation, in voxels.
    #[serde(default = "default_magnitude")]
    pub magnitude_range: [f64; 2],
    /// Probability of applying.
    #[serde(default = "default_p")]
    pub p: f64,
    /// Image interpolation (`linear` or `nearest`).
    #[serde(default)]
    pub image_interp: Interp,
    /// Image value outside the input.
    #[serde(default)]
    pub image_fill: f32,
    /// Label value outside the input.
    #[serde(default)]
    pub label_fill: u16,
}

fn default_grid_spacing() -> f64 {
    24.0
}

fn default_magnitude() -> [f64; 2] {
    [1.0, 4.0]
}

impl Validate for ElasticDeformation {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)?;
        check_range("magnitude_range", self.magnitude_range)?;
        if self.magnitude_range[0] < 0.0 {
            return Err(Error::invalid("magnitude_range", "must be non-negative"));
        }
        if !(self.grid_spacing >= 1.0 && self.grid_spacing.is_finite()) {
            return Err(Error::invalid("grid_spacing", "must be at least 1 voxel"));
        }
        Ok(())
    }
}

/// One [1, 2, 1] / 4 pass along `axis` of each component, clamping at edges.
fn smooth121(g: &Array4<f32>, axis: usize) -> Array4<f32> {
    let n = g.shape()[axis];
    if n < 2 {
        return g.clone();
    }
    let mut out = g.clone();
    for ((c, z, y, x), v) in out.indexed_iter_mut() {
        let idx = [c, z, y, x];
        let i = idx[axis];
        let mut lo = idx;
        lo[axis] = i.saturating_sub(1);
        let mut hi = idx;
        hi[axis] = (i + 1).min(n - 1);
        *v = 0.25 * g[lo] + 0.5 * g[idx] + 0.25 * g[hi];
    }
    out
}

impl Transform for ElasticDeformation {
    fn name(&self) -> &str {
        "ElasticDeformation"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, mut sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        let (shape, ndim) = shape3(&sample);
        if rng.random::<f64>() >= self.p {
            return Ok(skipped(sample, "ElasticDeformation"));
        }
        let magnitude = draw(rng, self.magnitude_range) as f32;
        let gs = self.grid_spacing;
        let coarse = shape.map(|n| ((n as f64 - 1.0) / gs).ceil() as usize + 1);
        let mut grid = Array4::<f32>::zeros((3, coarse[0], coarse[1], coarse[2]));
        for ((c, _, _, _), v) in grid.indexed_iter_mut() {
            let z: f32 = rng.sample(StandardNormal);
            // 2D images have no displacement along their singleton depth axis.
            *v = if c < 3 - ndim { 0.0 } else { z * magnitude };
        }
        for axis in 1..4 {
            grid = smooth121(&grid, axis);
        }
        let inv = 1.0 / gs;
        let up = Mapping::affine(
            [[inv, 0.0, 0.0], [0.0, inv, 0.0], [0.0, 0.0, inv]],
            [0.0; 3],
        );
        let field = warp(&grid, shape, &up, Sampling::Linear(0.0));
        let field = field.as_slice().expect("standard layout");
        let id = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let map = Mapping::affine(id, [0.0; 3]).with_field(field);
        let img = to4(std::mem::take(&mut sample.image.data))?;
        let s = match self.image_interp {
            Interp::Linear => Sampling::Linear(self.image_fill),
            Interp::Nearest => Sampling::Nearest(self.image_fill),
        };
        sample.image.data = from4(warp(&img, shape, &map, s), ndim);
        if let Some(label) = sample.label.take() {
            let l = to4(label.data)?;
            let out = from4(
                warp(&l, shape, &map, Sampling::Nearest(self.label_fill)),
                ndim,
            );
            sample.label = Some(LabelMap::new(out, label.geometry)?);
        }
        for m in [&mut sample.pixel_weight, &mut sample.noisy_mask] {
            if let Some(w) = m.take() {
                let w = to4(w)?;
                *m = Some(from4(warp(&w, shape, &map, Sampling::Nearest(0.0)), ndim));
            }
        }
        record(
            &mut sample,
            "ElasticDeformation",
            serde_json::json!({ "invertible": false, "magnitude": magnitude }),
        );
        Ok(sample)
    }
}

/// Crops a box whose side along each spatial axis is a random fraction
/// (`scale_range`, one fraction for all axes when `isotropic`) of the
/// image's, at a random position, and resizes it to `size` in one
/// interpolation (PyMIC's `RandomResizedCrop`). Invertible.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomResizedCrop {
    /// Output spatial size, one value per spatial axis (array axis order).
    pub size: Vec<usize>,
    /// Range of the crop side as a fraction of the image side.
    #[serde(default = "default_rrc_scale")]
    pub scale_range: [f64; 2],
    /// One fraction for all axes (default) or one per axis.
    #[serde(default = "yes")]
    pub isotropic: bool,
    /// Image interpolation (`linear` or `nearest`).
    #[serde(default)]
    pub image_interp: Interp,
}

fn default_rrc_scale() -> [f64; 2] {
    [0.5, 1.0]
}

impl Validate for RandomResizedCrop {
    fn validate(&self) -> Result<()> {
        if self.size.is_empty() || self.size.len() > 3 || self.size.contains(&0) {
            return Err(Error::invalid(
                "size",
                format!("expected 2 or 3 positive sizes, got {:?}", self.size),
            ));
        }
        check_range("scale_range", self.scale_range)?;
        if self.scale_range[0] <= 0.0 || self.scale_range[1] > 1.0 {
            return Err(Error::invalid("scale_range", "fractions must be in (0, 1]"));
        }
        Ok(())
    }
}

impl Transform for RandomResizedCrop {
    fn name(&self) -> &str {
        "RandomResizedCrop"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        let (shape, ndim) = shape3(&sample);
        let out = embed(&self.size, ndim, 1, "size")?;
        let iso = draw(rng, self.scale_range);
        let mut matrix = [[0.0; 3]; 3];
        let mut offset = [0.0; 3];
        matrix[0][0] = 1.0;
        for a in 3 - ndim..3 {
            let f = if self.isotropic {
                iso
            } else {
                draw(rng, self.scale_range)
            };
            let side = ((shape[a] as f64 * f).round() as usize).clamp(1, shape[a]);
            let start = rng.random_range(0..=shape[a] - side) as f64;
            let k = side as f64 / out[a] as f64;
            matrix[a][a] = k;
            offset[a] = start + 0.5 * k - 0.5;
        }
        let op = GridOp::Affine {
            matrix,
            offset,
            out_shape: out,
        };
        let fills = Fills {
            image: 0.0,
            label: 0,
            interp: self.image_interp,
        };
        apply_grid_op(
            sample,
            "RandomResizedCrop",
            op,
            fills,
            serde_json::json!({}),
        )
    }
}
