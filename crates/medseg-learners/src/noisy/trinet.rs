//! Tri-network (Zhang et al. 2020; PyMIC `NLLTriNet`), per pixel.
//!
//! For each step, with networks `f1` (the student), `f2`, `f3` and their
//! per-pixel cross-entropies `l_i` on the noisy labels: each network learns
//! from the pixels where the other two predict the same class,
//! `loss = sum_i mean(l_i over [argmax f_j == argmax f_k])`, `{j, k}` the
//! other two. Validation and inference use `f1`.

use super::pixels::{agreement_mask, batch_labels, masked_mean, pixel_ce};
use crate::error::Result;
use crate::learner::{trainable_vars, LearnerInit};
use crate::semi::{NoParams, Section, SemiMethod, SemiStep, Unsup};
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use medseg_config::SemiConfig;
use medseg_nets::{NetOutput, SegNetwork};

/// TriNet: the student and two peers (seeds + 1 and + 2, saved as `net2`, `net3`).
pub struct TriNet {
    ignore: u32,
    peers: Vec<(VarMap, Box<dyn SegNetwork>)>,
}

impl SemiMethod for TriNet {
    type Params = NoParams;
    const SECTIONS: &'static [Section] = &[Section::Noisy];

    fn new(_: NoParams, _: &SemiConfig, init: &LearnerInit) -> Result<Self> {
        Ok(TriNet {
            ignore: u32::from(init.config.dataset.ignore_label),
            peers: vec![init.build_network(1)?, init.build_network(2)?],
        })
    }

    fn supervised(&self, s: &SemiStep, out: &NetOutput) -> candle_core::Result<Tensor> {
        let labels = batch_labels(s)?;
        let mut logits = vec![out.logits.clone()];
        for (_, net) in &self.peers {
            logits.push(s.forward(net.as_ref(), &s.x)?.logits);
        }
        let mut total: Option<Tensor> = None;
        for i in 0..3 {
            let (j, k) = ((i + 1) % 3, (i + 2) % 3);
            let mask = agreement_mask(&logits[j].detach(), &logits[k].detach())?;
            let (l, valid) = pixel_ce(&logits[i], labels, self.ignore)?;
            let li = masked_mean(&l, &(mask * valid)?)?;
            total = Some(match total {
                None => li,
                Some(t) => (t + li)?,
            });
        }
        total.ok_or_else(|| candle_core::Error::Msg("no network".into()))
    }

    fn unsupervised(&mut self, _: &SemiStep, out: &NetOutput) -> candle_core::Result<Unsup> {
        Unsup::zero(&out.logits)
    }

    fn extra_params(&self) -> Vec<(String, Var)> {
        self.peers
            .iter()
            .enumerate()
            .flat_map(|(i, (vm, _))| {
                trainable_vars(vm, &format!("net{}.", i + 2)).unwrap_or_default()
            })
            .collect()
    }

    fn extra_varmaps(&self) -> Vec<(String, VarMap)> {
        self.peers
            .iter()
            .enumerate()
            .map(|(i, (vm, _))| (format!("net{}", i + 2), vm.clone()))
            .collect()
    }
}
