//! Regularisers for sparse and weak labels (scribbles, unlabelled pixels):
//! entropy minimisation, total variation, Mumford–Shah and the Gated CRF loss.
//! Partial cross-entropy is [`crate::CrossEntropyLoss`] with an ignore value or a
//! 0/1 pixel-weight map.

use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::input::{pixel_mean, weights_only, Prediction};
use crate::{Loss, LossTarget};

/// Entropy minimisation (PyMIC's `EntropyLoss`): `−Σ_c p'_c ln p'_c / ln C` with
/// `p' = 0.999 p + 5e-4`, averaged over pixels (weighted by pixel and image
/// weights when given). Needs no labels.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntropyLoss {}

impl Loss for EntropyLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        pred.check()?;
        let p = pred.probs()?.affine(0.999, 5e-4)?;
        let c = p.dim(1)?;
        if c < 2 {
            candle_core::bail!("EntropyLoss needs at least 2 classes, got {c}");
        }
        let e = (p.mul(&p.log()?)?.sum_keepdim(1)?.neg()? / (c as f64).ln())?;
        pixel_mean(&e, weights_only(&p, target, "EntropyLoss")?.as_ref())
    }
}

/// Anisotropic total variation of the probabilities: for each spatial axis, the
/// mean of `|p[x + e] − p[x]|` over all neighbouring pairs (and classes and
/// images), summed over the axes. (PyMIC's `TotalVariationLoss` is a different,
/// morphological contour length whose 2D branch pools over channels by mistake;
/// this is the classic definition.)
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotalVariationLoss {}

impl Loss for TotalVariationLoss {
    fn forward(&self, pred: &Prediction, _target: &LossTarget) -> Result<Tensor> {
        pred.check()?;
        let p = pred.probs()?;
        let mut total: Option<Tensor> = None;
        for axis in 2..p.rank() {
            let l = p.dim(axis)?;
            if l < 2 {
                continue;
            }
            let d = p
                .narrow(axis, 1, l - 1)?
                .sub(&p.narrow(axis, 0, l - 1)?)?
                .abs()?
                .mean_all()?;
            total = Some(match total {
                None => d,
                Some(t) => t.add(&d)?,
            });
        }
        match total {
            Some(t) => Ok(t),
            None => p.zeros_like()?.sum_all(),
        }
    }
}

/// Penalty of the gradient term of [`MumfordShahLoss`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Penalty {
    /// `|∇p|`.
    L1,
    /// `|∇p|²`.
    L2,
}

/// Mumford–Shah loss (Kim and Ye, TIP 2019; PyMIC's `MumfordShahLoss`):
/// `[Σ_i Σ_c Σ_x p_c (I_i − μ_{i,c})² + λ Σ |∇p|] / numel(p)` with
/// `μ_{i,c} = Σ_x I_i p_c / Σ_x p_c` per image and class, and `∇` the forward
/// differences along H and W. Needs `target.image` `[N, Ci, ...spatial]`. A 3D
/// prediction is treated slice by slice (depth folded into the batch), as PyMIC does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MumfordShahLoss {
    /// Gradient penalty.
    pub penalty: Penalty,
    /// Weight λ of the gradient term.
    pub lambda: f64,
}

impl Default for MumfordShahLoss {
    fn default() -> Self {
        Self {
            penalty: Penalty::L1,
            lambda: 1.0,
        }
    }
}

impl MumfordShahLoss {
    /// Checks the parameters.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.lambda.is_nan() || self.lambda < 0.0 {
            return Err(format!("`lambda` must be >= 0, got {}", self.lambda));
        }
        Ok(())
    }
}

/// `[N, C, D, H, W]` → `[N·D, C, H, W]`; 4D tensors unchanged.
pub(crate) fn fold_depth(t: &Tensor) -> Result<Tensor> {
    if t.rank() == 5 {
        let (n, c, d, h, w) = t.dims5()?;
        t.transpose(1, 2)?.contiguous()?.reshape((n * d, c, h, w))
    } else {
        Ok(t.clone())
    }
}

fn image_for(pred: &Tensor, target: &LossTarget, loss: &str) -> Result<Tensor> {
    let img = target.image.as_ref().ok_or_else(|| {
        candle_core::Error::Msg(format!("{loss}: the target has no image (`image` is None)"))
    })?;
    if img.rank() != pred.rank() || img.dim(0)? != pred.dim(0)? {
        candle_core::bail!(
            "{loss}: image shape {:?} does not match prediction shape {:?}",
            img.dims(),
            pred.dims()
        );
    }
    img.to_dtype(pred.dtype())
}

impl Loss for MumfordShahLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        pred.check()?;
        let p = pred.probs()?;
        let img = image_for(&p, target, "MumfordShahLoss")?;
        if img.dims()[2..] != p.dims()[2..] {
            candle_core::bail!(
                "MumfordShahLoss: image spatial shape {:?} differs from the prediction's {:?}",
                &img.dims()[2..],
                &p.dims()[2..]
            );
        }
        let p = fold_depth(&p)?;
        let img = fold_depth(&img)?;
        let psum = p.sum_keepdim((2, 3))?;
        let mut level: Option<Tensor> = None;
        for i in 0..img.dim(1)? {
            let im = img.narrow(1, i, 1)?;
            let centroid = p.broadcast_mul(&im)?.sum_keepdim((2, 3))?.div(&psum)?;
            let l = im.broadcast_sub(&centroid)?.sqr()?.mul(&p)?.sum_all()?;
            level = Some(match level {
                None => l,
                Some(a) => a.add(&l)?,
            });
        }
        let level = match level {
            Some(l) => l,
            None => candle_core::bail!("MumfordShahLoss: the image has no channels"),
        };
        let (_, _, h, w) = p.dims4()?;
        let mut grad = p.zeros_like()?.sum_all()?;
        for (axis, l) in [(2usize, h), (3usize, w)] {
            if l < 2 {
                continue;
            }
            let d = p.narrow(axis, 1, l - 1)?.sub(&p.narrow(axis, 0, l - 1)?)?;
            let d = match self.penalty {
                Penalty::L1 => d.abs()?,
                Penalty::L2 => d.sqr()?,
            };
            grad = grad.add(&d.sum_all()?)?;
        }
        let total = level.add(&(grad * self.lambda)?)?;
        total / p.elem_count() as f64
    }
}

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
/// `[Σ_{i, j∈B_r(i), j≠i} m_i m_j K_ij (1 − Σ_c p_{c,i} p_{c,j})] / Σ_i m_i`
/// where `K_ij` is the sum of the weighted Gaussian kernels on position and
/// image features, `B_r(i)` the `(2r+1)²` window, and `m` the target's
/// `valid_mask` (all ones when absent; then the denominator is `N·H·W`).
///
/// As in the reference code, window positions outside the image read zero
/// features (so their kernel values contribute a gradient-free constant) unless
/// masked out. The image (`target.image`) may be larger than the prediction by
/// an integer factor; it is then area-averaged. 3D predictions are handled
/// slice by slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatedCrfLoss {
    /// The kernels, summed.
    pub kernels: Vec<CrfKernel>,
    /// Window radius r (pixels).
    pub radius: usize,
}

impl Default for GatedCrfLoss {
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
            for s in [k.xy, k.rgb].into_iter().flatten() {
                if s.is_nan() || s <= 0.0 {
                    return Err(format!("kernel {i}: sigma must be > 0, got {s}"));
                }
            }
        }
        Ok(())
    }

    /// Kernel values `[N, (2r+1)², H, W]` (centre zeroed, masks applied) and the
    /// denominator.
    fn kernels(
        &self,
        n: usize,
        h: usize,
        w: usize,
        image: Option<&[f64]>,
        ci: usize,
        mask: Option<&[f64]>,
    ) -> (Vec<f64>, f64) {
        let r = self.radius as isize;
        let d = 2 * self.radius + 1;
        let k2 = d * d;
        let hw = h * w;
        let mut out = vec![0.0f64; n * k2 * hw];
        out.par_chunks_mut(k2 * hw).enumerate().for_each(|(b, kb)| {
            let img = image.map(|im| &im[b * ci * hw..(b + 1) * ci * hw]);
            let m = mask.map(|m| &m[b * hw..(b + 1) * hw]);
            for (k, plane) in kb.chunks_mut(hw).enumerate() {
                let dy = (k / d) as isize - r;
                let dx = (k % d) as isize - r;
                if dy == 0 && dx == 0 {
                    continue;
                }
                for y in 0..h {
                    for x in 0..w {
                        let (ny, nx) = (y as isize + dy, x as isize + dx);
                        let inside = ny >= 0 && nx >= 0 && (ny as usize) < h && (nx as usize) < w;
                        let j = if inside {
                            ny as usize * w + nx as usize
                        } else {
                            0
                        };
                        let i = y * w + x;
                        let mut kv = 0.0;
                        for kd in &self.kernels {
                            let mut q = 0.0;
                            if let Some(s) = kd.xy {
                                let (fx, fy) = (x as f64 / s, y as f64 / s);
                                let (gx, gy) = if inside {
                                    (nx as f64 / s, ny as f64 / s)
                                } else {
                                    (0.0, 0.0)
                                };
                                q += (gx - fx).powi(2) + (gy - fy).powi(2);
                            }
                            if let (Some(s), Some(img)) = (kd.rgb, img) {
                                for c in 0..ci {
                                    let f = img[c * hw + i] / s;
                                    let g = if inside { img[c * hw + j] / s } else { 0.0 };
                                    q += (g - f).powi(2);
                                }
                            }
                            kv += kd.weight * (-0.5 * q).exp();
                        }
                        if let Some(m) = m {
                            let mj = if inside { m[j] } else { 0.0 };
                            kv *= m[i] * mj;
                        }
                        plane[i] = kv;
                    }
                }
            }
        });
        let denom = match mask {
            Some(m) => m.iter().sum::<f64>().max(1.0),
            None => (n * hw) as f64,
        };
        (out, denom)
    }
}

/// Area (average) down-sampling of `[N, C, Hin, Win]` host data by integer factors.
fn area_down(
    v: &[f64],
    n: usize,
    c: usize,
    hin: usize,
    win: usize,
    h: usize,
    w: usize,
) -> Vec<f64> {
    if hin == h && win == w {
        return v.to_vec();
    }
    let (fy, fx) = (hin / h, win / w);
    let mut out = vec![0.0; n * c * h * w];
    for nc in 0..n * c {
        let src = &v[nc * hin * win..(nc + 1) * hin * win];
        for y in 0..h {
            for x in 0..w {
                let mut s = 0.0;
                for yy in 0..fy {
                    for xx in 0..fx {
                        s += src[(y * fy + yy) * win + x * fx + xx];
                    }
                }
                out[nc * h * w + y * w + x] = s / (fy * fx) as f64;
            }
        }
    }
    out
}

fn host(t: &Tensor) -> Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

impl Loss for GatedCrfLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> Result<Tensor> {
        pred.check()?;
        let p = fold_depth(&pred.probs()?)?;
        let (n, c, h, w) = p.dims4()?;
        let uses_image = self.kernels.iter().any(|k| k.rgb.is_some());
        let fit = |t: &Tensor, what: &str| -> Result<(Vec<f64>, usize)> {
            let t = fold_depth(t)?;
            let (tn, tc, th, tw) = t.dims4()?;
            if tn != n || th % h != 0 || tw % w != 0 || th / h != tw / w {
                candle_core::bail!(
                    "GatedCRFLoss: {what} of shape {:?} does not match the prediction {:?} (same batch, spatial size an equal integer multiple)",
                    t.dims(),
                    p.dims()
                );
            }
            Ok((area_down(&host(&t)?, n, tc, th, tw, h, w), tc))
        };
        let image = if uses_image {
            let img = target.image.as_ref().ok_or_else(|| {
                candle_core::Error::Msg(
                    "GatedCRFLoss: a kernel uses `rgb` but the target has no image".into(),
                )
            })?;
            if img.rank() != pred.raw().rank() {
                candle_core::bail!(
                    "GatedCRFLoss: image rank {} differs from the prediction's {}",
                    img.rank(),
                    pred.raw().rank()
                );
            }
            Some(fit(img, "image")?)
        } else {
            None
        };
        let mask = match &target.valid_mask {
            Some(m) => {
                let m = if m.rank() + 1 == pred.raw().rank() {
                    m.unsqueeze(1)?
                } else {
                    m.clone()
                };
                let (mut v, mc) = fit(&m, "valid mask")?;
                if mc != 1 {
                    candle_core::bail!("GatedCRFLoss: the valid mask must have one channel");
                }
                for x in v.iter_mut() {
                    if x.is_nan() || *x < 1.0 {
                        *x = 0.0;
                    }
                }
                Some(v)
            }
            None => None,
        };
        let (kv, denom) = self.kernels(
            n,
            h,
            w,
            image.as_ref().map(|(v, _)| v.as_slice()),
            image.as_ref().map_or(0, |(_, c)| *c),
            mask.as_deref(),
        );
        let d = 2 * self.radius + 1;
        let k_sum: f64 = kv.iter().sum();
        let kt = Tensor::from_vec(kv, (n, d * d, h, w), p.device())?.to_dtype(p.dtype())?;
        let r = self.radius;
        let padded = p.pad_with_zeros(2, r, r)?.pad_with_zeros(3, r, r)?;
        let mut prods = Vec::with_capacity(d * d);
        for k in 0..d * d {
            let (ky, kx) = (k / d, k % d);
            if ky == r && kx == r {
                prods.push(Tensor::zeros((n, 1, h, w), p.dtype(), p.device())?);
                continue;
            }
            let shifted = padded.narrow(2, ky, h)?.narrow(3, kx, w)?;
            prods.push(p.mul(&shifted)?.sum_keepdim(1)?);
        }
        let _ = c;
        let agreement = Tensor::cat(&prods, 1)?.mul(&kt)?.sum_all()?;
        (agreement.neg()? + k_sum)? / denom
    }
}
