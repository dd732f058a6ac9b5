//! Cross pseudo supervision (Chen et al. 2021; PyMIC `SSLCPS`).

use super::{
    consistency_weight, forward_split, is_running_stat, joint_forward, joint_input,
    pseudo_label_loss, rows, scalar, semi_config, softmax_c, sorted_vars, sup_loss,
};
use crate::engine::{build_net, network_config, Learner, StepContext, StepOutput};
use crate::error::Result;
use candle_core::{Device, Var};
use candle_nn::VarMap;
use medseg_config::{ExperimentConfig, SemiConfig};
use medseg_nets::SegNetwork;

/// CPS: two networks of the same configuration but different initial
/// weights (the second is seeded with `training.seed + 1`). Each gets the
/// supervised loss on the labelled images and, weighted, the configured loss
/// against the other's hard (argmax) pseudo labels on the unlabelled images:
/// `sup1 + sup2 + w (pse1 + pse2)`. The second network's parameters are
/// trained through [`Learner::extra_params`] and saved with checkpoints
/// under the suffix `net2`; validation and inference use the first.
pub struct CpsLearner {
    semi: SemiConfig,
    varmap2: VarMap,
    net2: Box<dyn SegNetwork>,
}

impl CpsLearner {
    /// Builds the second network.
    pub fn new(cfg: &ExperimentConfig, device: &Device) -> Result<Self> {
        let mut nc = network_config(cfg);
        let seed = nc.get("seed").and_then(|v| v.as_u64()).unwrap_or(1);
        nc["seed"] = serde_json::json!(seed.wrapping_add(1));
        let (varmap2, net2) = build_net(&nc, device)?;
        Ok(Self {
            semi: semi_config(cfg)?.clone(),
            varmap2,
            net2,
        })
    }

    /// The second network.
    pub fn second_net(&self) -> &dyn SegNetwork {
        self.net2.as_ref()
    }

    /// The second network's weights.
    pub fn second_varmap(&self) -> &VarMap {
        &self.varmap2
    }
}

impl Learner for CpsLearner {
    fn name(&self) -> &str {
        "CPS"
    }

    fn needs_unlabelled(&self) -> bool {
        true
    }

    fn extra_params(&self) -> Vec<(String, Var)> {
        sorted_vars(&self.varmap2)
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| !is_running_stat(k))
            .map(|(k, v)| (format!("net2.{k}"), v))
            .collect()
    }

    fn train_step(&mut self, ctx: &StepContext) -> candle_core::Result<StepOutput> {
        let (x, n0) = joint_input(ctx)?;
        let n = x.dim(0)?;
        let joint = joint_forward(&self.semi);
        let o1 = forward_split(ctx.net, &x, n0, joint)?.logits;
        let o2 = forward_split(self.net2.as_ref(), &x, n0, joint)?.logits;
        let sup1 = sup_loss(ctx, rows(&o1, 0, n0)?)?;
        let sup2 = sup_loss(ctx, rows(&o2, 0, n0)?)?;
        let (u1, u2) = (rows(&o1, n0, n - n0)?, rows(&o2, n0, n - n0)?);
        let (p1, p2) = (softmax_c(&u1)?, softmax_c(&u2)?);
        let pse1 = pseudo_label_loss(ctx, u1, &p2)?;
        let pse2 = pseudo_label_loss(ctx, u2, &p1)?;
        let reg = (&pse1 + &pse2)?;
        let w = consistency_weight(&self.semi, ctx.iteration, ctx.iterations);
        let sup = (&sup1 + &sup2)?;
        let loss = (&sup + (&reg * w)?)?;
        Ok(StepOutput {
            terms: vec![
                ("sup".into(), scalar(&sup1)?),
                ("sup2".into(), scalar(&sup2)?),
                ("unsup".into(), scalar(&reg)?),
                ("weight".into(), w),
            ],
            loss,
        })
    }

    fn extra_varmaps(&self) -> Vec<(String, VarMap)> {
        vec![("net2".into(), self.varmap2.clone())]
    }
}
