//! A semi-supervised method of your own: one type implementing
//! `SemiMethod` (its typed parameters and its unsupervised term) and one
//! registration line. The shared parts (labelled/unlabelled split,
//! supervised loss with deep supervision, ramp-up, logging, checkpoints)
//! come from `SemiLearner`.
//!
//! The method here is confidence-thresholded self-training (pseudo
//! labelling, Lee 2013; the unlabelled half of FixMatch without its strong
//! augmentation): pixels of the unlabelled images where the student's own
//! detached softmax exceeds `threshold` are trained towards its argmax.
//!
//! `cargo run -p medseg-learners --example custom_semi_method`

#[path = "common/mod.rs"]
mod common;

use candle_core::DType;
use medseg_config::SemiConfig;
use medseg_learners::semi::{softmax_c, SemiMethod, SemiStep, Unsup};
use medseg_learners::{LearnError, LearnerInit, Registries, TrainerBuilder};
use medseg_nets::NetOutput;
use serde::Deserialize;

/// `semi.params` of the method: unknown keys are rejected by serde.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PseudoLabelParams {
    /// Minimum softmax confidence of a pixel's pseudo label.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
}

fn default_threshold() -> f64 {
    0.9
}

impl Default for PseudoLabelParams {
    fn default() -> Self {
        PseudoLabelParams {
            threshold: default_threshold(),
        }
    }
}

/// Confidence-thresholded pseudo labels.
pub struct PseudoLabel {
    threshold: f64,
}

impl SemiMethod for PseudoLabel {
    type Params = PseudoLabelParams;

    fn new(p: PseudoLabelParams, _: &SemiConfig, _: &LearnerInit) -> medseg_learners::Result<Self> {
        if !(0.0..1.0).contains(&p.threshold) {
            return Err(LearnError::Config(format!(
                "semi.params.threshold must be in [0, 1), got {}",
                p.threshold
            )));
        }
        Ok(PseudoLabel {
            threshold: p.threshold,
        })
    }

    /// 1. `p = sg(softmax(f(x_u)))`; 2. `m = [max_c p >= threshold]`;
    /// 3. `unsup = sum(m * CE(f(x_u), argmax p)) / (sum(m) + 1)`.
    fn unsupervised(&mut self, s: &SemiStep, out: &NetOutput) -> candle_core::Result<Unsup> {
        let logits = s.unlabelled(&out.logits)?;
        let p = softmax_c(&logits)?.detach();
        let labels = p.argmax_keepdim(1)?;
        let mask = p.max_keepdim(1)?.ge(self.threshold)?.to_dtype(DType::F32)?;
        let logp = candle_nn::ops::log_softmax(&logits, 1)?;
        let ce = logp.gather(&labels, 1)?.neg()?;
        let loss = ((ce * &mask)?.sum_all()? / (mask.sum_all()? + 1.0)?)?;
        let kept = mask.mean_all()?.to_scalar::<f32>()? as f64;
        Ok(Unsup {
            loss,
            extra_sup: None,
            terms: vec![("confident".into(), kept)],
        })
    }
}

/// Trains the method for a few iterations on a tiny phantom and returns
/// the logged terms of the last step.
pub fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("data");
    common::tiny_phantom(&root)?;
    let out = dir.path().join("run");
    let semi = "[semi]\nmethod = \"PseudoLabel\"\nregularize_w = 1.0\nrampup_end = 0.0\nparams = { threshold = 0.3 }";
    let cfg = common::tiny_config(&root, &out, common::UNET, common::DICE_CE, "", semi)?;

    let mut registries = Registries::with_builtins();
    // the one registration line
    registries
        .learners
        .register_semi::<PseudoLabel>("PseudoLabel");

    let mut trainer = TrainerBuilder::new(cfg)
        .registries(registries)
        .progress(false)
        .build()?;
    let summary = trainer.run()?;
    println!("{summary}");
    let log = std::fs::read_to_string(out.join("train_log.csv"))?;
    let header = log.lines().next().unwrap_or_default();
    anyhow::ensure!(
        header == "iteration,lr,loss,sup,unsup,weight,confident",
        "unexpected log columns: {header}"
    );
    anyhow::ensure!(summary.iterations == 4, "ran {} steps", summary.iterations);
    anyhow::ensure!(
        summary.final_loss.is_finite(),
        "loss {}",
        summary.final_loss
    );
    Ok(())
}

/// The misspelt parameter is named, with the valid ones.
#[allow(dead_code)]
pub fn misspelt_parameter_error() -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let semi = "[semi]\nmethod = \"PseudoLabel\"\nparams = { treshold = 0.3 }";
    let cfg = common::tiny_config(
        dir.path(),
        dir.path(),
        common::UNET,
        common::DICE_CE,
        "",
        semi,
    )?;
    let mut registries = Registries::with_builtins();
    registries
        .learners
        .register_semi::<PseudoLabel>("PseudoLabel");
    match TrainerBuilder::new(cfg).registries(registries).build() {
        Ok(_) => anyhow::bail!("a misspelt parameter was accepted"),
        Err(e) => Ok(e.to_string()),
    }
}
