//! Perspective warp as torchvision's `RandomPerspective` / `F.perspective`:
//! the image corners move to random points, the same homography resamples
//! the image (linearly) and the label (nearest neighbour).

use crate::grid::{from4, to4, warp, Interp, Mapping, Sampling, Voxel};
use crate::photo::skipped;
use crate::pipeline::{check_p, record, Transform, Validate};
use crate::spatial::shape3;
use medseg_core::{Error, LabelMap, Result, Sample};
use ndarray::{Array4, ArrayD};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

/// Four points `(x, y)` (column, row), in the order top-left, top-right,
/// bottom-right, bottom-left.
pub type Corners = [[f64; 2]; 4];

/// The coefficients `(a, b, c, d, e, f, g, h)` of the homography that maps
/// each of `endpoints` to the matching point of `startpoints`:
/// `(x, y) -> ((a x + b y + c) / (g x + h y + 1), (d x + e y + f) / (g x + h y + 1))`
/// (torchvision's `_get_perspective_coeffs(startpoints, endpoints)`: the map
/// from output to input coordinates). Solved exactly (8 x 8 system, Gaussian
/// elimination with partial pivoting, in `f64`).
///
/// # Errors
/// [`Error::InvalidValue`] when the points are degenerate (three on a line).
pub fn perspective_coeffs(startpoints: &Corners, endpoints: &Corners) -> Result<[f64; 8]> {
    let mut a = [[0f64; 9]; 8];
    for (i, (p, q)) in endpoints.iter().zip(startpoints).enumerate() {
        a[2 * i] = [
            p[0],
            p[1],
            1.0,
            0.0,
            0.0,
            0.0,
            -q[0] * p[0],
            -q[0] * p[1],
            q[0],
        ];
        a[2 * i + 1] = [
            0.0,
            0.0,
            0.0,
            p[0],
            p[1],
            1.0,
            -q[1] * p[0],
            -q[1] * p[1],
            q[1],
        ];
    }
    let scale = a
        .iter()
        .flat_map(|r| r.iter())
        .fold(0f64, |m, v| m.max(v.abs()))
        .max(1.0);
    for col in 0..8 {
        let piv = (col..8)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .expect("rows");
        if a[piv][col].abs() <= 1e-12 * scale {
            return Err(Error::invalid(
                "corners",
                format!("degenerate corner points {startpoints:?} -> {endpoints:?}"),
            ));
        }
        a.swap(col, piv);
        for r in 0..8 {
            if r != col {
                let f = a[r][col] / a[col][col];
                if f != 0.0 {
                    let pivot_row = a[col];
                    for (x, p) in a[r].iter_mut().zip(pivot_row).skip(col) {
                        *x -= f * p;
                    }
                }
            }
        }
    }
    let mut out = [0f64; 8];
    for (i, o) in out.iter_mut().enumerate() {
        *o = a[i][8] / a[i][i];
    }
    Ok(out)
}

/// Applies the homography `coeffs` to a point `(x, y)`.
pub fn apply_homography(coeffs: &[f64; 8], x: f64, y: f64) -> [f64; 2] {
    let c = coeffs;
    let den = c[6] * x + c[7] * y + 1.0;
    [
        (c[0] * x + c[1] * y + c[2]) / den,
        (c[3] * x + c[4] * y + c[5]) / den,
    ]
}

/// The displacement field `[3, D, H, W]` (input voxels) that makes output
/// pixel `(y, x)` read the input at `H(x + 0.5, y + 0.5) - 0.5`, which is
/// torchvision's sampling grid (pixel centres at half-integers,
/// `grid_sample` with `align_corners = False`).
fn field(coeffs: &[f64; 8], shape: [usize; 3]) -> Array4<f32> {
    let [d, h, w] = shape;
    let mut f = Array4::<f32>::zeros((3, d, h, w));
    for y in 0..h {
        for x in 0..w {
            let [sx, sy] = apply_homography(coeffs, x as f64 + 0.5, y as f64 + 0.5);
            let (dy, dx) = ((sy - 0.5 - y as f64) as f32, (sx - 0.5 - x as f64) as f32);
            for z in 0..d {
                f[[1, z, y, x]] = dy;
                f[[2, z, y, x]] = dx;
            }
        }
    }
    f
}

/// Warps a channel-first array `[C, H, W]` / `[C, D, H, W]` (every depth
/// slice alike) with the field of `coeffs`.
fn warp_with<T: Voxel>(
    a: ArrayD<T>,
    coeffs: &[f64; 8],
    sampling: Sampling<T>,
) -> Result<ArrayD<T>> {
    let ndim = a.ndim().saturating_sub(1);
    let a = to4(a)?;
    let shape = [a.shape()[1], a.shape()[2], a.shape()[3]];
    let f = field(coeffs, shape);
    let id = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let map = Mapping::affine(id, [0.0; 3]).with_field(f.as_slice().expect("standard layout"));
    Ok(from4(warp(&a, shape, &map, sampling), ndim))
}

/// torchvision's `F.perspective(img, startpoints, endpoints, interpolation,
/// fill)` for a channel-first `f32` array `[C, H, W]` (or `[C, D, H, W]`,
/// each depth slice warped alike): the content at `startpoints` moves to
/// `endpoints` (points `(x, y)`, column then row); pixels that come from
/// outside the input get `fill` (blended at the border when linear, as
/// torchvision's mask does).
///
/// # Errors
/// [`Error::InvalidValue`] for degenerate points, [`Error::Shape`] for an
/// array that is not channel-first 2D or 3D.
pub fn perspective_warp(
    image: ArrayD<f32>,
    startpoints: &Corners,
    endpoints: &Corners,
    interp: Interp,
    fill: f32,
) -> Result<ArrayD<f32>> {
    let coeffs = perspective_coeffs(startpoints, endpoints)?;
    warp_image(image, &coeffs, interp, fill)
}

/// Warps an image as torchvision does: nearest neighbour takes `fill` where
/// the source pixel is outside; linear interpolation samples with zeros
/// outside (`v0`), samples a mask of ones likewise (`m`) and returns
/// `v0 m + (1 - m) fill` (torchvision's fill blending, which also scales the
/// border pixels by `m`).
fn warp_image(
    image: ArrayD<f32>,
    coeffs: &[f64; 8],
    interp: Interp,
    fill: f32,
) -> Result<ArrayD<f32>> {
    match interp {
        Interp::Nearest => warp_with(image, coeffs, Sampling::Nearest(fill)),
        Interp::Linear if fill == 0.0 => warp_with(image, coeffs, Sampling::Linear(0.0)),
        Interp::Linear => {
            let mut shape = image.shape().to_vec();
            shape[0] = 1;
            let mask = warp_with(
                ArrayD::from_elem(shape, 1.0f32),
                coeffs,
                Sampling::Linear(0.0),
            )?;
            let mut out = warp_with(image, coeffs, Sampling::Linear(0.0))?;
            for mut chan in out.outer_iter_mut() {
                chan.zip_mut_with(&mask.index_axis(ndarray::Axis(0), 0), |v, &m| {
                    *v = *v * m + (1.0 - m) * fill
                });
            }
            Ok(out)
        }
    }
}

/// Draws torchvision's `RandomPerspective.get_params`: the image corners
/// `(x, y)` and where they go, each moved inwards by a random whole number
/// of pixels up to `distortion_scale` times half the side.
pub(crate) fn draw_corners(
    rng: &mut ChaCha8Rng,
    width: usize,
    height: usize,
    distortion_scale: f64,
) -> (Corners, Corners) {
    let (w, h) = (width as i64, height as i64);
    let dw = (distortion_scale * (w / 2) as f64) as i64;
    let dh = (distortion_scale * (h / 2) as f64) as i64;
    let mut r = |lo: i64, hi: i64| rng.random_range(lo.max(0)..hi.max(lo.max(0) + 1)) as f64;
    let tl = [r(0, dw + 1), r(0, dh + 1)];
    let tr = [r(w - dw - 1, w), r(0, dh + 1)];
    let br = [r(w - dw - 1, w), r(h - dh - 1, h)];
    let bl = [r(0, dw + 1), r(h - dh - 1, h)];
    let (wf, hf) = ((w - 1) as f64, (h - 1) as f64);
    let start = [[0.0, 0.0], [wf, 0.0], [wf, hf], [0.0, hf]];
    (start, [tl, tr, br, bl])
}

fn default_p() -> f64 {
    0.5
}
fn default_distortion() -> f64 {
    0.5
}

/// With probability `p`, a perspective warp as torchvision's
/// `RandomPerspective`: each image corner moves inwards by a random whole
/// number of pixels, up to `distortion_scale` times half the image side, and
/// the homography taking the corners there resamples the image
/// (`image_interp`, linear by default), the label (nearest neighbour) and the
/// weight maps (nearest) alike. Pixels from outside the image get
/// `image_fill` (default: the image's minimum, the black of a screen) and
/// `label_fill` (default 0). Volumes get the same warp on every depth slice
/// (the H-W plane). The geometry is kept; the warp is not invertible
/// (a training or test-degradation transform).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomPerspective {
    /// How far the corners may move, in `[0, 1]` (0 is the identity).
    #[serde(default = "default_distortion")]
    pub distortion_scale: f64,
    /// Probability of applying.
    #[serde(default = "default_p")]
    pub p: f64,
    /// Image interpolation (`linear` or `nearest`).
    #[serde(default)]
    pub image_interp: Interp,
    /// Image value outside the input (default: the image minimum).
    #[serde(default)]
    pub image_fill: Option<f32>,
    /// Label value outside the input (0, or the ignore value for sparse labels).
    #[serde(default)]
    pub label_fill: u16,
}

impl Validate for RandomPerspective {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)?;
        if !(0.0..=1.0).contains(&self.distortion_scale) {
            return Err(Error::invalid(
                "distortion_scale",
                format!("must be in [0, 1], got {}", self.distortion_scale),
            ));
        }
        if let Some(f) = self.image_fill {
            if !f.is_finite() {
                return Err(Error::invalid("image_fill", "must be finite"));
            }
        }
        Ok(())
    }
}

/// Warps every array of `sample` with the homography taking `start` to `end`.
pub(crate) fn warp_sample(
    mut sample: Sample,
    start: &Corners,
    end: &Corners,
    interp: Interp,
    image_fill: f32,
    label_fill: u16,
) -> Result<Sample> {
    let coeffs = perspective_coeffs(start, end)?;
    let img = std::mem::take(&mut sample.image.data);
    sample.image.data = warp_image(img, &coeffs, interp, image_fill)?;
    if let Some(label) = sample.label.take() {
        let out = warp_with(label.data, &coeffs, Sampling::Nearest(label_fill))?;
        sample.label = Some(LabelMap::new(out, label.geometry)?);
    }
    for m in [&mut sample.pixel_weight, &mut sample.noisy_mask] {
        if let Some(w) = m.take() {
            *m = Some(warp_with(w, &coeffs, Sampling::Nearest(0.0))?);
        }
    }
    Ok(sample)
}

impl Transform for RandomPerspective {
    fn name(&self) -> &str {
        "RandomPerspective"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        let (shape, _) = shape3(&sample);
        if rng.random::<f64>() >= self.p {
            return Ok(skipped(sample, "RandomPerspective"));
        }
        let (start, end) = draw_corners(rng, shape[2], shape[1], self.distortion_scale);
        let fill = match self.image_fill {
            Some(f) => f,
            None => sample
                .image
                .data
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .fold(f32::INFINITY, f32::min),
        };
        let fill = if fill.is_finite() { fill } else { 0.0 };
        let mut sample = if start == end {
            sample
        } else {
            warp_sample(
                sample,
                &start,
                &end,
                self.image_interp,
                fill,
                self.label_fill,
            )?
        };
        // an identity draw leaves the grid as it is (and invertible)
        let params = if start == end {
            serde_json::json!({ "identity": true, "startpoints": start, "endpoints": end })
        } else {
            serde_json::json!({
                "invertible": false, "startpoints": start, "endpoints": end,
                "image_fill": fill, "label_fill": self.label_fill,
            })
        };
        record(&mut sample, "RandomPerspective", params);
        Ok(sample)
    }
}
