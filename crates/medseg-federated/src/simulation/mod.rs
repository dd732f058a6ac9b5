//! An in-process federation (the `medseg-federated simulate` command):
//! sites from a base learner config with their own manifests, rounds of
//! local training from the global weights, a seeded sample of sites per
//! round, seeded drop-outs, a registered aggregation strategy, per-round
//! logs and curves, and one multi-organ model at the end.

mod config;
mod export;
mod log;
mod run;

pub(crate) use config::override_value;
pub use config::{
    split_overrides, FederationConfig, FederationSettings, FinetuneScope, SiteConfig,
};
pub use export::{final_model, head_keys, SiteModel};
pub use log::{RoundRecord, RoundsLog};
pub use run::{Simulation, SimulationSummary};
