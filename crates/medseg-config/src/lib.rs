//! # medseg-config
//!
//! Typed experiment configuration: TOML with environment and command-line overrides, unknown keys rejected, PyMIC INI import.

#![warn(missing_docs)]
