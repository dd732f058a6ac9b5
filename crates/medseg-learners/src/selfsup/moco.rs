//! MoCo v2 (He et al. 2020, "Momentum Contrast for Unsupervised Visual
//! Representation Learning"; Chen et al. 2020, "Improved Baselines with
//! Momentum Contrastive Learning").
//!
//! For each step, with `f_q` the query encoder (the network's encoder, then
//! a projection head `g_q`) and `f_k` the key encoder (a copy of both):
//! 1. two augmented views `x_q`, `x_k` of each image;
//! 2. `q = normalise(g_q(pool(f_q(x_q))))`,
//!    `k = normalise(g_k(pool(f_k(x_k))))`, no gradient through `k`;
//! 3. `loss = InfoNCE(q, k, queue, t)`: the key of the same image is the
//!    positive, the `K` queued keys of earlier batches the negatives;
//! 4. the optimiser updates `f_q`, `g_q`;
//! 5. `theta_k = m theta_k + (1 - m) theta_q` (every trainable tensor of
//!    encoder and head), and the batch's keys enter the queue, the oldest
//!    leaving it.

use super::{
    encoder_and_head, encoder_representation, KeyQueue, PretrainInit, ProjectionHead,
    SelfSupMethod, ViewScheme,
};
use crate::ema::ema_update;
use crate::error::{LearnError, Result, TensorContext};
use crate::learner::{scalar, StepOutput};
use candle_core::{Tensor, Var};
use candle_nn::{Module, VarMap};
use medseg_losses::{info_nce, l2_normalize};
use medseg_nets::SegNetwork;
use serde::Deserialize;

/// `pretrain.params` of MoCo.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoCoParams {
    /// Keys in the queue, `K` (default 1024; MoCo's 65536 is for ImageNet).
    #[serde(default = "default_queue")]
    pub queue_size: usize,
    /// Momentum `m` of the key encoder (default 0.99; MoCo's 0.999 suits
    /// runs of many more iterations).
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// InfoNCE temperature `t` (default 0.2, MoCo v2).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Embedding size (default 128).
    #[serde(default = "default_dim")]
    pub proj_dim: usize,
    /// Hidden size of the projection head (default 256).
    #[serde(default = "default_hidden")]
    pub hidden_dim: usize,
}

fn default_queue() -> usize {
    1024
}
fn default_momentum() -> f64 {
    0.99
}
fn default_temperature() -> f64 {
    0.2
}
pub(crate) fn default_dim() -> usize {
    128
}
pub(crate) fn default_hidden() -> usize {
    256
}

/// Bottleneck channels of `net`: the size of its pooled representation.
pub(crate) fn bottleneck_channels(init: &PretrainInit, net: &dyn SegNetwork) -> Result<usize> {
    let nd = net.dimension();
    let mut shape = vec![1, net.in_chns()];
    shape.extend(std::iter::repeat_n(32, nd));
    let x = Tensor::zeros(shape, candle_core::DType::F32, init.device).ctx("probe input")?;
    let r = encoder_representation(net, &x, false).ctx("probing the encoder")?;
    r.dim(1).ctx("probing the encoder")
}

/// MoCo v2 state: query and key encoders with their heads, and the queue.
pub struct MoCo {
    p: MoCoParams,
    q_vm: VarMap,
    q_net: Box<dyn SegNetwork>,
    q_head_vm: VarMap,
    q_head: ProjectionHead,
    k_vm: VarMap,
    k_net: Box<dyn SegNetwork>,
    k_head_vm: VarMap,
    k_head: ProjectionHead,
    queue: KeyQueue,
    /// Keys of the last step, queued after the update.
    pending: Option<Tensor>,
}

impl MoCo {
    /// Builds both encoders (the key encoder a copy of the query encoder),
    /// both heads and the queue.
    pub fn new(init: &PretrainInit) -> Result<Self> {
        let p: MoCoParams = init.params()?;
        if p.queue_size == 0 || p.proj_dim == 0 || p.hidden_dim == 0 {
            return Err(LearnError::Config(
                "pretrain.params: queue_size, proj_dim and hidden_dim must be positive".into(),
            ));
        }
        if !(0.0..1.0).contains(&p.momentum) {
            return Err(LearnError::Config(format!(
                "pretrain.params.momentum must be in [0, 1), got {}",
                p.momentum
            )));
        }
        if p.temperature <= 0.0 {
            return Err(LearnError::Config(format!(
                "pretrain.params.temperature must be positive, got {}",
                p.temperature
            )));
        }
        let (q_vm, q_net) = init.build_network(&[])?;
        let (k_vm, k_net) = init.build_network(&[])?;
        let c = bottleneck_channels(init, q_net.as_ref())?;
        let (q_head_vm, vb) = init.new_varmap();
        let q_head = ProjectionHead::new(c, p.hidden_dim, p.proj_dim, vb).ctx("query head")?;
        let (k_head_vm, vb) = init.new_varmap();
        let k_head = ProjectionHead::new(c, p.hidden_dim, p.proj_dim, vb).ctx("key head")?;
        let queue = KeyQueue::new(p.queue_size, p.proj_dim, init.seed() ^ 0x0c0c_0a11);
        let m = MoCo {
            p,
            q_vm,
            q_net,
            q_head_vm,
            q_head,
            k_vm,
            k_net,
            k_head_vm,
            k_head,
            queue,
            pending: None,
        };
        // theta_k = theta_q at the start
        for (k, q) in m.key_vars()?.iter().zip(m.query_vars()?.iter()) {
            k.set(q.as_tensor()).ctx("copying the query encoder")?;
        }
        Ok(m)
    }

    /// The query encoder's and head's trainable tensors, in EMA order.
    pub fn query_vars(&self) -> Result<Vec<Var>> {
        Ok(
            encoder_and_head(&self.q_vm, self.q_net.as_ref(), &self.q_head_vm)?
                .into_iter()
                .map(|x| x.1)
                .collect(),
        )
    }

    /// The key encoder's and head's tensors, matching [`MoCo::query_vars`].
    pub fn key_vars(&self) -> Result<Vec<Var>> {
        Ok(
            encoder_and_head(&self.k_vm, self.k_net.as_ref(), &self.k_head_vm)?
                .into_iter()
                .map(|x| x.1)
                .collect(),
        )
    }

    /// The queue of negatives.
    pub fn queue(&self) -> &KeyQueue {
        &self.queue
    }

    /// The momentum `m`.
    pub fn momentum(&self) -> f64 {
        self.p.momentum
    }
}

impl SelfSupMethod for MoCo {
    fn name(&self) -> &str {
        "MoCo"
    }

    fn views(&self) -> ViewScheme {
        ViewScheme::TwoViews
    }

    fn params(&self) -> Result<Vec<(String, Var)>> {
        encoder_and_head(&self.q_vm, self.q_net.as_ref(), &self.q_head_vm)
    }

    fn step(&mut self, views: &[Tensor], _it: usize) -> candle_core::Result<StepOutput> {
        let q = self.q_head.forward(&encoder_representation(
            self.q_net.as_ref(),
            &views[0],
            true,
        )?)?;
        let k = self
            .k_head
            .forward(&encoder_representation(
                self.k_net.as_ref(),
                &views[1],
                true,
            )?)?
            .detach();
        let k = l2_normalize(&k)?;
        let neg = self.queue.negatives(q.device())?;
        let loss = info_nce(&q, &k, &neg, self.p.temperature)?;
        self.pending = Some(k);
        let l = scalar(&loss)?;
        Ok(StepOutput {
            loss,
            terms: vec![("info_nce".into(), l)],
        })
    }

    fn after_update(&mut self, _it: usize) -> candle_core::Result<()> {
        let kv = self
            .key_vars()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let qv = self
            .query_vars()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        ema_update(&kv, &qv, self.p.momentum)?;
        if let Some(k) = self.pending.take() {
            self.queue.push(&k)?;
        }
        Ok(())
    }

    fn encoder(&self) -> (&VarMap, &dyn SegNetwork) {
        (&self.q_vm, self.q_net.as_ref())
    }

    fn varmaps(&self) -> Vec<(String, VarMap)> {
        vec![
            ("net".into(), self.q_vm.clone()),
            ("head".into(), self.q_head_vm.clone()),
            ("key_net".into(), self.k_vm.clone()),
            ("key_head".into(), self.k_head_vm.clone()),
        ]
    }
}
