#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod checkpoint;
pub mod collate;
pub mod ema;
mod error;
pub mod learner;
pub mod logging;
pub mod noisy;
pub mod optim;
pub mod ramp;
pub mod registry;
pub mod schedule;
pub mod selfsup;
pub mod semi;
pub mod setup;
mod stream;
pub mod summary;
pub mod supervised;
pub mod teacher;
pub mod trainer;
pub mod validation;
pub mod weak;

pub use checkpoint::{CheckpointDir, CheckpointMeta};
pub use collate::{collate, TensorBatch};
pub use ema::{ema_decay_at, ema_update};
pub use error::{LearnError, Result, TensorContext};
pub use learner::{
    is_running_stat, scalar, sorted_vars, trainable_vars, Learner, LearnerInit, StepContext,
    StepOutput,
};
pub use optim::{clip_grad_norm, grad_norm, Optimizer, OptimizerSettings};
pub use ramp::{rampup, sigmoid_rampup, RampMode};
pub use registry::{LearnerCtor, LearnerRegistry};
pub use schedule::LrSchedule;
pub use setup::{
    build_loss, build_loss_with, build_net, build_net_pretrained, build_net_with, learner_name,
    manifest_path, network_config, parse_device, read_manifest, test_pipeline, test_pipeline_with,
    BuiltNet, Registries, TrainerBuilder,
};
pub use summary::{TrainSummary, ValidResult};
pub use supervised::{supervised_loss, SupervisedLearner};
pub use teacher::Teacher;
pub use trainer::{ExtraTerm, LocalSession, RoundStats, Trainer};
pub use validation::{dice_per_class, ValidationSet};
