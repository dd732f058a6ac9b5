//! The Gated CRF loss (Obukhov et al. 2019) for weak labels.
//!
//! The pairwise term is evaluated on the host in one pass over the unordered
//! pixel pairs of each window, with the kernels computed on the fly (memory
//! O(N·C·H·W) instead of PyMIC's O(N·C·(2r+1)²·H·W)); its gradient `2 Σ_j K_ij p(j)`
//! (the kernel is symmetric) is attached through a linear candle expression,
//! so it works on any device.

use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::input::Prediction;
use crate::weak::fold_depth;
use crate::{Loss, LossTarget};

/// One Gaussian kernel of the [`GatedCrfLoss`]: `weight · exp(−½ Σ ((f_i − f_j)/σ)²)`
/// over the listed features (pixel position in pixels, image intensities).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrfKernel {
    /// Weight of this kernel in the sum.
    pub weight: f64,
    /// σ of the position features (pixels), if used.
    #[serde(default)]
    pub xy: Option<f64>,
    /// σ of the image features (all image channels), if used.
    #[serde(default)]
    pub rgb: Option<f64>,
}

/// Gated CRF loss (Obukhov et al. 2019, as used by PyMIC's `GatedCRFLoss` and
/// WSL4MIS), Potts compatibility:
/// `[Σ_i Σ_{j∈B_r(i), j≠i} m_i m_j K_ij (1 − Σ_c p_{c,i} p_{c,j})] / Σ_i m_i`
/// where `K_ij` is the sum of the weighted Gaussian kernels on position and
/// image features, `B_r(i)` the `(2r+1)²` window, and `m` the target's
/// `valid_mask` (all ones when absent; then the denominator is `N·H·W`).
///
/// As in the reference code, window positions outside the image read zero
/// features (so their kernel values add a gradient-free constant) unless
/// masked out. The image (`target.image`, needed when a kernel uses `rgb`) may
/// be larger than the prediction by an integer factor; it is then
/// area-averaged. 3D predictions are handled slice by slice (depth folded into
/// the batch), as PyMIC's learner does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatedCrfLoss {
    /// The kernels, summed.
    pub kernels: Vec<CrfKernel>,
    /// Window radius r (pixels).
    pub radius: usize,
}

impl Default for GatedCrfLoss {
    /// PyMIC's learner defaults: `{w 1, xy 5, rgb 0.1} + {w 1, xy 3}`, radius 5.
    fn default() -> Self {
        Self {
            kernels: vec![
                CrfKernel {
                    weight: 1.0,
                    xy: Some(5.0),
                    rgb: Some(0.1),
                },
                CrfKernel {
                    weight: 1.0,
                    xy: Some(3.0),
                    rgb: None,
                },
            ],
            radius: 5,
        }
    }
}

impl GatedCrfLoss {
    /// Checks the parameters.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.kernels.is_empty() {
            return Err("`kernels` must not be empty".into());
        }
        if self.radius == 0 {
            return Err("`radius` must be >= 1".into());
        }
        for (i, k) in self.kernels.iter().enumerate() {
            if k.xy.is_none() && k.rgb.is_none() {
                return Err(format!(
                    "kernel {i} uses no feature (set `xy` and/or `rgb`)"
                ));
            }
            if !k.weight.is_finite() {
                return Err(format!("kernel {i}: weight must be finite"));
            }
            for s in [k.xy, k.rgb].into_iter().flatten() {
                if s.is_nan() || s <= 0.0 {
                    return Err(format!("kernel {i}: sigma must be > 0, got {s}"));
                }
            }
        }
        Ok(())
    }
}

/// One kernel term: weight, `1/σ_xy²` (0 when unused), `1/σ_rgb²` (0 when
/// unused), and the position factor per window offset.
#[derive(Debug)]
struct Term {
    weight: f64,
    inv_xy: f64,
    inv_rgb: f64,
    exy: Vec<f64>,
}

/// Everything the pairwise kernel needs, on the host, at prediction resolution.
#[derive(Debug)]
struct CrfField {
    n: usize,
    h: usize,
    w: usize,
    radius: usize,
    ci: usize,
    /// `[N, Ci, H, W]`.
    image: Vec<f64>,
    /// `[N, H, W]`, 0/1.
    mask: Option<Vec<f64>>,
    terms: Vec<Term>,
}

impl CrfField {
    fn new(
        cfg: &GatedCrfLoss,
        (n, h, w): (usize, usize, usize),
        image: Option<(Vec<f64>, usize)>,
        mask: Option<Vec<f64>>,
    ) -> Self {
        let d = 2 * cfg.radius + 1;
        let r = cfg.radius as f64;
        let terms = cfg
            .kernels
            .iter()
            .map(|k| {
                let inv_xy = k.xy.map_or(0.0, |s| 1.0 / (s * s));
                let inv_rgb = k.rgb.map_or(0.0, |s| 1.0 / (s * s));
                let exy = (0..d * d)
                    .map(|o| {
                        let dy = (o / d) as f64 - r;
                        let dx = (o % d) as f64 - r;
                        (-0.5 * (dx * dx + dy * dy) * inv_xy).exp()
                    })
                    .collect();
                Term {
                    weight: k.weight,
                    inv_xy,
                    inv_rgb,
                    exy,
                }
            })
            .collect();
        let (image, ci) = image.unwrap_or((Vec::new(), 0));
        Self {
            n,
            h,
            w,
            radius: cfg.radius,
            ci,
            image,
            mask,
            terms,
        }
    }

    fn hw(&self) -> usize {
        self.h * self.w
    }

    /// Squared image-feature distance between pixels `i` and `j` of image `b`.
    #[inline]
    fn d2(&self, b: usize, i: usize, j: usize) -> f64 {
        let hw = self.hw();
        let base = b * self.ci * hw;
        let mut s = 0.0;
        for c in 0..self.ci {
            let t = self.image[base + c * hw + i] - self.image[base + c * hw + j];
            s += t * t;
        }
        s
    }

    /// Kernel of the in-image pair (i, j) at window offset `o`, masks included.
    #[inline]
    fn pair(&self, b: usize, i: usize, j: usize, o: usize) -> f64 {
        if let Some(m) = &self.mask {
            let hw = self.hw();
            if m[b * hw + i] == 0.0 || m[b * hw + j] == 0.0 {
                return 0.0;
            }
        }
        let d2 = if self.ci > 0 { self.d2(b, i, j) } else { 0.0 };
        self.terms
            .iter()
            .map(|t| {
                if t.inv_rgb == 0.0 {
                    t.weight * t.exy[o]
                } else {
                    t.weight * t.exy[o] * (-0.5 * d2 * t.inv_rgb).exp()
                }
            })
            .sum()
    }

    /// Kernel of pixel (y, x) with a window position outside the image, which
    /// reads zero features (position (0, 0), intensities 0).
    fn outside(&self, b: usize, y: usize, x: usize) -> f64 {
        if self.mask.is_some() {
            return 0.0;
        }
        let hw = self.hw();
        let i = y * self.w + x;
        let mut f2 = 0.0;
        for c in 0..self.ci {
            let v = self.image[b * self.ci * hw + c * hw + i];
            f2 += v * v;
        }
        let p2 = (x * x + y * y) as f64;
        self.terms
            .iter()
            .map(|t| t.weight * (-0.5 * (p2 * t.inv_xy + f2 * t.inv_rgb)).exp())
            .sum()
    }

    #[cfg(test)]
    /// Calls `f(o, j)` for every window offset `o ≠ centre` of pixel (y, x)
    /// whose neighbour `j` lies inside the image; returns the number outside.
    #[inline]
    fn for_neighbours(&self, y: usize, x: usize, mut f: impl FnMut(usize, usize)) -> usize {
        let r = self.radius as isize;
        let d = 2 * self.radius + 1;
        let mut outside = 0;
        for dy in -r..=r {
            let ny = y as isize + dy;
            for dx in -r..=r {
                if dy == 0 && dx == 0 {
                    continue;
                }
                let nx = x as isize + dx;
                if ny < 0 || nx < 0 || ny as usize >= self.h || nx as usize >= self.w {
                    outside += 1;
                    continue;
                }
                let o = (dy + r) as usize * d + (dx + r) as usize;
                f(o, ny as usize * self.w + nx as usize);
            }
        }
        outside
    }

    /// `Σ_i K_i,outside` over the window positions that fall outside the image.
    fn outside_total(&self) -> f64 {
        if self.mask.is_some() {
            return 0.0;
        }
        let r = self.radius;
        let d = 2 * r + 1;
        (0..self.n * self.h)
            .into_par_iter()
            .map(|row| {
                let (b, y) = (row / self.h, row % self.h);
                let rows = (y + r).min(self.h - 1) + 1 - y.saturating_sub(r);
                let mut s = 0.0;
                for x in 0..self.w {
                    let cols = (x + r).min(self.w - 1) + 1 - x.saturating_sub(r);
                    let out = d * d - rows * cols;
                    if out > 0 {
                        s += out as f64 * self.outside(b, y, x);
                    }
                }
                s
            })
            .sum()
    }

    /// One pass over the in-image pairs (each unordered pair once, `K` being
    /// symmetric): returns `s_c(i) = Σ_{j∈B(i), j≠i} K_ij p_c(j)` for `p`
    /// `[N, C, H, W]` and `Σ_i Σ_{j≠i} K_ij`.
    fn accumulate(&self, p: &[f64], c: usize) -> (Vec<f64>, f64) {
        let hw = self.hw();
        let r = self.radius as isize;
        let d = 2 * self.radius + 1;
        let half: Vec<(isize, isize, usize)> = (0..d * d)
            .filter_map(|o| {
                let dy = (o / d) as isize - r;
                let dx = (o % d) as isize - r;
                (dy > 0 || (dy == 0 && dx > 0)).then_some((dy, dx, o))
            })
            .collect();
        let mut out = vec![0.0f64; self.n * c * hw];
        let ksum = out
            .par_chunks_mut(c * hw)
            .enumerate()
            .map(|(b, ob)| {
                let pb = &p[b * c * hw..(b + 1) * c * hw];
                let mut ks = 0.0;
                for y in 0..self.h {
                    for x in 0..self.w {
                        let i = y * self.w + x;
                        for &(dy, dx, o) in &half {
                            let (ny, nx) = (y as isize + dy, x as isize + dx);
                            if ny as usize >= self.h || nx < 0 || nx as usize >= self.w {
                                continue;
                            }
                            let j = ny as usize * self.w + nx as usize;
                            let k = self.pair(b, i, j, o);
                            if k == 0.0 {
                                continue;
                            }
                            ks += 2.0 * k;
                            for ch in 0..c {
                                let (pi, pj) = (pb[ch * hw + i], pb[ch * hw + j]);
                                ob[ch * hw + i] += k * pj;
                                ob[ch * hw + j] += k * pi;
                            }
                        }
                    }
                }
                ks
            })
            .sum();
        (out, ksum)
    }

    #[cfg(test)]
    /// The kernel tensor `[N, (2r+1)², H, W]` (zero at the centre and outside).
    fn kernel_tensor(&self) -> Vec<f64> {
        let d = 2 * self.radius + 1;
        let hw = self.hw();
        let mut out = vec![0.0f64; self.n * d * d * hw];
        out.par_chunks_mut(d * d * hw)
            .enumerate()
            .for_each(|(b, kb)| {
                for y in 0..self.h {
                    for x in 0..self.w {
                        let i = y * self.w + x;
                        self.for_neighbours(y, x, |o, j| kb[o * hw + i] = self.pair(b, i, j, o));
                    }
                }
            });
        out
    }
}

/// Area (average) down-sampling of `[N, C, Hin, Win]` host data by integer factors.
fn area_down(v: &[f64], nc: usize, hin: usize, win: usize, h: usize, w: usize) -> Vec<f64> {
    if hin == h && win == w {
        return v.to_vec();
    }
    let (fy, fx) = (hin / h, win / w);
    let mut out = vec![0.0; nc * h * w];
    for k in 0..nc {
        let src = &v[k * hin * win..(k + 1) * hin * win];
        for y in 0..h {
            for x in 0..w {
                let mut s = 0.0;
                for yy in 0..fy {
                    for xx in 0..fx {
                        s += src[(y * fy + yy) * win + x * fx + xx];
                    }
                }
                out[k * h * w + y * w + x] = s / (fy * fx) as f64;
            }
        }
    }
    out
}

impl GatedCrfLoss {
    /// The host-side field (features, masks) and the denominator.
    fn field(&self, p: &Tensor, pred_rank: usize, target: &LossTarget) -> Result<(CrfField, f64)> {
        let (n, _, h, w) = p.dims4()?;
        let fit = |t: &Tensor, what: &str| -> Result<(Vec<f64>, usize)> {
            if t.rank() != pred_rank {
                candle_core::bail!(
                    "GatedCRFLoss: {what} of shape {:?} has not the prediction's rank {pred_rank}",
                    t.dims()
                );
            }
            let t = fold_depth(t)?;
            let (tn, tc, th, tw) = t.dims4()?;
            if tn != n || th % h != 0 || tw % w != 0 || th / h != tw / w {
                candle_core::bail!(
                    "GatedCRFLoss: {what} of shape {:?} does not fit the prediction (same batch, spatial size an equal integer multiple of {:?})",
                    t.dims(),
                    (h, w)
                );
            }
            let v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            Ok((area_down(&v, n * tc, th, tw, h, w), tc))
        };
        let image = if self.kernels.iter().any(|k| k.rgb.is_some()) {
            let img = target.image.as_ref().ok_or_else(|| {
                candle_core::Error::Msg(
                    "GatedCRFLoss: a kernel uses `rgb` but the target has no image".into(),
                )
            })?;
            Some(fit(img, "image")?)
        } else {
            None
        };
        let mask = match &target.valid_mask {
            Some(m) => {
                let m = if m.rank() + 1 == pred_rank {
                    m.unsqueeze(1)?
                } else {
                    m.clone()
                };
                let (mut v, mc) = fit(&m, "valid mask")?;
                if mc != 1 {
                    candle_core::bail!("GatedCRFLoss: the valid mask must have one channel");
                }
                for x in v.iter_mut() {
                    // NaN and the soft edges of a down-sampled mask count as invalid
                    if x.is_nan() || *x < 1.0 {
                        *x = 0.0;
                    } else {
                        *x = 1.0;
                    }
                }
                Some(v)
            }
            None => None,
        };
        let denom = match &mask {
            Some(m) => m.iter().sum::<f64>().max(1.0),
            None => (n * h * w) as f64,
        };
        Ok((CrfField::new(self, (n, h, w), image, mask), denom))
    }

    /// The pairwise term composed from candle ops on a kernel tensor.
    #[cfg(test)]
    fn agreement_composed(&self, p: &Tensor, field: &CrfField) -> Result<Tensor> {
        let (n, _, h, w) = p.dims4()?;
        let d = 2 * self.radius + 1;
        let r = self.radius;
        let kt = Tensor::from_vec(field.kernel_tensor(), (n, d * d, h, w), p.device())?
            .to_dtype(p.dtype())?;
        let padded = p.pad_with_zeros(2, r, r)?.pad_with_zeros(3, r, r)?;
        let mut total: Option<Tensor> = None;
        for o in 0..d * d {
            let (ky, kx) = (o / d, o % d);
            if ky == r && kx == r {
                continue;
            }
            let shifted = padded.narrow(2, ky, h)?.narrow(3, kx, w)?;
            let a = p
                .mul(&shifted)?
                .sum_keepdim(1)?
                .mul(&kt.narrow(1, o, 1)?)?
                .sum_all()?;
            total = Some(match total {
                None => a,
                Some(t) => t.add(&a)?,
            });
        }
        match total {
            Some(t) => Ok(t),
            None => p.zeros_like()?.sum_all(),
        }
    }

    fn forward_impl(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        pred.check()?;
        let p = fold_depth(&pred.probs()?)?.contiguous()?;
        let (field, denom) = self.field(&p, pred.raw().rank(), target)?;
        let (n, c, h, w) = p.dims4()?;
        let host = p.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let (s, inside) = field.accumulate(&host, c);
        let constant = inside + field.outside_total();
        // A = Σ p·s(p) with s linear in p and K symmetric, so ∂A/∂p = 2 s:
        // 2 Σ p·s_const − A_const has A's value and A's gradient.
        let a: f64 = host.iter().zip(&s).map(|(x, y)| x * y).sum();
        let s = Tensor::from_vec(s, (n, c, h, w), p.device())?.to_dtype(p.dtype())?;
        let agreement = ((p.mul(&s)?.sum_all()? * 2.0)? - a)?;
        (agreement.neg()? + constant)? / denom
    }

    /// The loss composed from candle ops on the full kernel tensor, PyMIC's way:
    /// the independent reference of the unit tests.
    #[cfg(test)]
    fn forward_composed(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        let p = fold_depth(&pred.probs()?)?.contiguous()?;
        let (field, denom) = self.field(&p, pred.raw().rank(), target)?;
        let constant = field.kernel_tensor().iter().sum::<f64>() + field.outside_total();
        let agreement = self.agreement_composed(&p, &field)?;
        (agreement.neg()? + constant)? / denom
    }
}

impl Loss for GatedCrfLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        self.forward_impl(pred, target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn pair_pass_matches_kernel_tensor_composition_value_and_gradient() {
        let dev = Device::Cpu;
        let logits = Tensor::randn(0f64, 2.0, (2, 3, 6, 7), &dev).unwrap();
        let img = Tensor::rand(0f64, 1.0, (2, 2, 6, 7), &dev).unwrap();
        let mask = Tensor::rand(0f64, 1.0, (2, 1, 6, 7), &dev)
            .unwrap()
            .gt(0.3)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let loss = GatedCrfLoss {
            kernels: vec![
                CrfKernel {
                    weight: 0.8,
                    xy: Some(2.0),
                    rgb: Some(0.4),
                },
                CrfKernel {
                    weight: 0.3,
                    xy: None,
                    rgb: Some(0.2),
                },
            ],
            radius: 2,
        };
        for t in [
            LossTarget::none().with_image(img.clone()),
            LossTarget::none()
                .with_image(img.clone())
                .with_valid_mask(mask),
        ] {
            let mut vals = Vec::new();
            let mut grads = Vec::new();
            for fused in [true, false] {
                let x = Var::from_tensor(&logits).unwrap();
                let p = Prediction::logits(x.as_tensor().clone());
                let v = if fused {
                    loss.forward_impl(&p, &t)
                } else {
                    loss.forward_composed(&p, &t)
                }
                .unwrap();
                let g = v.backward().unwrap();
                vals.push(v.to_scalar::<f64>().unwrap());
                grads.push(
                    g.get(x.as_tensor())
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap(),
                );
            }
            assert!((vals[0] - vals[1]).abs() < 1e-12, "{vals:?}");
            for (a, b) in grads[0].iter().zip(&grads[1]) {
                assert!((a - b).abs() < 1e-12, "{a} vs {b}");
            }
        }
    }
}
