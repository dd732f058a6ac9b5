//! Pre-trained encoder weights: exporting the encoder of a network (what
//! self-supervised pre-training writes) and loading such a file into a
//! network by name (`network.pretrained = PATH`).
//!
//! The two keys the trainer reads from a network table, `pretrained` and
//! `freeze_encoder`, are not the network's own: [`split_pretrained`] takes
//! them out, and [`NetRegistry::build`](crate::NetRegistry::build) ignores
//! them, so any registered network accepts them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Tensor, Var};
use candle_nn::VarMap;

use crate::error::{NetError, Result};
use crate::SegNetwork;

/// Network-table key naming a file of pre-trained weights to load after
/// the network is built.
pub const PRETRAINED_KEY: &str = "pretrained";
/// Network-table key: for how many training iterations the pre-trained
/// tensors stay frozen (0, the default: never).
pub const FREEZE_KEY: &str = "freeze_encoder";
/// Metadata key of an encoder file: the configuration of the network it
/// was taken from.
pub const ENCODER_CONFIG_KEY: &str = "medseg_config";
/// Metadata key of an encoder file: how it was made (method, iterations).
pub const ENCODER_ORIGIN_KEY: &str = "medseg_pretrain";
/// Metadata key of the format tag.
pub const ENCODER_FORMAT_KEY: &str = "medseg_format";
const ENCODER_FORMAT: &str = "medseg-nets/encoder-1";

/// What the network table asks for besides the network itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PretrainedSpec {
    /// The weights file to load (`network.pretrained`), if any.
    pub path: Option<PathBuf>,
    /// Iterations during which the loaded tensors are not updated
    /// (`network.freeze_encoder`).
    pub freeze_iterations: usize,
}

fn ck_err(path: &Path, msg: impl Into<String>) -> NetError {
    NetError::Checkpoint {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Splits `pretrained` and `freeze_encoder` off a network table, checking
/// their types. Returns the table without them and what they asked for.
pub fn split_pretrained(config: &serde_json::Value) -> Result<(serde_json::Value, PretrainedSpec)> {
    let mut rest = config.clone();
    let mut spec = PretrainedSpec::default();
    let Some(o) = rest.as_object_mut() else {
        return Ok((rest, spec));
    };
    if let Some(v) = o.remove(PRETRAINED_KEY) {
        let p = v.as_str().filter(|s| !s.is_empty()).ok_or_else(|| {
            NetError::Config(format!(
                "network.{PRETRAINED_KEY} must be the path of a weights file (a string), got {v}"
            ))
        })?;
        spec.path = Some(PathBuf::from(p));
    }
    if let Some(v) = o.remove(FREEZE_KEY) {
        spec.freeze_iterations = v.as_u64().ok_or_else(|| {
            NetError::Config(format!(
                "network.{FREEZE_KEY} must be a number of iterations (a non-negative integer), got {v}"
            ))
        })? as usize;
        if spec.freeze_iterations > 0 && spec.path.is_none() {
            return Err(NetError::Config(format!(
                "network.{FREEZE_KEY} freezes pre-trained tensors: it needs network.{PRETRAINED_KEY}"
            )));
        }
    }
    Ok((rest, spec))
}

/// The tensors of `varmap` whose names start with one of `prefixes`,
/// sorted by name (running statistics included).
pub fn encoder_tensors(varmap: &VarMap, prefixes: &[String]) -> Vec<(String, Tensor)> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<(String, Tensor)> = data
        .iter()
        .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p.as_str())))
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Writes the encoder of `net` (the tensors of `varmap` under
/// [`SegNetwork::encoder_prefixes`]) to `path` as safetensors, with the
/// network's configuration and `origin` (e.g. the pre-training method) in
/// the metadata; written to a temporary file and renamed. Returns the
/// number of tensors written.
pub fn save_encoder(
    path: &Path,
    varmap: &VarMap,
    net: &dyn SegNetwork,
    origin: &serde_json::Value,
) -> Result<usize> {
    let prefixes = net.encoder_prefixes();
    if prefixes.is_empty() {
        return Err(NetError::Config(format!(
            "the network {} does not expose its encoder (SegNetwork::encoder_prefixes is empty)",
            net.config()
                .get("name")
                .and_then(|v| v.as_str())
                .unwrap_or("?")
        )));
    }
    let tensors: BTreeMap<String, Tensor> =
        encoder_tensors(varmap, &prefixes).into_iter().collect();
    if tensors.is_empty() {
        return Err(ck_err(
            path,
            format!("no tensor of the network starts with {prefixes:?}"),
        ));
    }
    let mut meta = HashMap::new();
    meta.insert(ENCODER_CONFIG_KEY.to_string(), net.config().to_string());
    meta.insert(ENCODER_ORIGIN_KEY.to_string(), origin.to_string());
    meta.insert(ENCODER_FORMAT_KEY.to_string(), ENCODER_FORMAT.to_string());
    let bytes = safetensors::serialize(&tensors, Some(meta))
        .map_err(|e| ck_err(path, format!("cannot serialise: {e}")))?;
    medseg_core::write_atomic(path, &bytes).map_err(|e| match e {
        medseg_core::Error::Io { path, source } => NetError::Io { path, source },
        other => ck_err(path, other.to_string()),
    })?;
    Ok(tensors.len())
}

/// Loads every tensor of the safetensors file `path` into the tensor of the
/// same name in `varmap` (a network built beforehand). Every file tensor
/// must exist in the network with the same shape; tensors of the network
/// that the file lacks keep their values (a pre-trained encoder leaves the
/// decoder as initialised). All mismatches are listed in one error, with
/// the network's names under the same first component as a hint. Returns
/// the loaded names, sorted.
pub fn load_pretrained(path: &Path, varmap: &VarMap) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|source| NetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| ck_err(path, format!("not a safetensors file: {e}")))?;
    let mut names: Vec<&str> = st.names();
    names.sort_unstable();
    if names.is_empty() {
        return Err(ck_err(path, "the file holds no tensor"));
    }
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut unknown = Vec::new();
    let mut misshaped = Vec::new();
    let mut loads: Vec<(String, Var, safetensors::tensor::TensorView)> = Vec::new();
    for n in names {
        let view = st
            .tensor(n)
            .map_err(|e| ck_err(path, format!("tensor {n}: {e}")))?;
        match data.get(n) {
            None => unknown.push(n.to_string()),
            Some(var) if var.dims() != view.shape() => misshaped.push(format!(
                "{n}: file {:?} vs network {:?}",
                view.shape(),
                var.dims()
            )),
            Some(var) => loads.push((n.to_string(), var.clone(), view)),
        }
    }
    if !unknown.is_empty() || !misshaped.is_empty() {
        let mut parts = Vec::new();
        if !unknown.is_empty() {
            let first = unknown[0].split('.').next().unwrap_or("");
            let mut near: Vec<&String> = data
                .keys()
                .filter(|k| k.split('.').next() == Some(first))
                .collect();
            near.sort();
            let hint = if near.is_empty() {
                let mut all: Vec<&String> = data.keys().collect();
                all.sort();
                format!(
                    " (the network has no tensor under `{first}.`; its names begin {})",
                    list(&all, 4)
                )
            } else {
                format!(
                    " (the network's tensors under `{first}.`: {})",
                    list(&near, 6)
                )
            };
            parts.push(format!(
                "{} tensor(s) not in the network: {}{hint}",
                unknown.len(),
                list(&unknown.iter().collect::<Vec<_>>(), 6)
            ));
        }
        if !misshaped.is_empty() {
            parts.push(format!(
                "{} tensor(s) of another shape: {}",
                misshaped.len(),
                list(&misshaped.iter().collect::<Vec<_>>(), 6)
            ));
        }
        return Err(ck_err(
            path,
            format!(
                "does not fit network.{PRETRAINED_KEY}'s network: {}",
                parts.join("; ")
            ),
        ));
    }
    let mut loaded = Vec::with_capacity(loads.len());
    for (n, var, view) in loads {
        let t = candle_core::safetensors::Load::load(&view, var.device())
            .map_err(|e| ck_err(path, format!("tensor {n}: {e}")))?
            .to_dtype(var.dtype())?;
        var.set(&t)?;
        loaded.push(n);
    }
    Ok(loaded)
}

/// `items` joined by ", ", the first `max` of them and a count of the rest.
fn list<T: std::fmt::Display>(items: &[T], max: usize) -> String {
    let mut s = items
        .iter()
        .take(max)
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        s.push_str(&format!(" ... and {} more", items.len() - max));
    }
    s
}

/// The variables of `varmap` named in `names` (e.g. what
/// [`load_pretrained`] loaded), in that order; names not in the VarMap are
/// skipped.
pub fn vars_named(varmap: &VarMap, names: &[String]) -> Vec<Var> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    names.iter().filter_map(|n| data.get(n).cloned()).collect()
}
