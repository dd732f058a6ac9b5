//! The error type shared by the medseg library crates.

use std::path::PathBuf;

/// Result alias used across medseg library crates.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in medseg library code. Each variant names the
/// file, key or value at fault and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file whose content is not what its format requires.
    #[error("{path}: {message}")]
    Format {
        /// The file at fault.
        path: PathBuf,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A row of a CSV manifest at fault.
    #[error("{path}, row {row}: {message}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// One-based data row number (the header is row 0).
        row: usize,
        /// What was wrong.
        message: String,
    },
    /// Array shapes that do not agree.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A value (argument, config entry, parameter) outside what is accepted.
    #[error("invalid value for `{key}`: {message}")]
    InvalidValue {
        /// The key, argument or parameter name.
        key: String,
        /// What was wrong and what was expected.
        message: String,
    },
    /// Any other error, with a message.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Builds an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::Format`] for `path`.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Builds an [`Error::InvalidValue`] for `key`.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidValue {
            key: key.into(),
            message: message.into(),
        }
    }
}
