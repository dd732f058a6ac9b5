//! The error type of medseg-metrics.

use thiserror::Error;

/// Everything that can go wrong when computing metrics. Nothing in this crate
/// panics on user input; bad input comes back as one of these.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum MetricsError {
    /// The prediction and the ground truth have different shapes.
    #[error("shape mismatch: prediction {pred:?} vs ground truth {gt:?}")]
    ShapeMismatch {
        /// Shape of the prediction.
        pred: Vec<usize>,
        /// Shape of the ground truth.
        gt: Vec<usize>,
    },
    /// The spacing does not have one value per array axis.
    #[error("spacing has {got} values but the arrays have {ndim} axes")]
    SpacingLength {
        /// Number of spacing values given.
        got: usize,
        /// Number of array axes.
        ndim: usize,
    },
    /// A spacing value is zero, negative or not finite.
    #[error("spacing values must be finite and positive, got {0:?}")]
    BadSpacing(Vec<f64>),
    /// Only 1, 2 or 3 spatial axes are supported.
    #[error("arrays with {0} axes are not supported (1, 2 or 3 spatial axes expected)")]
    Dimensionality(usize),
    /// An option value is out of range (for example a percentile above 100).
    #[error("invalid option: {0}")]
    InvalidOption(String),
}

/// Result type of medseg-metrics.
pub type Result<T> = std::result::Result<T, MetricsError>;
