//! MultiResUNet (being written; see the module's owner). Placeholder so that the
//! registry wiring compiles: building it returns a configuration error.

use candle_nn::VarBuilder;

use crate::error::{NetError, Result};
use crate::SegNetwork;

/// Builds a MultiResUNet from its JSON configuration (registry entry `MultiResUNet`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    _vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    Err(NetError::Config(format!("MultiResUNet is not available yet: {config}")))
}
