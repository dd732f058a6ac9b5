//! CENet (being written; see the module's owner). Placeholder so that the
//! registry wiring compiles: building it returns a configuration error.

use candle_nn::VarBuilder;

use crate::error::{NetError, Result};
use crate::SegNetwork;

/// Builds a CENet from its JSON configuration (registry entry `CENet`).
pub(crate) fn build_from_config(
    config: &serde_json::Value,
    _vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    Err(NetError::Config(format!("CENet is not available yet: {config}")))
}
