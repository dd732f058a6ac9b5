//! # medseg-viz
//!
//! Pictures for people: label overlays, montages, line charts, box plots and bar charts as PNG, in pure Rust.

#![warn(missing_docs)]
