#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod aggregator;
mod error;
#[cfg(feature = "flower")]
pub mod flower;
mod proximal;
mod registry;
pub mod simulation;
mod site;
pub mod strategies;
mod weights;

pub use aggregator::{
    detect_norm_keys, key_matches, validate_updates, weighted_average, weighted_metrics, Aggregator,
};
pub use error::{FedError, Result};
pub use proximal::{proximal_term, ProximalTerm, TensorLike};
pub use registry::{AggregatorCtor, AggregatorRegistry};
pub use simulation::{FederationConfig, Simulation, SimulationSummary};
pub use site::LocalSite;
pub use strategies::fedavg::{FedAvg, FedAvgParams, FedProx, FedProxParams};
pub use strategies::fedbn::{FedBN, FedBNParams, DEFAULT_NORM_PATTERNS};
pub use strategies::fedopt::{FedAdam, FedAdamParams, FedYogi, FedYogiParams};
pub use strategies::segviz::{
    assemble_heads, HeadPrediction, SegViz, SegVizParams, DEFAULT_HEAD_PATTERNS,
};
pub use weights::{array_to_tensor, tensor_to_array, ClientUpdate, Weights};
