//! SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning
//! of Visual Representations").
//!
//! For each step, with `f` the network's encoder and `g` a projection head:
//! 1. two augmented views `x_1`, `x_2` of each of the `N` images;
//! 2. `z_i = g(pool(f(x_i)))` for both views;
//! 3. `loss = NT-Xent(z_1, z_2, t)`: for each of the `2N` embeddings the
//!    other view of its image is the positive and the other `2N - 2` are
//!    the negatives (no queue, no momentum encoder: large batches help).

use super::moco::{bottleneck_channels, default_dim, default_hidden};
use super::{
    encoder_and_head, encoder_representation, PretrainInit, ProjectionHead, SelfSupMethod,
    ViewScheme,
};
use crate::error::{LearnError, Result, TensorContext};
use crate::learner::{scalar, StepOutput};
use candle_core::{Tensor, Var};
use candle_nn::{Module, VarMap};
use medseg_losses::nt_xent;
use medseg_nets::SegNetwork;
use serde::Deserialize;

/// `pretrain.params` of SimCLR.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimClrParams {
    /// NT-Xent temperature `t` (default 0.5, SimCLR's choice for small
    /// batches).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Embedding size (default 128).
    #[serde(default = "default_dim")]
    pub proj_dim: usize,
    /// Hidden size of the projection head (default 256).
    #[serde(default = "default_hidden")]
    pub hidden_dim: usize,
}

fn default_temperature() -> f64 {
    0.5
}

/// SimCLR state: the encoder and its projection head.
pub struct SimClr {
    p: SimClrParams,
    vm: VarMap,
    net: Box<dyn SegNetwork>,
    head_vm: VarMap,
    head: ProjectionHead,
}

impl SimClr {
    /// Builds the network and the head.
    pub fn new(init: &PretrainInit) -> Result<Self> {
        let p: SimClrParams = init.params()?;
        if p.temperature <= 0.0 || p.proj_dim == 0 || p.hidden_dim == 0 {
            return Err(LearnError::Config(
                "pretrain.params: temperature, proj_dim and hidden_dim must be positive".into(),
            ));
        }
        let (vm, net) = init.build_network(&[])?;
        let c = bottleneck_channels(init, net.as_ref())?;
        let (head_vm, vb) = init.new_varmap();
        let head = ProjectionHead::new(c, p.hidden_dim, p.proj_dim, vb).ctx("projection head")?;
        Ok(SimClr {
            p,
            vm,
            net,
            head_vm,
            head,
        })
    }

    fn embed(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.head
            .forward(&encoder_representation(self.net.as_ref(), x, true)?)
    }
}

impl SelfSupMethod for SimClr {
    fn name(&self) -> &str {
        "SimCLR"
    }

    fn views(&self) -> ViewScheme {
        ViewScheme::TwoViews
    }

    fn params(&self) -> Result<Vec<(String, Var)>> {
        encoder_and_head(&self.vm, self.net.as_ref(), &self.head_vm)
    }

    fn step(&mut self, views: &[Tensor], _it: usize) -> candle_core::Result<StepOutput> {
        // one pass over both views: batch statistics over all 2N images
        let n = views[0].dim(0)?;
        let z = self.embed(&Tensor::cat(&[&views[0], &views[1]], 0)?)?;
        let loss = nt_xent(&z.narrow(0, 0, n)?, &z.narrow(0, n, n)?, self.p.temperature)?;
        let l = scalar(&loss)?;
        Ok(StepOutput {
            loss,
            terms: vec![("nt_xent".into(), l)],
        })
    }

    fn encoder(&self) -> (&VarMap, &dyn SegNetwork) {
        (&self.vm, self.net.as_ref())
    }

    fn varmaps(&self) -> Vec<(String, VarMap)> {
        vec![
            ("net".into(), self.vm.clone()),
            ("head".into(), self.head_vm.clone()),
        ]
    }
}
