//! Exact Euclidean distance transform with anisotropic spacing.
//!
//! Separable, linear time: one pass per axis of the lower-envelope-of-
//! parabolas algorithm of Felzenszwalb and Huttenlocher ("Distance Transforms
//! of Sampled Functions", 2012), in `f64`, with the lanes of each pass spread
//! over rayon's threads.

use crate::util::{spacing3, to3};
use crate::Result;
use ndarray::{Array3, ArrayD, ArrayViewD, ArrayViewMut1, Axis, Zip};
use rayon::prelude::*;

#[derive(Default)]
struct LaneBuf {
    f: Vec<f64>,
    v: Vec<usize>,
    z: Vec<f64>,
}

/// One-dimensional squared distance transform of a lane in place:
/// `d[q] = min_p (s (q - p))^2 + f[p]`, skipping infinite `f[p]`.
fn transform_lane(mut lane: ArrayViewMut1<f64>, s: f64, buf: &mut LaneBuf) {
    buf.f.clear();
    buf.f.extend(lane.iter().copied());
    buf.v.clear();
    buf.z.clear();
    let f = &buf.f;
    let s2 = s * s;
    for (q, &fq) in f.iter().enumerate() {
        if fq == f64::INFINITY {
            continue;
        }
        let qf = q as f64;
        let hq = fq + s2 * qf * qf;
        loop {
            match buf.v.last() {
                None => {
                    buf.v.push(q);
                    buf.z.push(f64::NEG_INFINITY);
                    break;
                }
                Some(&p) => {
                    let pf = p as f64;
                    let x = (hq - (f[p] + s2 * pf * pf)) / (2.0 * s2 * (qf - pf));
                    // `z` is never empty while `v` is not.
                    if x <= buf.z[buf.z.len() - 1] {
                        buf.v.pop();
                        buf.z.pop();
                    } else {
                        buf.v.push(q);
                        buf.z.push(x);
                        break;
                    }
                }
            }
        }
    }
    if buf.v.is_empty() {
        // no feature on this lane: it stays infinite
        return;
    }
    let (v, z) = (&buf.v, &buf.z);
    let mut j = 0usize;
    for (q, out) in lane.iter_mut().enumerate() {
        let qf = q as f64;
        while j + 1 < v.len() && z[j + 1] < qf {
            j += 1;
        }
        let p = v[j];
        let dq = s * (qf - p as f64);
        *out = dq * dq + f[p];
    }
}

/// Turns a 3D array of `0` (feature) / `+inf` (other) into squared distances
/// to the nearest feature, in place. `spacing` is in array axis order.
pub(crate) fn squared_edt_inplace(a: &mut Array3<f64>, spacing: [f64; 3]) {
    for axis in (0..3).rev() {
        if a.len_of(Axis(axis)) <= 1 {
            continue;
        }
        let s = spacing[axis];
        Zip::from(a.lanes_mut(Axis(axis)))
            .into_par_iter()
            .for_each_init(LaneBuf::default, |buf, (lane,)| {
                transform_lane(lane, s, buf)
            });
    }
}

/// Euclidean distance (in mm) from every voxel to the nearest `true` voxel
/// of `features`, with `spacing` given in array axis order (1, 2 or 3 axes).
/// Voxels are `+inf` when `features` has no `true` voxel.
///
/// Note the sense: `scipy.ndimage.distance_transform_edt(x, sampling)` gives
/// the distance to the nearest *zero* of `x`, so
/// `distance_transform(features) == distance_transform_edt(~features)`.
pub fn distance_transform(features: ArrayViewD<bool>, spacing: &[f64]) -> Result<ArrayD<f64>> {
    let shape = features.shape().to_vec();
    let sp = spacing3(spacing, features.ndim())?;
    let v = to3(features)?.view;
    let mut a = v.mapv(|f| if f { 0.0 } else { f64::INFINITY });
    squared_edt_inplace(&mut a, sp);
    a.par_mapv_inplace(f64::sqrt);
    let nd = shape.len();
    a.into_shape_with_order(shape)
        .map_err(|_| crate::MetricsError::Dimensionality(nd))
}
