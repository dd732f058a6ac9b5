//! The error type of the crate.

use std::path::PathBuf;

/// What can go wrong when moving and aggregating weights. Every message
/// names the site, array (key), parameter or file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FedError {
    /// A round brought no client update.
    #[error("round {round}: no client updates to aggregate")]
    NoUpdates {
        /// The round number given to the aggregator.
        round: usize,
    },
    /// A site reported zero training examples.
    #[error("site `{site}`: num_examples is 0, so its update would have no weight in the average")]
    NoExamples {
        /// The site.
        site: String,
    },
    /// Two updates of one round came from the same site.
    #[error("site `{site}` sent more than one update in round {round}")]
    DuplicateSite {
        /// The site.
        site: String,
        /// The round.
        round: usize,
    },
    /// An update lacks an array that the global model shares.
    #[error("site `{site}`: array `{key}` of the global model is missing from its update")]
    MissingKey {
        /// The site.
        site: String,
        /// The array name.
        key: String,
    },
    /// An update has an array that the global model does not have (and
    /// that is not local to the site).
    #[error("site `{site}`: its update has array `{key}`, which the global model lacks")]
    UnexpectedKey {
        /// The site.
        site: String,
        /// The array name.
        key: String,
    },
    /// An array of an update has another shape than the global one.
    #[error(
        "site `{site}`: array `{key}` has shape {found:?}, the global model's has {expected:?}"
    )]
    ShapeMismatch {
        /// The site.
        site: String,
        /// The array name.
        key: String,
        /// The global array's shape.
        expected: Vec<usize>,
        /// The update's array shape.
        found: Vec<usize>,
    },
    /// An array of an update holds NaN or an infinity (a diverged client).
    #[error("site `{site}`: array `{key}` holds a non-finite value (NaN or infinity)")]
    NonFinite {
        /// The site.
        site: String,
        /// The array name.
        key: String,
    },
    /// A named array does not fit where it goes (VarMap, safetensors,
    /// server state).
    #[error("array `{key}`: {msg}")]
    Array {
        /// The array name.
        key: String,
        /// What is wrong.
        msg: String,
    },
    /// Bad aggregator parameters (unknown key, value out of range).
    #[error("aggregator `{name}` params: {msg}")]
    Params {
        /// The aggregator's name.
        name: String,
        /// What is wrong, naming the key.
        msg: String,
    },
    /// A name that no aggregator is registered under.
    #[error("aggregator `{name}` is unknown; registered aggregators: {known}")]
    UnknownAggregator {
        /// The name asked for.
        name: String,
        /// The registered names, comma-separated.
        known: String,
    },
    /// Per-site predictions that cannot be assembled.
    #[error("site `{site}`: {msg}")]
    Prediction {
        /// The site.
        site: String,
        /// What is wrong.
        msg: String,
    },
    /// A site of a federation that cannot be set up or trained.
    #[error("site `{site}`: {msg}")]
    Site {
        /// The site.
        site: String,
        /// What is wrong, naming the file or key.
        msg: String,
    },
    /// A federation config with a bad key or value.
    #[error("{}: {msg}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong, naming the key.
        msg: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Bytes that are not a safetensors file.
    #[error("not safetensors data: {0}")]
    Safetensors(String),
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`FedError`].
pub type Result<T> = std::result::Result<T, FedError>;
