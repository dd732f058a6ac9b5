#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod collate;
pub mod data;
pub mod ema;
pub mod engine;
mod error;
pub mod logging;
pub mod optim;
pub mod ramp;
pub mod schedule;
pub mod semi;

pub use collate::{collate, TensorBatch};
pub use data::{ensure_dataset, phantom_config, write_phantom_dataset, PhantomDataset};
pub use ema::{ema_decay_at, ema_update};
pub use engine::{
    build_loss, build_net, dice_per_class, manifest_path, network_config, read_manifest,
    test_pipeline, CheckpointMeta, Learner, StepContext, StepOutput, SupervisedLearner,
    TrainSummary, Trainer, ValidResult, ValidationSet,
};
pub use error::{LearnError, Result, TensorContext};
pub use optim::{clip_grad_norm, grad_norm, Optimizer, OptimizerSettings};
pub use ramp::{rampup, sigmoid_rampup, RampMode};
pub use schedule::LrSchedule;
