//! Dynamically mixed pseudo label supervision (Luo et al. 2022; PyMIC
//! `WSLDMPLS`), on a dual-decoder network.
//!
//! For each step, with decoders `f1`, `f2` and a fresh `beta ~ U(0, 1)`:
//! 1. `sup = (pCE(f1(x), s) + pCE(f2(x), s)) / 2` on the scribbles `s`;
//! 2. the pseudo label `y = argmax(beta p1 + (1 - beta) p2)` (detached),
//!    `p_i = softmax(f_i(x))`, on every pixel;
//! 3. `unsup = (Dice(p1, y) + Dice(p2, y)) / 2`.

use crate::error::Result;
use crate::learner::LearnerInit;
use crate::semi::{softmax_c, NoParams, Section, SemiMethod, SemiStep, Unsup};
use candle_core::Tensor;
use medseg_config::SemiConfig;
use medseg_losses::{DiceLoss, Loss, LossTarget, Prediction};
use medseg_nets::NetOutput;
use rand::{Rng, SeedableRng};

/// DMPLS on a `DualDecoderUNet`.
pub struct Dmpls {
    rng: rand_chacha::ChaCha8Rng,
    dice: DiceLoss,
}

/// The two decoders' logits.
fn decoders(out: &NetOutput) -> candle_core::Result<(&Tensor, &Tensor)> {
    match out.aux.first() {
        Some(a) => Ok((&out.logits, a)),
        None => candle_core::bail!("DMPLS needs a network with two decoders (DualDecoderUNet)"),
    }
}

impl SemiMethod for Dmpls {
    type Params = NoParams;
    const SECTIONS: &'static [Section] = &[Section::Weak];
    const NETWORKS: &'static [&'static str] = &["DualDecoderUNet", "DBNet"];

    fn new(_: NoParams, _: &SemiConfig, init: &LearnerInit) -> Result<Self> {
        Ok(Dmpls {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(init.config.training.seed ^ 0xd3_91),
            dice: DiceLoss::default(),
        })
    }

    fn supervised(&self, s: &SemiStep, out: &NetOutput) -> candle_core::Result<Tensor> {
        let (a, b) = decoders(out)?;
        (s.sup_loss(a.clone())? + s.sup_loss(b.clone())?)? * 0.5
    }

    fn unsupervised(&mut self, _: &SemiStep, out: &NetOutput) -> candle_core::Result<Unsup> {
        let (a, b) = decoders(out)?;
        let beta = self.rng.random::<f64>() + 1e-10;
        let (p1, p2) = (softmax_c(a)?, softmax_c(b)?);
        let mixed = ((&p1 * beta)? + (&p2 * (1.0 - beta))?)?.detach();
        let target = LossTarget::class_map(mixed.argmax_keepdim(1)?);
        let d1 = self.dice.forward(&Prediction::probabilities(p1), &target)?;
        let d2 = self.dice.forward(&Prediction::probabilities(p2), &target)?;
        Ok(Unsup {
            loss: ((d1 + d2)? * 0.5)?,
            extra_sup: None,
            terms: vec![("beta".into(), beta)],
        })
    }
}
