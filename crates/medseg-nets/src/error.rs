//! Error type of the crate.

use std::path::PathBuf;

/// Errors from building, saving and loading networks.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A configuration value is missing, misspelt or out of range.
    #[error("network configuration: {0}")]
    Config(String),
    /// The registry holds no network of this name.
    #[error("unknown network `{name}`; known networks: {known}")]
    UnknownNetwork {
        /// The name asked for.
        name: String,
        /// The registered names, comma separated.
        known: String,
    },
    /// A checkpoint does not fit the network, or is malformed.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with [`NetError`].
pub type Result<T> = std::result::Result<T, NetError>;
