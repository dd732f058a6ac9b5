//! Cross pseudo supervision (Chen et al. 2021; PyMIC `SSLCPS`).
//!
//! Two networks `f1` (the student) and `f2` of the same configuration and
//! different initial weights. For each step:
//! 1. `sup = L(f1(x_l), y) + L(f2(x_l), y)`;
//! 2. on the unlabelled images, `unsup = L(f1(x_u), argmax f2(x_u)) + L(f2(x_u), argmax f1(x_u))`;
//! 3. minimise `sup + w(t) unsup`; validation and inference use `f1`.

use super::{softmax_c, NoParams, SemiMethod, SemiStep, Unsup};
use crate::error::Result;
use crate::learner::{trainable_vars, LearnerInit};
use candle_core::Var;
use candle_nn::VarMap;
use medseg_config::SemiConfig;
use medseg_nets::{NetOutput, SegNetwork};

/// CPS: the second network is seeded with `training.seed + 1`, trained
/// through the learner's extra parameters (logged as `sup2`) and saved with
/// checkpoints under the suffix `net2`.
pub struct Cps {
    varmap2: VarMap,
    net2: Box<dyn SegNetwork>,
}

impl Cps {
    /// The second network.
    pub fn second_net(&self) -> &dyn SegNetwork {
        self.net2.as_ref()
    }

    /// The second network's weights.
    pub fn second_varmap(&self) -> &VarMap {
        &self.varmap2
    }
}

impl SemiMethod for Cps {
    type Params = NoParams;

    fn new(_: NoParams, _: &SemiConfig, init: &LearnerInit) -> Result<Self> {
        let (varmap2, net2) = init.build_network(1)?;
        Ok(Cps { varmap2, net2 })
    }

    fn unsupervised(&mut self, s: &SemiStep, out: &NetOutput) -> candle_core::Result<Unsup> {
        let o2 = s.forward(self.net2.as_ref(), &s.x)?.logits;
        let sup2 = s.sup_loss(s.labelled(&o2)?)?;
        let (u1, u2) = (s.unlabelled(&out.logits)?, s.unlabelled(&o2)?);
        let (p1, p2) = (softmax_c(&u1)?, softmax_c(&u2)?);
        let pse1 = s.pseudo_label_loss(u1, &p2)?;
        let pse2 = s.pseudo_label_loss(u2, &p1)?;
        Ok(Unsup {
            loss: (&pse1 + &pse2)?,
            extra_sup: Some(("sup2".into(), sup2)),
            terms: Vec::new(),
        })
    }

    fn extra_params(&self) -> Vec<(String, Var)> {
        trainable_vars(&self.varmap2, "net2.").unwrap_or_default()
    }

    fn extra_varmaps(&self) -> Vec<(String, VarMap)> {
        vec![("net2".into(), self.varmap2.clone())]
    }
}
