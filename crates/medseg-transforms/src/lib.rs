//! # medseg-transforms
//!
//! Joint spatial and intensity transforms on samples, 2D and 3D, invertible where inference needs it, configured by name.

#![warn(missing_docs)]
