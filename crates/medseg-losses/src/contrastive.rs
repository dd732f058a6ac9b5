//! Contrastive losses of self-supervised pre-training, on embeddings
//! `[N, D]` (one row per image): InfoNCE with a queue of negatives (MoCo,
//! He et al. 2020; MoCo v2, Chen et al. 2020) and NT-Xent with in-batch
//! negatives (SimCLR, Chen et al. 2020). Both L2-normalise the rows they
//! are given, so cosine similarity divided by the temperature makes the
//! logits.

use candle_core::{DType, Result, Tensor, D};

/// Each row divided by its Euclidean norm (plus `1e-12`, so that a zero row
/// stays finite): `[N, D] -> [N, D]`.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()? + 1e-12)?;
    x.broadcast_div(&norm)
}

/// Cross-entropy of `logits` `[N, M]` with the target class 0 for every
/// row, averaged over rows: `mean_i -log softmax(logits_i)[0]`.
fn ce_first(logits: &Tensor) -> Result<Tensor> {
    let lsm = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    lsm.narrow(1, 0, 1)?.mean_all()?.neg()
}

/// InfoNCE of MoCo: for each query `q_i` its key `k_i` is the positive and
/// every row of `negatives` (the queue, `[K, D]`) a negative;
/// `loss = mean_i -log( e^{q_i.k_i/t} / (e^{q_i.k_i/t} + sum_j e^{q_i.n_j/t}) )`
/// with every vector L2-normalised and `t` the temperature. `q`, `k`:
/// `[N, D]`. Gradients flow into `q` (and `k`, `negatives` unless the
/// caller detaches them, as MoCo does).
pub fn info_nce(q: &Tensor, k: &Tensor, negatives: &Tensor, temperature: f64) -> Result<Tensor> {
    if temperature <= 0.0 {
        candle_core::bail!("info_nce: the temperature must be positive, got {temperature}")
    }
    let (n, d) = q.dims2()?;
    if k.dims() != [n, d] {
        candle_core::bail!(
            "info_nce: keys {:?} do not match queries {:?}",
            k.dims(),
            q.dims()
        )
    }
    let (_, dn) = negatives.dims2()?;
    if dn != d {
        candle_core::bail!("info_nce: negatives have {dn} features, queries {d}")
    }
    let q = l2_normalize(q)?;
    let k = l2_normalize(k)?;
    let neg = l2_normalize(negatives)?;
    let pos = (&q * &k)?.sum_keepdim(1)?; // [N, 1]
    let negl = q.matmul(&neg.t()?)?; // [N, K]
    let logits = (Tensor::cat(&[&pos, &negl], 1)? / temperature)?;
    ce_first(&logits)
}

/// NT-Xent of SimCLR on two views: `z1`, `z2` `[N, D]`, rows `i` of both
/// from the same image. Over the `2N` embeddings, each one's positive is
/// the other view of its image and the other `2N - 2` are negatives:
/// `loss = mean_a -log( e^{s(a,p(a))/t} / sum_{b != a} e^{s(a,b)/t} )`, `s`
/// the cosine similarity, `t` the temperature.
pub fn nt_xent(z1: &Tensor, z2: &Tensor, temperature: f64) -> Result<Tensor> {
    if temperature <= 0.0 {
        candle_core::bail!("nt_xent: the temperature must be positive, got {temperature}")
    }
    let (n, d) = z1.dims2()?;
    if z2.dims() != [n, d] {
        candle_core::bail!(
            "nt_xent: the two views differ in shape: {:?} vs {:?}",
            z1.dims(),
            z2.dims()
        )
    }
    if n < 2 {
        candle_core::bail!("nt_xent: needs at least 2 images per batch (negatives), got {n}")
    }
    let z = l2_normalize(&Tensor::cat(&[z1, z2], 0)?)?; // [2N, D]
    let sim = (z.matmul(&z.t()?)? / temperature)?;
    // the diagonal (self-similarity) is removed from the softmax
    let m = 2 * n;
    let eye = Tensor::eye(m, DType::F32, z.device())?.to_dtype(sim.dtype())?;
    let sim = (sim - (eye * 1e9)?)?;
    let lsm = candle_nn::ops::log_softmax(&sim, D::Minus1)?;
    // positive of row a: a + N for a < N, a - N otherwise
    let idx: Vec<u32> = (0..m).map(|a| ((a + n) % m) as u32).collect();
    let idx = Tensor::from_vec(idx, (m, 1), z.device())?;
    lsm.gather(&idx, 1)?.mean_all()?.neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32], shape: (usize, usize)) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn info_nce_hand_worked() {
        // q = (1, 0), k = (0.6, 0.8), negatives (0, 1) and (-1, 0), t = 0.5:
        // logits 1.2, 0, -2; loss = -ln(e^1.2 / (e^1.2 + e^0 + e^-2))
        //   = -ln(3.320117 / 4.455452) = 0.294129
        let q = t(&[1.0, 0.0], (1, 2));
        let k = t(&[0.6, 0.8], (1, 2));
        let neg = t(&[0.0, 1.0, -1.0, 0.0], (2, 2));
        let l = info_nce(&q, &k, &neg, 0.5)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((l - 0.294129).abs() < 1e-5, "{l}");
        // scale does not matter: vectors are normalised
        let l2 = info_nce(&(q * 3.0).unwrap(), &(k * 0.1).unwrap(), &neg, 0.5)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((l2 - 0.294129).abs() < 1e-5, "{l2}");
    }

    #[test]
    fn nt_xent_hand_worked() {
        // z1 = [(1,0), (0,1)], z2 = [(1,0), (0,-1)], t = 1. Similarities
        // of a = 0 (1,0) to b = 1 (0,1), 2 (1,0), 3 (0,-1): 0, 1, 0; the
        // positive is 2: -ln(e / (e + 2)) = 0.551445 for rows 0 and 2.
        // Row 1 (0,1) to 0 (1,0), 2 (1,0), 3 (0,-1): 0, 0, -1; positive 3:
        // -ln(e^-1 / (2 + e^-1)) = 1.861995 for rows 1 and 3.
        // mean = (0.551445 + 1.861995) / 2 = 1.206720
        let z1 = t(&[1.0, 0.0, 0.0, 1.0], (2, 2));
        let z2 = t(&[1.0, 0.0, 0.0, -1.0], (2, 2));
        let l = nt_xent(&z1, &z2, 1.0).unwrap().to_scalar::<f32>().unwrap();
        assert!((l - 1.206720).abs() < 1e-5, "{l}");
    }

    #[test]
    fn gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let q0 = Tensor::randn(0f64, 1.0, (3, 4), &dev).unwrap();
        let k = Tensor::randn(0f64, 1.0, (3, 4), &dev).unwrap();
        let neg = Tensor::randn(0f64, 1.0, (5, 4), &dev).unwrap();
        for which in 0..2 {
            let f = |q: &Tensor| -> Tensor {
                if which == 0 {
                    info_nce(q, &k, &neg, 0.2).unwrap()
                } else {
                    nt_xent(q, &k, 0.3).unwrap()
                }
            };
            let v = candle_core::Var::from_tensor(&q0).unwrap();
            let g = f(v.as_tensor()).backward().unwrap();
            let g = g.get(v.as_tensor()).unwrap().flatten_all().unwrap();
            let g: Vec<f64> = g.to_vec1().unwrap();
            let base: Vec<f64> = q0.flatten_all().unwrap().to_vec1().unwrap();
            for i in 0..base.len() {
                let h = 1e-6;
                let mut p = base.clone();
                p[i] += h;
                let mut m = base.clone();
                m[i] -= h;
                let fp = f(&Tensor::from_vec(p, (3, 4), &dev).unwrap())
                    .to_scalar::<f64>()
                    .unwrap();
                let fm = f(&Tensor::from_vec(m, (3, 4), &dev).unwrap())
                    .to_scalar::<f64>()
                    .unwrap();
                let fd = (fp - fm) / (2.0 * h);
                assert!(
                    (fd - g[i]).abs() < 1e-6,
                    "loss {which} elem {i}: fd {fd} vs {}",
                    g[i]
                );
            }
        }
    }

    #[test]
    fn bad_shapes_and_temperatures_are_errors() {
        let a = t(&[1.0, 0.0], (1, 2));
        let b = t(&[1.0, 0.0, 0.0], (1, 3));
        assert!(info_nce(&a, &a, &a, 0.0).is_err());
        assert!(info_nce(&a, &b, &a, 0.1).is_err());
        assert!(nt_xent(&a, &a, 0.1).is_err()); // one image: no negative
    }
}
