#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod evaluation;
mod job;
mod plan;
mod postprocess;
mod predictor;
mod sliding;
mod tta;

pub use evaluation::{
    cases_from_folders, cases_from_manifest, evaluate_pair, evaluate_pairs, labels_in_ground_truth,
    needs_surface_distances, summary_json, write_evaluation_report, CaseFailure, EvalSettings,
};
pub use job::{read_case, CaseOutput, InferenceJob};
pub use plan::{
    cases_of_manifest, checkpoint_path, largest_component_mode, load_config, manifest_path,
    parse_device, parse_largest_component, run_config_of, test_cases, InferenceCase,
    InferenceOverrides, InferencePlan, LoadedNetwork, PREDICTIONS_CSV,
};
pub use postprocess::{
    argmax, compose_experts, keep_largest_component, label_components, LargestComponentMode,
};
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
    /// An input image that cannot be predicted as it is.
    #[error("{file}: {message}")]
    BadImage {
        /// The image file(s).
        file: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// An error from the model or from reading/writing files.
    #[error(transparent)]
    Core(#[from] medseg_core::Error),
    /// An error raised by the prediction callback.
    #[error("prediction failed: {0}")]
    Predict(String),
    /// An experiment config that cannot be read or is invalid.
    #[error(transparent)]
    Config(#[from] medseg_config::ConfigError),
    /// A checkpoint whose network cannot be loaded.
    #[error("loading {path}: {error}", path = path.display())]
    Network {
        /// The checkpoint.
        path: std::path::PathBuf,
        /// What went wrong.
        error: medseg_nets::NetError,
    },
    /// An inference run that cannot be set up (no checkpoint, no case, a
    /// missing file); the message says what to give.
    #[error("{0}")]
    Job(String),
    /// One evaluated case (prediction against ground truth) that failed.
    #[error("case {case}: {message}")]
    Evaluation {
        /// The case name.
        case: String,
        /// What went wrong, naming the file.
        message: String,
    },
    /// One case that failed.
    #[error("case {name} ({file}): {error}", file = file.display())]
    Case {
        /// The case name.
        name: String,
        /// Its first image file.
        file: std::path::PathBuf,
        /// What went wrong.
        error: Box<InferError>,
    },
}

/// Result alias of this crate.
pub type Result<T, E = InferError> = std::result::Result<T, E>;
