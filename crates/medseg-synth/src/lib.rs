//! # medseg-synth
//!
//! Procedural phantoms (cardiac-like and abdominal-like, 2D and 3D) and annotation simulators: scribbles, noisy labels, partial labels and splits.

#![warn(missing_docs)]
