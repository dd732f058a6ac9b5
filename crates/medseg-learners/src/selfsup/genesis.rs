//! Model Genesis (Zhou et al. 2019, "Models Genesis: Generic Autodidactic
//! Models for 3D Medical Image Analysis"; PyMIC's self-supervised
//! restoration).
//!
//! For each step, with `h` the whole encoder–decoder network built with as
//! many outputs as input channels:
//! 1. each image `x` is corrupted by the view pipeline (Model Genesis'
//!    `NonLinearTransform`, `LocalShuffling`, `InOutPainting`) into `x~`;
//! 2. `loss = MSE(h(x~), x)`: the network restores the original.
//!
//! Only the encoder is exported, as for the contrastive methods; its
//! tensors have the names and shapes of the segmentation network's.

use super::{PretrainInit, SelfSupMethod, ViewScheme};
use crate::error::{LearnError, Result, TensorContext};
use crate::learner::{scalar, trainable_vars, StepOutput};
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use medseg_nets::SegNetwork;
use serde::Deserialize;

/// `pretrain.params` of Model Genesis (none yet; unknown keys are errors).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelGenesisParams {}

/// Model Genesis state: the restoration network.
pub struct ModelGenesis {
    vm: VarMap,
    net: Box<dyn SegNetwork>,
}

impl ModelGenesis {
    /// Builds the network with `class_num = in_chns` (a restoration output).
    pub fn new(init: &PretrainInit) -> Result<Self> {
        let _: ModelGenesisParams = init.params()?;
        let c = init.config.dataset.in_channels;
        let (vm, net) = init.build_network(&[("class_num", serde_json::json!(c))])?;
        if net.encoder_prefixes().is_empty() {
            return Err(LearnError::Config(
                "ModelGenesis exports the encoder: the network must expose it".into(),
            ));
        }
        Ok(ModelGenesis { vm, net })
    }
}

impl SelfSupMethod for ModelGenesis {
    fn name(&self) -> &str {
        "ModelGenesis"
    }

    fn views(&self) -> ViewScheme {
        ViewScheme::CorruptedAndClean
    }

    fn params(&self) -> Result<Vec<(String, Var)>> {
        trainable_vars(&self.vm, "").ctx("network tensors")
    }

    fn step(&mut self, views: &[Tensor], _it: usize) -> candle_core::Result<StepOutput> {
        let out = self.net.forward_t(&views[0], true)?.logits;
        let loss = (out - &views[1])?.sqr()?.mean_all()?;
        let l = scalar(&loss)?;
        Ok(StepOutput {
            loss,
            terms: vec![("mse".into(), l)],
        })
    }

    fn encoder(&self) -> (&VarMap, &dyn SegNetwork) {
        (&self.vm, self.net.as_ref())
    }

    fn varmaps(&self) -> Vec<(String, VarMap)> {
        vec![("net".into(), self.vm.clone())]
    }
}
