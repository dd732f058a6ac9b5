//! The error type of the learners.

/// Errors from setting up or running training.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    /// Configuration problems (the message names the key).
    #[error("config: {0}")]
    Config(String),
    /// Data loading or file errors.
    #[error(transparent)]
    Data(#[from] medseg_core::Error),
    /// Network construction or checkpoint errors.
    #[error(transparent)]
    Net(#[from] medseg_nets::NetError),
    /// Loss construction errors.
    #[error("training.loss: {0}")]
    Loss(#[from] medseg_losses::Error),
    /// Inference (validation) errors (boxed: the error type stays small).
    #[error("validation: {0}")]
    Infer(Box<medseg_infer::InferError>),
    /// Tensor errors during a step.
    #[error("{context}: {source}")]
    Tensor {
        /// What was being done.
        context: String,
        /// The candle error.
        #[source]
        source: candle_core::Error,
    },
    /// Anything else, with a message naming what is at fault.
    #[error("{0}")]
    Other(String),
}

impl From<medseg_infer::InferError> for LearnError {
    fn from(e: medseg_infer::InferError) -> Self {
        LearnError::Infer(Box::new(e))
    }
}

/// Result alias of this crate.
pub type Result<T, E = LearnError> = std::result::Result<T, E>;

/// Adds context to candle errors.
pub trait TensorContext<T> {
    /// Wraps the error with `context`.
    fn ctx(self, context: &str) -> Result<T>;
}

impl<T> TensorContext<T> for candle_core::Result<T> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|source| LearnError::Tensor {
            context: context.to_string(),
            source,
        })
    }
}
