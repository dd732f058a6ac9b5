#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod ema;
pub mod optim;
pub mod ramp;
pub mod schedule;

pub use ema::{ema_decay_at, ema_update};
pub use optim::{clip_grad_norm, grad_norm, Optimizer, OptimizerSettings};
pub use ramp::{rampup, sigmoid_rampup, RampMode};
pub use schedule::LrSchedule;
