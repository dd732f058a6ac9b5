//! A spatial transformer network (Jaderberg et al., NeurIPS 2015) in front of
//! any segmentation network; see [`Stn`].
//!
//! A small localisation network (strided convolutions with ReLU, global
//! average pooling, one linear layer) predicts an affine matrix per image,
//! `[N, 2, 3]` in 2D or `[N, 3, 4]` in 3D, in the normalised coordinates of
//! `medseg_ops::affine_grid`; the image is resampled bilinearly
//! (`medseg_ops::grid_sample`, zero padding) and handed to the wrapped
//! network. The linear layer starts with weights 0 and the identity as
//! bias, so an untrained STN passes the image through unchanged.

use candle_core::{Result as CandleResult, Tensor, Var};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{NetError, Result};
use crate::layers::{Conv, Ctx, Linear};
use crate::{fold_depth, unfold_depth, NetOutput, ParamInfo, SegNetwork};

fn d_features() -> Vec<usize> {
    vec![8, 16, 32]
}
fn d_kernel() -> usize {
    3
}

/// Configuration of an [`Stn`]: the `stn` table of a network configuration
/// (`"stn": {}` takes every default). The spatial dimension and input
/// channels are the wrapped network's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StnConfig {
    /// Output channels of the localisation network's convolutions, one
    /// stride-2 convolution (with ReLU) per value; may be empty (the pooled
    /// input channels then feed the linear layer). Default `[8, 16, 32]`.
    #[serde(default = "d_features")]
    pub features: Vec<usize>,
    /// Kernel size of those convolutions (odd; padding `kernel / 2`).
    /// Default 3.
    #[serde(default = "d_kernel")]
    pub kernel: usize,
    /// `align_corners` of the affine grid and the sampling (PyTorch's
    /// meaning). Default false.
    #[serde(default)]
    pub align_corners: bool,
    /// Resample the wrapped network's outputs (logits, deep supervision and
    /// auxiliary outputs) back with the inverse affine, so that predictions
    /// lie in the input's frame rather than the transformed one. Default
    /// false (the usual STN: the network sees and predicts the transformed
    /// image).
    #[serde(default)]
    pub warp_back: bool,
    /// Seed of the localisation network's initial convolution weights.
    #[serde(default)]
    pub seed: u64,
}

impl Default for StnConfig {
    fn default() -> Self {
        Self {
            features: d_features(),
            kernel: d_kernel(),
            align_corners: false,
            warp_back: false,
            seed: 0,
        }
    }
}

impl StnConfig {
    /// Checks the values and names the first bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.kernel == 0 || self.kernel % 2 == 0 {
            return Err(format!("stn.kernel must be odd, got {}", self.kernel));
        }
        if self.features.contains(&0) {
            return Err(format!(
                "stn.features must be positive, got {:?}",
                self.features
            ));
        }
        Ok(())
    }

    /// Parses the `stn` value of a network configuration, naming unknown
    /// keys and bad values.
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        let cfg: StnConfig = serde_json::from_value(v.clone())
            .map_err(|e| NetError::Config(format!("stn: {e} in {v}")))?;
        cfg.validate().map_err(NetError::Config)?;
        Ok(cfg)
    }
}

/// A network preceded by a spatial transformer.
///
/// Its parameters live under `stn.` (`stn.loc.<i>.weight|bias` for the
/// convolutions, `stn.fc.weight|bias` for the linear layer predicting the
/// `d * (d + 1)` affine entries, row-major); the wrapped network keeps its
/// own names, so its checkpoints and pretrained weights load unchanged.
/// A 2D network given `[N, C, D, H, W]` gets every slice transformed on its
/// own (depth folded into the batch). Its configuration is the wrapped
/// network's with the `stn` table added, and the registry rebuilds it from
/// that.
pub struct Stn {
    cfg: StnConfig,
    inner: Box<dyn SegNetwork>,
    convs: Vec<Conv>,
    fc: Linear,
    nd: usize,
    params: Vec<ParamInfo>,
}

impl std::fmt::Debug for Stn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stn")
            .field("cfg", &self.cfg)
            .field("inner", &self.inner.config())
            .finish()
    }
}

impl Stn {
    /// Wraps `inner`, creating (or reading) the STN's parameters under
    /// `stn.` in `vb`, the VarBuilder `inner` was built from. A freshly
    /// created linear layer is set to weights 0 and the identity as bias.
    pub fn new(cfg: &StnConfig, inner: Box<dyn SegNetwork>, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(NetError::Config)?;
        let nd = inner.dimension();
        if nd != 2 && nd != 3 {
            return Err(NetError::Config(format!(
                "stn: the wrapped network is {nd}D; only 2D and 3D are supported"
            )));
        }
        let ctx = Ctx::new(vb.pp("stn"), cfg.seed);
        let mut convs = Vec::new();
        let mut cin = inner.in_chns();
        for (i, &f) in cfg.features.iter().enumerate() {
            let c = ctx.pp("loc").pp(i);
            convs.push(Conv::new(
                &c,
                nd,
                cin,
                f,
                cfg.kernel,
                2,
                cfg.kernel / 2,
                true,
            )?);
            cin = f;
        }
        let nout = nd * (nd + 1);
        let fc_ctx = ctx.pp("fc");
        let fresh = !fc_ctx.vb.contains_tensor("weight") && !fc_ctx.vb.contains_tensor("bias");
        let fc = Linear::new(&fc_ctx, cin, nout)?;
        if fresh {
            // the same tensors Linear holds (a VarMap hands out one Var per name)
            let w = fc_ctx.vb.get((nout, cin), "weight")?;
            let b = fc_ctx.vb.get(nout, "bias")?;
            if w.is_variable() && b.is_variable() {
                Var::from_tensor(&w)?.set(&w.zeros_like()?)?;
                let eye: Vec<f32> = (0..nout)
                    .map(|k| {
                        if k / (nd + 1) == k % (nd + 1) {
                            1.0
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let eye = Tensor::from_vec(eye, nout, b.device())?.to_dtype(b.dtype())?;
                Var::from_tensor(&b)?.set(&eye)?;
            }
        }
        let mut params = inner.parameters().to_vec();
        params.extend(ctx.params_snapshot());
        Ok(Self {
            cfg: cfg.clone(),
            inner,
            convs,
            fc,
            nd,
            params,
        })
    }

    /// The configuration of the STN part.
    pub fn stn_config(&self) -> &StnConfig {
        &self.cfg
    }

    /// The wrapped network.
    pub fn inner(&self) -> &dyn SegNetwork {
        self.inner.as_ref()
    }

    /// The affine matrices the localisation network predicts for `x`
    /// (`[N, C, H, W]` in 2D, `[N, C, D, H, W]` in 3D): `[N, 2, 3]` or
    /// `[N, 3, 4]`, in the normalised coordinates of
    /// `medseg_ops::affine_grid`.
    pub fn theta(&self, x: &Tensor) -> CandleResult<Tensor> {
        let mut h = x.clone();
        for c in &self.convs {
            h = medseg_ops::activate(&c.forward(&h)?, medseg_ops::Activation::Relu)?;
        }
        let n = h.dim(0)?;
        let ch = h.dim(1)?;
        let pooled = h.reshape((n, ch, ()))?.mean(2)?;
        self.fc.forward(&pooled)?.reshape((n, self.nd, self.nd + 1))
    }

    /// `x` resampled by the predicted affine: `(warped, theta)`. `x` has the
    /// wrapped network's dimension (depth already folded for a 2D network).
    fn transform(&self, x: &Tensor) -> CandleResult<(Tensor, Tensor)> {
        let theta = self.theta(x)?;
        let grid = medseg_ops::affine_grid(&theta, x.dims(), self.cfg.align_corners)?;
        let y = medseg_ops::grid_sample(x, &grid, self.cfg.align_corners)?;
        Ok((y, theta))
    }

    /// Resamples an output of the wrapped network (any resolution) with
    /// `theta` (`[M, d, d + 1]`, `M` the folded batch).
    fn warp(&self, t: &Tensor, theta: &Tensor) -> CandleResult<Tensor> {
        let folded = t.rank() == 5 && self.nd == 2;
        let (u, n, d) = if folded {
            fold_depth(t)?
        } else {
            (t.clone(), 0, 0)
        };
        let grid = medseg_ops::affine_grid(theta, u.dims(), self.cfg.align_corners)?;
        let y = medseg_ops::grid_sample(&u, &grid, self.cfg.align_corners)?;
        if folded {
            unfold_depth(&y, n, d)
        } else {
            Ok(y)
        }
    }
}

/// The inverse of a batch of affine matrices `[M, d, d + 1]` (`d` = 2 or 3):
/// `[A^-1 | -A^-1 t]`, composed from candle ops (differentiable).
fn invert_affine(theta: &Tensor) -> CandleResult<Tensor> {
    let (m, d, _) = theta.dims3()?;
    let e = |i: usize, j: usize| theta.narrow(1, i, 1)?.narrow(2, j, 1)?.reshape(m);
    let t = theta.narrow(2, d, 1)?;
    // adjugate (transposed cofactors) and determinant
    let (adj, det) = if d == 2 {
        let (a00, a01, a10, a11) = (e(0, 0)?, e(0, 1)?, e(1, 0)?, e(1, 1)?);
        let det = ((&a00 * &a11)? - (&a01 * &a10)?)?;
        let adj = Tensor::stack(&[&a11, &a01.neg()?, &a10.neg()?, &a00], 1)?;
        (adj, det)
    } else {
        let mut v = Vec::with_capacity(9);
        let cof = |r: usize, c: usize| -> CandleResult<Tensor> {
            // cofactor of (r, c)
            let rows: Vec<usize> = (0..3).filter(|&i| i != r).collect();
            let cols: Vec<usize> = (0..3).filter(|&j| j != c).collect();
            let minor = ((e(rows[0], cols[0])? * e(rows[1], cols[1])?)?
                - (e(rows[0], cols[1])? * e(rows[1], cols[0])?)?)?;
            if (r + c) % 2 == 1 {
                minor.neg()
            } else {
                Ok(minor)
            }
        };
        let mut c = vec![vec![]; 3];
        for (r, row) in c.iter_mut().enumerate() {
            for col in 0..3 {
                row.push(cof(r, col)?);
            }
        }
        // adj[i][j] = cof[j][i]
        for i in 0..3 {
            for row in &c {
                v.push(row[i].clone());
            }
        }
        let det = (((e(0, 0)? * &c[0][0])? + (e(0, 1)? * &c[0][1])?)? + (e(0, 2)? * &c[0][2])?)?;
        (Tensor::stack(&v, 1)?, det)
    };
    let inv = adj
        .reshape((m, d, d))?
        .broadcast_div(&det.reshape((m, 1, 1))?)?;
    let shift = inv.matmul(&t)?.neg()?;
    Tensor::cat(&[&inv, &shift], 2)
}

impl SegNetwork for Stn {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<NetOutput> {
        let folded = x.rank() == 5 && self.nd == 2;
        let (xs, n, d) = if folded {
            fold_depth(x)?
        } else {
            (x.clone(), 0, 0)
        };
        if xs.rank() != self.nd + 2 {
            candle_core::bail!(
                "stn: a {}D network takes {} input, got shape {:?}",
                self.nd,
                if self.nd == 2 {
                    "[N, C, H, W] or [N, C, D, H, W]"
                } else {
                    "[N, C, D, H, W]"
                },
                x.dims()
            );
        }
        let (warped, theta) = self.transform(&xs)?;
        let warped = if folded {
            unfold_depth(&warped, n, d)?
        } else {
            warped
        };
        let out = self.inner.forward_t(&warped, train)?;
        if !self.cfg.warp_back {
            return Ok(out);
        }
        let inv = invert_affine(&theta)?;
        let back = |ts: &[Tensor]| -> CandleResult<Vec<Tensor>> {
            ts.iter().map(|t| self.warp(t, &inv)).collect()
        };
        Ok(NetOutput {
            logits: self.warp(&out.logits, &inv)?,
            deep: back(&out.deep)?,
            aux: back(&out.aux)?,
        })
    }

    /// The wrapped network's encoder features of the resampled input.
    fn encode(&self, x: &Tensor, train: bool) -> CandleResult<Option<Vec<Tensor>>> {
        let folded = x.rank() == 5 && self.nd == 2;
        let (xs, n, d) = if folded {
            fold_depth(x)?
        } else {
            (x.clone(), 0, 0)
        };
        let (warped, _) = self.transform(&xs)?;
        let warped = if folded {
            unfold_depth(&warped, n, d)?
        } else {
            warped
        };
        self.inner.encode(&warped, train)
    }

    fn encoder_prefixes(&self) -> Vec<String> {
        self.inner.encoder_prefixes()
    }

    fn config(&self) -> serde_json::Value {
        let mut c = self.inner.config();
        if let Some(o) = c.as_object_mut() {
            o.insert(
                "stn".into(),
                serde_json::to_value(&self.cfg).unwrap_or(serde_json::Value::Null),
            );
        }
        c
    }

    fn dimension(&self) -> usize {
        self.nd
    }

    /// The wrapped network's: the localisation network ends in global
    /// average pooling and the warp keeps the size.
    fn input_size(&self) -> crate::InputSize {
        self.inner.input_size()
    }

    fn in_chns(&self) -> usize {
        self.inner.in_chns()
    }

    fn class_num(&self) -> usize {
        self.inner.class_num()
    }

    fn parameters(&self) -> &[ParamInfo] {
        &self.params
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn inverse_affine_composes_to_identity() {
        let dev = Device::Cpu;
        for d in [2usize, 3] {
            let m = 2;
            let v: Vec<f32> = (0..m * d * (d + 1))
                .map(|i| {
                    let (r, c) = ((i / (d + 1)) % d, i % (d + 1));
                    (if r == c { 1.0 } else { 0.0 }) + 0.2 * ((i as f32 * 1.7).sin())
                })
                .collect();
            let th = Tensor::from_vec(v, (m, d, d + 1), &dev).unwrap();
            let inv = invert_affine(&th).unwrap();
            // homogeneous product inv * th == identity
            let last: Vec<f32> = (0..m)
                .flat_map(|_| (0..=d).map(move |j| if j == d { 1.0 } else { 0.0 }))
                .collect();
            let last = Tensor::from_vec(last, (m, 1, d + 1), &dev).unwrap();
            let h = |t: &Tensor| Tensor::cat(&[t, &last], 1).unwrap();
            let p = h(&inv).matmul(&h(&th)).unwrap();
            let eye = Tensor::eye(d + 1, DType::F32, &dev)
                .unwrap()
                .unsqueeze(0)
                .unwrap()
                .broadcast_as((m, d + 1, d + 1))
                .unwrap();
            let err = (p - eye)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(err < 1e-5, "{d}D: {err}");
        }
    }
}
