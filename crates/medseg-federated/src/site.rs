//! One site of a federation, as both the in-process simulation and the
//! Flower node run it: a trainer (network, loss, learner, data) that
//! receives global weights (keeping its local arrays), trains a few steps
//! (with FedProx's proximal term when asked), answers with its weights and
//! example count, and validates on its own annotated classes.

use std::collections::BTreeSet;

use candle_core::{Tensor, Var};
use medseg_config::ExperimentConfig;
use medseg_learners::{LocalSession, Registries, Trainer, TrainerBuilder};

use crate::error::{FedError, Result};
use crate::{ClientUpdate, ProximalTerm, Weights};

/// A site's trainer and where it stands.
pub struct LocalSite {
    /// The site's name (in errors and logs).
    pub name: String,
    /// Network, loss, learner, optimiser.
    pub trainer: Trainer,
    /// Data, iteration count, optimiser state between rounds.
    pub session: LocalSession,
    /// The foreground classes the site annotated (every class without
    /// partial labels).
    pub organs: Vec<u16>,
    /// Cases of the validation manifest (0 without one).
    pub valid_cases: usize,
}

pub(crate) fn site_err(site: &str, msg: impl std::fmt::Display) -> FedError {
    FedError::Site {
        site: site.to_string(),
        msg: msg.to_string(),
    }
}

impl LocalSite {
    /// Builds the site's trainer from its learner config, with `learner`
    /// from `registries`, and opens its data. With `partial_labels`, every
    /// training row must say which classes it annotated.
    ///
    /// # Errors
    /// A trainer that cannot be built, unreadable data, a manifest row
    /// without `annotated_classes` or naming a class beyond
    /// `dataset.class_num`: each naming the site (and file and row).
    pub fn new(
        name: &str,
        cfg: ExperimentConfig,
        learner: &str,
        keep_optimizer: bool,
        partial_labels: bool,
        registries: Registries,
    ) -> Result<Self> {
        let organs = site_organs(name, &cfg, partial_labels)?;
        let valid_cases = match &cfg.dataset.valid_csv {
            Some(v) => medseg_learners::read_manifest(&cfg, v)
                .map_err(|e| site_err(name, format!("validation manifest: {e}")))?
                .rows
                .len(),
            None => 0,
        };
        let trainer = TrainerBuilder::new(cfg)
            .registries(registries)
            .learner(learner)
            .progress(false)
            .build()
            .map_err(|e| site_err(name, format!("setting up its trainer: {e}")))?;
        let mut session = trainer
            .open_session()
            .map_err(|e| site_err(name, format!("opening its data: {e}")))?;
        session.keep_optimizer = keep_optimizer;
        Ok(LocalSite {
            name: name.to_string(),
            trainer,
            session,
            organs,
            valid_cases,
        })
    }

    /// The site's current weights (every array, local ones included).
    ///
    /// # Errors
    /// Arrays that cannot be read from the network.
    pub fn weights(&self) -> Result<Weights> {
        Weights::from_varmap(self.trainer.varmap())
    }

    /// Loads `global` into the site's network, except the arrays for which
    /// `is_local` holds.
    ///
    /// # Errors
    /// An array of `global` the network lacks or of another shape.
    pub fn receive(&self, global: &Weights, is_local: &dyn Fn(&str) -> bool) -> Result<()> {
        global.load_into_except(self.trainer.varmap(), is_local)
    }

    /// Trains `steps` steps from the weights loaded now, adding `prox`'s
    /// term to the loss when given; answers with every array, the number
    /// of training examples and the mean loss (metric `loss`).
    ///
    /// # Errors
    /// Training errors, naming the site.
    pub fn train(&mut self, steps: usize, prox: Option<&ProximalTerm>) -> Result<ClientUpdate> {
        let term = |vars: &[(String, Var)]| -> candle_core::Result<Tensor> {
            match prox {
                Some(p) => p.compute(vars),
                None => Tensor::zeros((), candle_core::DType::F32, &candle_core::Device::Cpu),
            }
        };
        let extra: Option<medseg_learners::ExtraTerm<'_>> = prox.map(|_| &term as _);
        let stats = self
            .trainer
            .train_round(&mut self.session, steps, extra)
            .map_err(|e| site_err(&self.name, format!("local training: {e}")))?;
        Ok(ClientUpdate::new(
            self.name.clone(),
            self.weights()?,
            self.session.num_examples(),
        )
        .with_metric("loss", stats.mean_loss))
    }

    /// Mean validation Dice of the weights loaded now over the classes the
    /// site annotated (and the number of validation cases); `None` without
    /// a validation manifest.
    ///
    /// # Errors
    /// Inference errors, naming the site.
    pub fn validate(&self) -> Result<Option<f64>> {
        let v = self
            .trainer
            .validate_session(&self.session)
            .map_err(|e| site_err(&self.name, format!("validation: {e}")))?;
        Ok(v.map(|v| {
            let d: Vec<f64> = self
                .organs
                .iter()
                .filter_map(|&c| v.class_dice.get(c as usize - 1).copied())
                .collect();
            if d.is_empty() {
                f64::NAN
            } else {
                d.iter().sum::<f64>() / d.len() as f64
            }
        }))
    }
}

/// The foreground classes site `name` annotated: with partial labels, the
/// union of its training rows' `annotated_classes` (each row must have
/// them); otherwise every class.
fn site_organs(name: &str, cfg: &ExperimentConfig, partial: bool) -> Result<Vec<u16>> {
    if !partial {
        return Ok((1..cfg.dataset.class_num as u16).collect());
    }
    let m = medseg_learners::read_manifest(cfg, &cfg.dataset.train_csv)
        .map_err(|e| site_err(name, format!("training manifest: {e}")))?;
    let file = medseg_learners::manifest_path(cfg, &cfg.dataset.train_csv);
    let mut organs = BTreeSet::new();
    for (i, row) in m.rows.iter().enumerate() {
        let Some(ac) = &row.annotated_classes else {
            return Err(site_err(
                name,
                format!(
                    "{} row {}: no `annotated_classes`; a partial-label federation needs the \
                     annotated classes of every case (e.g. `0;2`), or set \
                     federation.partial_labels = false",
                    file.display(),
                    i + 1
                ),
            ));
        };
        for &c in ac {
            if c as usize >= cfg.dataset.class_num {
                return Err(site_err(
                    name,
                    format!(
                        "{} row {}: annotated_classes names class {c}, but dataset.class_num is {}",
                        file.display(),
                        i + 1,
                        cfg.dataset.class_num
                    ),
                ));
            }
            if c > 0 {
                organs.insert(c);
            }
        }
    }
    if m.rows.is_empty() {
        return Err(site_err(
            name,
            format!("{} has no training case", file.display()),
        ));
    }
    Ok(organs.into_iter().collect())
}
