//! A native Flower node: a medseg site that joins a Flower federation (a
//! `flower-superlink` with a ServerApp and Flower's own strategies) and
//! trains with medseg.
//!
//! The pieces, bottom up: [`proto`], the Fleet API's messages generated at
//! build time from medseg's own `proto/fleet.proto` (wire-compatible with
//! the pinned release, [`FLOWER_VERSION`]); [`npy`], arrays as NumPy
//! serialises them; [`records`], Flower's records; [`objects`], messages
//! as content-addressed object trees; [`transport`], the Fleet API over
//! HTTP with node authentication; [`node`], the node's loop (register,
//! activate, heartbeats, pull, train or evaluate, push, reconnect).

pub mod config;
pub mod node;
pub mod npy;
pub mod objects;
pub mod records;
pub mod transport;

/// The Flower release whose Fleet API this node speaks (its `.proto`
/// descriptors and object formats were read from this release).
pub const FLOWER_VERSION: &str = "1.42.0";

/// The Fleet API's messages (package `flwr.proto`), generated from
/// `proto/fleet.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/flwr.proto.rs"));
}

pub use config::{NodeConfig, NodeSettings};
pub use node::{Node, NodeOptions, NodeSummary};
pub use objects::{deflate_message, inflate_message, object_id, Deflated, FlowerMessage};
pub use records::{
    ArrayRecord, ConfigRecord, ConfigValue, FlowerArray, MetricRecord, MetricValue, Record,
    RecordDict,
};
pub use transport::{FleetClient, NodeIdentity, Tls};

use std::path::PathBuf;

/// What can go wrong in a Flower node. Messages name the call, the object,
/// the array or the config key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlowerError {
    /// The SuperLink could not be reached (refused, reset, timed out).
    #[error("{call}: cannot reach the SuperLink: {msg}")]
    Transport {
        /// The Fleet call.
        call: String,
        /// What the connection reported.
        msg: String,
    },
    /// The SuperLink answered with an HTTP error.
    #[error("{call}: the SuperLink answered HTTP {status}: {body}")]
    Status {
        /// The Fleet call.
        call: String,
        /// The HTTP status.
        status: u16,
        /// The start of its body (Flower's error JSON).
        body: String,
    },
    /// A message, object, record or array that is not what it should be.
    #[error("{0}")]
    Content(String),
    /// A bad node config or key file.
    #[error("{path}: {msg}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong (naming the key).
        msg: String,
    },
    /// Training, validation or weights errors of the site.
    #[error(transparent)]
    Fed(#[from] crate::FedError),
}

impl FlowerError {
    /// Whether retrying later may help (the SuperLink is down or
    /// restarting, or answered with a server error).
    pub fn is_transient(&self) -> bool {
        match self {
            // a certificate the node does not trust stays untrusted
            FlowerError::Transport { msg, .. } => !msg.contains("invalid peer certificate"),
            FlowerError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
    /// Whether the SuperLink no longer knows this node (it restarted and
    /// lost its state): the node should register and activate again.
    pub fn is_unknown_node(&self) -> bool {
        matches!(
            self,
            FlowerError::Status {
                status: 401 | 403,
                ..
            }
        ) || matches!(self, FlowerError::Status { body, .. } if body.contains("not recognize") || body.contains("Invalid node"))
    }
}

#[cfg(test)]
mod tests {
    use super::FlowerError;

    #[test]
    fn refused_connections_are_retried_untrusted_certificates_are_not() {
        let t = |msg: &str| FlowerError::Transport {
            call: "activate-node".into(),
            msg: msg.into(),
        };
        assert!(t("Connection Failed: Connect error: Connection refused").is_transient());
        assert!(
            !t("tls connection init failed: invalid peer certificate: UnknownIssuer")
                .is_transient()
        );
        let s = |status: u16| FlowerError::Status {
            call: "pull-messages".into(),
            status,
            body: String::new(),
        };
        assert!(s(503).is_transient() && !s(412).is_transient());
        assert!(s(401).is_unknown_node() && !s(500).is_unknown_node());
    }
}
