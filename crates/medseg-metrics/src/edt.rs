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

/// Lower envelope of parabolas of one lane, kept between lanes to reuse
/// the allocations. Interval ends are kept as fractions `zn / (2 s^2 zd)`
/// (with `zd >= 0`) so that building and evaluating need no division.
#[derive(Default)]
struct Envelope {
    /// Apex positions.
    v: Vec<f64>,
    /// Apex values `f[v]`.
    fv: Vec<f64>,
    /// `f[v] + s2 v^2`.
    hv: Vec<f64>,
    /// Numerator of the left end of each parabola's interval.
    zn: Vec<f64>,
    /// Denominator (0 for the first parabola: minus infinity).
    zd: Vec<f64>,
}

impl Envelope {
    /// Builds the lower envelope of `(s (q - p))^2 + f[p]` over the finite
    /// `f[p]` (`s2 = s^2`).
    fn build(&mut self, f: &[f64], s2: f64) {
        self.v.clear();
        self.fv.clear();
        self.hv.clear();
        self.zn.clear();
        self.zd.clear();
        for (q, &fq) in f.iter().enumerate() {
            if fq == f64::INFINITY {
                continue;
            }
            let qf = q as f64;
            let hq = fq + s2 * qf * qf;
            let (mut num, mut den) = (-1.0, 0.0);
            while let Some(&p) = self.v.last() {
                let k = self.v.len() - 1;
                let n = hq - self.hv[k];
                let d = qf - p;
                // intersection n / (2 s2 d) <= z_k ?
                if n * self.zd[k] <= self.zn[k] * (2.0 * s2 * d) {
                    self.v.pop();
                    self.fv.pop();
                    self.hv.pop();
                    self.zn.pop();
                    self.zd.pop();
                } else {
                    num = n;
                    den = d;
                    break;
                }
            }
            self.v.push(qf);
            self.fv.push(fq);
            self.hv.push(hq);
            self.zn.push(num);
            self.zd.push(den * 2.0 * s2);
        }
    }

    fn is_empty(&self) -> bool {
        self.v.is_empty()
    }

    /// Envelope value at `q`, with `j` the index of the parabola reached so
    /// far (queries must come in increasing `q`).
    #[inline]
    fn eval(&self, q: usize, j: &mut usize, s2: f64) -> f64 {
        let qf = q as f64;
        while *j + 1 < self.v.len() && self.zn[*j + 1] < qf * self.zd[*j + 1] {
            *j += 1;
        }
        let dq = qf - self.v[*j];
        s2 * dq * dq + self.fv[*j]
    }
}

/// Lanes are processed in blocks of this many neighbouring columns, gathered
/// into a contiguous, transposed scratch panel.
const BLOCK: usize = 32;
/// Column block of the last (query) pass: wide, so that each gathered row
/// segment streams from memory.
const QUERY_BLOCK: usize = 128;

#[derive(Default)]
struct Scratch {
    env: Envelope,
    lanes: Vec<f64>,
    flags: Vec<u8>,
}

/// Distances from the voxels flagged `source` in `surf` (a `dims`-shaped
/// box in C order, one flag bit per surface) to the nearest voxel flagged
/// `target`, in mm; `spacing` in array axis order, axes of length 1 are
/// ignored. The squared EDT is built separably: the first pass (last axis)
/// is fused with the initialisation as two sweeps, a middle pass (axis 1 of
/// a 3D box) is the full lower-envelope transform, and the last pass
/// evaluates the envelope only at the source voxels. `buf` is scratch space.
pub(crate) fn directed_surface_distances(
    surf: &[u8],
    dims: [usize; 3],
    spacing: [f64; 3],
    target: u8,
    source: u8,
    buf: &mut Vec<f64>,
) -> Vec<f64> {
    let n = dims[0] * dims[1] * dims[2];
    let (nh, nw) = (dims[1], dims[2]);
    buf.clear();
    buf.resize(n, f64::INFINITY);
    // pass along the last axis: distance to the nearest target in the row
    let sw = spacing[2];
    buf.par_chunks_mut(nw)
        .zip(surf.par_chunks(nw))
        .for_each(|(row, flags)| {
            let mut last: Option<usize> = None;
            for (w, (x, &fl)) in row.iter_mut().zip(flags).enumerate() {
                if fl & target != 0 {
                    last = Some(w);
                }
                if let Some(l) = last {
                    let d = sw * (w - l) as f64;
                    *x = d * d;
                }
            }
            let mut next: Option<usize> = None;
            for (w, (x, &fl)) in row.iter_mut().zip(flags).enumerate().rev() {
                if fl & target != 0 {
                    next = Some(w);
                }
                if let Some(nx) = next {
                    let d = sw * (nx - w) as f64;
                    let d2 = d * d;
                    if d2 < *x {
                        *x = d2;
                    }
                }
            }
        });
    let has_h = nh > 1;
    let has_d = dims[0] > 1;
    if has_h && has_d {
        // full pass along axis 1, one slab (fixed d) at a time
        let s2 = spacing[1] * spacing[1];
        buf.par_chunks_mut(nh * nw)
            .for_each_init(Scratch::default, |sc, slab| {
                for w0 in (0..nw).step_by(BLOCK) {
                    let bw = BLOCK.min(nw - w0);
                    sc.lanes.resize(bw * nh, 0.0);
                    for h in 0..nh {
                        let row = &slab[h * nw + w0..h * nw + w0 + bw];
                        for (j, &x) in row.iter().enumerate() {
                            sc.lanes[j * nh + h] = x;
                        }
                    }
                    for j in 0..bw {
                        let lane = &mut sc.lanes[j * nh..(j + 1) * nh];
                        sc.env.build(lane, s2);
                        if sc.env.is_empty() {
                            continue;
                        }
                        let mut k = 0;
                        for (h, x) in lane.iter_mut().enumerate() {
                            *x = sc.env.eval(h, &mut k, s2);
                        }
                    }
                    for h in 0..nh {
                        let row = &mut slab[h * nw + w0..h * nw + w0 + bw];
                        for (j, x) in row.iter_mut().enumerate() {
                            *x = sc.lanes[j * nh + h];
                        }
                    }
                }
            });
    }
    let last = if has_d {
        0
    } else if has_h {
        1
    } else {
        return buf
            .par_iter()
            .zip(surf.par_iter())
            .filter(|(_, &fl)| fl & source != 0)
            .map(|(x, _)| x.sqrt())
            .collect();
    };
    // last pass: evaluate only where the sources are; work items are
    // (outer index, block of columns)
    let (len, stride, n_outer, outer_step) = if last == 0 {
        (dims[0], nh * nw, nh, nw)
    } else {
        (nh, nw, dims[0], nh * nw)
    };
    let s2 = spacing[last] * spacing[last];
    let blocks = nw.div_ceil(QUERY_BLOCK);
    let buf = &*buf;
    (0..n_outer * blocks)
        .into_par_iter()
        .fold(
            || (Vec::new(), Scratch::default()),
            |(mut out, mut sc), item| {
                let base = (item / blocks) * outer_step;
                let w0 = (item % blocks) * QUERY_BLOCK;
                let bw = QUERY_BLOCK.min(nw - w0);
                sc.lanes.resize(bw * len, 0.0);
                sc.flags.resize(bw * len, 0);
                for k in 0..len {
                    let off = base + k * stride + w0;
                    for j in 0..bw {
                        sc.lanes[j * len + k] = buf[off + j];
                        sc.flags[j * len + k] = surf[off + j] & source;
                    }
                }
                for j in 0..bw {
                    let flags = &sc.flags[j * len..(j + 1) * len];
                    if flags.iter().all(|&f| f == 0) {
                        continue;
                    }
                    sc.env.build(&sc.lanes[j * len..(j + 1) * len], s2);
                    let mut i = 0;
                    for (k, &f) in flags.iter().enumerate() {
                        if f == 0 {
                            continue;
                        }
                        if sc.env.is_empty() {
                            out.push(f64::INFINITY);
                        } else {
                            out.push(sc.env.eval(k, &mut i, s2).sqrt());
                        }
                    }
                }
                (out, sc)
            },
        )
        .map(|(out, _)| out)
        .reduce(Vec::new, |mut a, b| {
            a.extend_from_slice(&b);
            a
        })
}
