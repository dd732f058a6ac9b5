//! # medseg-io
//!
//! Medical image I/O: NIfTI-1/2 and PNG/JPEG/TIFF with geometry kept, CSV manifests, datasets and a threaded prefetching loader.

#![warn(missing_docs)]
