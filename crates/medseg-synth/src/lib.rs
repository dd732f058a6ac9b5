#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod abdomen;
mod cardiac;
pub mod dataset;
pub mod federation;
mod grid;
pub mod noisy;
pub mod noisy_transform;
pub mod partial;
mod phantom;
pub mod scribble;
pub mod scribble_transform;
pub mod split;

pub use dataset::{
    ensure_phantom_dataset, phantom_config, write_phantom_dataset, write_phantom_dataset_with,
    PhantomDataset, PhantomFormat, PhantomReport, PhantomWriteOptions, WrittenSample,
};
pub use grid::mean_foreground_dice;
pub use noisy_transform::{corrupt_labels, register_noise_transform};
pub use phantom::{
    generate, generate_subject, named_seed, subject_seed, NoiseModel, Phantom, PhantomConfig,
    PhantomKind, PhantomSlice,
};
pub use scribble_transform::{register_scribble_transform, simulate_scribbles, SimulatedLabels};

/// Class values of the cardiac phantom (as in ACDC).
pub mod cardiac_classes {
    /// Background.
    pub const BACKGROUND: u16 = 0;
    /// Right-ventricle blood pool.
    pub const RV: u16 = 1;
    /// Left-ventricle myocardium.
    pub const MYOCARDIUM: u16 = 2;
    /// Left-ventricle blood pool (papillary muscles included).
    pub const LV: u16 = 3;
}

/// Class values of the abdominal phantom.
pub mod abdomen_classes {
    /// Background.
    pub const BACKGROUND: u16 = 0;
    /// Liver.
    pub const LIVER: u16 = 1;
    /// Spleen.
    pub const SPLEEN: u16 = 2;
    /// Left kidney (patient left, right side of the picture).
    pub const LEFT_KIDNEY: u16 = 3;
    /// Right kidney (patient right, left side of the picture).
    pub const RIGHT_KIDNEY: u16 = 4;
}
