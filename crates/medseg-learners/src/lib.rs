//! # medseg-learners
//!
//! The training engine (loop, optimisers, schedules, checkpoints, logs) and one learner per learning regime.

#![warn(missing_docs)]
