//! Multi-head self-attention (MONAI `SABlock`).

use candle_core::{Result, Tensor, D};

use crate::layers::{Ctx, ParamInit};

/// Multi-head self-attention over tokens `[N, L, hidden]`: `qkv` (one
/// linear layer producing queries, keys and values, ordered
/// `[qkv][head][head_dim]` as MONAI's `b h (qkv l d)` rearrangement),
/// softmax of `q k^T / sqrt(head_dim)`, then `out_proj`. Dropout is
/// zero in the configurations supported here.
pub struct SelfAttention {
    qkv_w: Tensor,
    qkv_b: Option<Tensor>,
    out_w: Tensor,
    out_b: Tensor,
    heads: usize,
}

impl SelfAttention {
    /// `hidden` channels split into `heads` heads; `qkv_bias` adds a bias
    /// to the `qkv` layer (MONAI's default is none).
    pub(crate) fn new(ctx: &Ctx, hidden: usize, heads: usize, qkv_bias: bool) -> Result<Self> {
        if heads == 0 || hidden % heads != 0 {
            candle_core::bail!("attention: hidden size {hidden} is not divisible by {heads} heads")
        }
        let bound = 1.0 / (hidden as f32).sqrt();
        let q = ctx.pp("qkv");
        let qkv_w = q.param(&[3 * hidden, hidden], "weight", ParamInit::Uniform(bound))?;
        let qkv_b = if qkv_bias {
            Some(q.param(&[3 * hidden], "bias", ParamInit::Uniform(bound))?)
        } else {
            None
        };
        let o = ctx.pp("out_proj");
        let out_w = o.param(&[hidden, hidden], "weight", ParamInit::Uniform(bound))?;
        let out_b = o.param(&[hidden], "bias", ParamInit::Uniform(bound))?;
        Ok(Self {
            qkv_w,
            qkv_b,
            out_w,
            out_b,
            heads,
        })
    }

    /// `[N, L, hidden] -> [N, L, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, l, c) = x.dims3()?;
        let hd = c / self.heads;
        let mut qkv = x.broadcast_matmul(&self.qkv_w.t()?)?;
        if let Some(b) = &self.qkv_b {
            qkv = qkv.broadcast_add(b)?;
        }
        // [N, L, 3, H, d] -> [3, N, H, L, d]
        let qkv = qkv
            .reshape((n, l, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let scale = 1.0 / (hd as f64).sqrt();
        let att = (q.matmul(&k.t()?)? * scale)?;
        let att = candle_nn::ops::softmax(&att, D::Minus1)?;
        let y = att
            .matmul(&v)?
            .permute((0, 2, 1, 3))?
            .contiguous()?
            .reshape((n, l, c))?;
        y.broadcast_matmul(&self.out_w.t()?)?
            .broadcast_add(&self.out_b)
    }
}
