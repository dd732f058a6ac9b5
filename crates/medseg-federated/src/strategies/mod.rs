//! The built-in strategies.

pub mod fedavg;
pub mod fedbn;
pub mod fedopt;
pub mod segviz;

use serde::de::DeserializeOwned;

use crate::error::{FedError, Result};

/// Reads typed parameters from JSON (`null` means all defaults); unknown
/// keys are errors naming the key.
pub(crate) fn parse_params<P: DeserializeOwned + Default>(
    name: &str,
    params: &serde_json::Value,
) -> Result<P> {
    if params.is_null() {
        return Ok(P::default());
    }
    serde_json::from_value(params.clone()).map_err(|e| FedError::Params {
        name: name.to_string(),
        msg: e.to_string(),
    })
}

/// An error unless `ok`.
pub(crate) fn ensure(name: &str, ok: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(FedError::Params {
            name: name.to_string(),
            msg: msg(),
        })
    }
}

/// Parameters as JSON (they always serialise).
pub(crate) fn to_json<P: serde::Serialize>(p: &P) -> serde_json::Value {
    serde_json::to_value(p).unwrap_or(serde_json::Value::Null)
}
