//! A loss of your own: a type implementing `Loss` and one registration line
//! in the loss registry; `training.loss.name` (or a `CombinedLoss` term)
//! then selects it.
//!
//! `cargo run -p medseg-learners --example custom_loss`

#[path = "common/mod.rs"]
mod common;

use candle_core::{DType, Tensor};
use medseg_learners::{Registries, TrainerBuilder};
use medseg_losses::{Labels, Loss, LossTarget, Prediction};
use serde::Deserialize;

/// Parameters of the Brier loss.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrierParams {
    /// Multiplies the loss (default 1).
    #[serde(default)]
    pub scale: Option<f64>,
}

/// The multi-class Brier score: the mean over pixels of
/// `sum_c (p_c - y_c)^2`, `y` the one-hot label (class maps only; pixels
/// with the ignore value count as background in this short example).
#[derive(Debug)]
pub struct BrierLoss {
    scale: f64,
}

impl Loss for BrierLoss {
    fn forward(&self, pred: &Prediction, target: &LossTarget) -> candle_core::Result<Tensor> {
        let p = pred.probs()?;
        let c = p.dim(1)?;
        let Some(Labels::ClassMap { map, .. }) = &target.labels else {
            candle_core::bail!("BrierLoss needs a class map")
        };
        let classes = Tensor::arange(0u32, c as u32, p.device())?.reshape((1, c, 1, 1))?;
        let onehot = map
            .to_dtype(DType::U32)?
            .broadcast_eq(&classes)?
            .to_dtype(p.dtype())?;
        let per_pixel = (p - onehot)?.sqr()?.sum_keepdim(1)?;
        per_pixel.mean_all()? * self.scale
    }
}

/// Trains with `BrierLoss` in a `CombinedLoss` and checks the loss fell.
pub fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("data");
    common::tiny_phantom(&root)?;
    let out = dir.path().join("run");
    let loss = r#"{ name = "CombinedLoss", terms = [{ loss = "BrierLoss", weight = 1.0, params = { scale = 2.0 } }, { loss = "CrossEntropyLoss", weight = 0.5 }] }"#;
    let cfg = common::tiny_config(&root, &out, common::UNET, loss, "", "")?;

    let mut registries = Registries::with_builtins();
    // the one registration line
    registries.losses.register("BrierLoss", |v, _| {
        let p: BrierParams = if v.is_null() {
            BrierParams::default()
        } else {
            serde_json::from_value(v.clone()).map_err(|e| medseg_losses::Error::InvalidParams {
                loss: "BrierLoss".into(),
                message: e.to_string(),
            })?
        };
        Ok(Box::new(BrierLoss {
            scale: p.scale.unwrap_or(1.0),
        }))
    });

    let summary = TrainerBuilder::new(cfg)
        .registries(registries)
        .progress(false)
        .build()?
        .run()?;
    println!("{summary}");
    anyhow::ensure!(
        summary.final_loss.is_finite(),
        "loss {}",
        summary.final_loss
    );
    Ok(())
}
