#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod job;
mod postprocess;
mod predictor;
mod sliding;
mod tta;

pub use job::{read_case, CaseOutput, InferenceJob};
pub use postprocess::{argmax, keep_largest_component, label_components, LargestComponentMode};
pub use predictor::{array_to_tensor, network_probabilities, tensor_to_array, Predictor};
pub use sliding::{gaussian_importance_map, window_starts, SlidingWindow};
pub use tta::{flip_axes_subsets, predict_with_flips};

/// Errors from inference.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// Array shapes that do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A setting outside what is accepted.
    #[error("invalid value for `{key}`: {message}")]
    Invalid {
        /// The setting.
        key: String,
        /// What was expected.
        message: String,
    },
    /// An error from the model or from reading/writing files.
    #[error(transparent)]
    Core(#[from] medseg_core::Error),
    /// An error raised by the prediction callback.
    #[error("prediction failed: {0}")]
    Predict(String),
}

/// Result alias of this crate.
pub type Result<T, E = InferError> = std::result::Result<T, E>;
