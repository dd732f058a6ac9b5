//! Checkpoints: safetensors files holding the weights (PyTorch names) and
//! the network configuration as JSON in the safetensors metadata
//! (`medseg_config`), plus import of PyTorch state dicts saved as
//! safetensors or with `torch.save` (see the `pytorch` module).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::safetensors::Load;
use candle_core::{Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::error::{NetError, Result};
use crate::pytorch::{fill_from_pth, is_pytorch_checkpoint};
use crate::registry::build_network;
use crate::SegNetwork;

/// Metadata key holding the network configuration.
pub const CONFIG_KEY: &str = "medseg_config";
/// Metadata key holding the format tag.
pub const FORMAT_KEY: &str = "medseg_format";
const FORMAT: &str = "medseg-nets/1";

fn ck_err(path: &Path, msg: impl Into<String>) -> NetError {
    NetError::Checkpoint {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn is_running_stat(name: &str) -> bool {
    name.ends_with(".running_mean") || name.ends_with(".running_var")
}

/// The trainable variables of a VarMap (BatchNorm running statistics are
/// left out), sorted by name: what an optimiser should update.
pub fn trainable_vars(varmap: &VarMap) -> Vec<Var> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<(&String, &Var)> = data.iter().filter(|(k, _)| !is_running_stat(k)).collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v.into_iter().map(|(_, var)| var.clone()).collect()
}

/// Number of trainable scalars in a VarMap.
pub fn count_parameters(varmap: &VarMap) -> usize {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    data.iter()
        .filter(|(k, _)| !is_running_stat(k))
        .map(|(_, v)| v.elem_count())
        .sum()
}

/// Writes `bytes` with [`medseg_core::write_atomic`], keeping this crate's
/// error type.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    medseg_core::write_atomic(path, bytes).map_err(|e| match e {
        medseg_core::Error::Io { path, source } => NetError::Io { path, source },
        other => ck_err(path, other.to_string()),
    })
}

/// Saves every tensor of `varmap` (weights and running statistics) with
/// `config` in the metadata. The file is written to a temporary file in
/// the same directory and renamed.
pub fn save_checkpoint(path: &Path, varmap: &VarMap, config: &serde_json::Value) -> Result<()> {
    let tensors: BTreeMap<String, Tensor> = {
        let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    };
    let mut meta = HashMap::new();
    meta.insert(CONFIG_KEY.to_string(), config.to_string());
    meta.insert(FORMAT_KEY.to_string(), FORMAT.to_string());
    let bytes = safetensors::serialize(&tensors, Some(meta))
        .map_err(|e| ck_err(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, &bytes)
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| NetError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn config_from_bytes(path: &Path, bytes: &[u8]) -> Result<serde_json::Value> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| ck_err(path, format!("not a safetensors file: {e}")))?;
    let text = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CONFIG_KEY))
        .ok_or_else(|| ck_err(path, format!("no `{CONFIG_KEY}` metadata")))?;
    serde_json::from_str(text).map_err(|e| ck_err(path, format!("bad `{CONFIG_KEY}` JSON: {e}")))
}

/// Reads the network configuration stored in a checkpoint.
pub fn read_checkpoint_config(path: &Path) -> Result<serde_json::Value> {
    config_from_bytes(path, &read_bytes(path)?)
}

/// Keys whose difference does not make weights incompatible.
const IGNORED_CONFIG_KEYS: [&str; 1] = ["seed"];

fn config_diff(stored: &serde_json::Value, expected: &serde_json::Value) -> Vec<String> {
    let (Some(a), Some(b)) = (stored.as_object(), expected.as_object()) else {
        return if stored == expected {
            Vec::new()
        } else {
            vec![format!("stored {stored} vs expected {expected}")]
        };
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !IGNORED_CONFIG_KEYS.contains(&k.as_str()))
        .filter_map(|k| {
            let (x, y) = (a.get(k), b.get(k));
            (x != y).then(|| {
                let show = |v: Option<&serde_json::Value>| {
                    v.map_or("(absent)".to_string(), |v| v.to_string())
                };
                format!("`{k}`: checkpoint {} vs network {}", show(x), show(y))
            })
        })
        .collect()
}

/// Copies tensors from safetensors bytes into `varmap`, by name. Every
/// tensor of the VarMap must be present with the same shape; file tensors
/// that the VarMap lacks are errors too, except names ending in one of
/// `ignore_suffixes`. All problems are listed in one error.
fn fill_varmap(path: &Path, bytes: &[u8], varmap: &VarMap, ignore_suffixes: &[&str]) -> Result<()> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| ck_err(path, format!("not a safetensors file: {e}")))?;
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    let mut unexpected = Vec::new();
    let mut loads = Vec::new();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        match st.tensor(name) {
            Ok(view) => {
                if view.shape() != var.dims() {
                    misshaped.push(format!(
                        "{name}: file {:?} vs network {:?}",
                        view.shape(),
                        var.dims()
                    ));
                } else {
                    loads.push((var.clone(), view));
                }
            }
            Err(_) => missing.push(name.clone()),
        }
    }
    let mut file_names = st.names();
    file_names.sort();
    for n in file_names {
        if !data.contains_key(n) && !ignore_suffixes.iter().any(|s| n.ends_with(s)) {
            unexpected.push(n.to_string());
        }
    }
    if !(missing.is_empty() && misshaped.is_empty() && unexpected.is_empty()) {
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!("missing tensors: {}", missing.join(", ")));
        }
        if !misshaped.is_empty() {
            parts.push(format!("mis-shaped tensors: {}", misshaped.join("; ")));
        }
        if !unexpected.is_empty() {
            parts.push(format!("unexpected tensors: {}", unexpected.join(", ")));
        }
        return Err(ck_err(path, parts.join(". ")));
    }
    for (var, view) in loads {
        let t = view
            .load(var.device())
            .map_err(|e| ck_err(path, format!("cannot read tensor: {e}")))?
            .to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

/// Loads a checkpoint written by [`save_checkpoint`] into `varmap` (built
/// by the network beforehand). With `expected` (the network's
/// [`SegNetwork::config`]), the stored configuration must match it (the
/// `seed` key aside); the error names the differing keys. Missing,
/// unexpected and mis-shaped tensors are named in the error. Returns the
/// stored configuration.
pub fn load_checkpoint(
    path: &Path,
    varmap: &VarMap,
    expected: Option<&serde_json::Value>,
) -> Result<serde_json::Value> {
    let bytes = read_bytes(path)?;
    let stored = config_from_bytes(path, &bytes)?;
    if let Some(exp) = expected {
        let diff = config_diff(&stored, exp);
        if !diff.is_empty() {
            return Err(ck_err(
                path,
                format!("configuration differs: {}", diff.join("; ")),
            ));
        }
    }
    fill_varmap(path, &bytes, varmap, &[])?;
    Ok(stored)
}

/// Imports a PyTorch state dict into `varmap`: saved as safetensors (e.g.
/// `safetensors.torch.save_file(model.state_dict(), path)`) or with
/// `torch.save` (`.pt`/`.pth`, zip + pickle), either the state dict itself
/// or PyMIC's training checkpoint `{"model_state_dict": ..., ...}`.
/// Names must be PyTorch's (the medseg networks use PyMIC's module paths;
/// a `module.` prefix from nn.DataParallel is removed);
/// `num_batches_tracked` entries are ignored; anything else missing,
/// unexpected or mis-shaped is an error naming the tensors.
pub fn import_pytorch(path: &Path, varmap: &VarMap) -> Result<()> {
    if is_pytorch_checkpoint(path) {
        return fill_from_pth(path, varmap, &[".num_batches_tracked"]);
    }
    let bytes = read_bytes(path)?;
    fill_varmap(path, &bytes, varmap, &[".num_batches_tracked"])
}

/// Builds a network and loads its weights from a medseg checkpoint
/// (safetensors, which carries its network configuration) or from a
/// PyTorch checkpoint (`torch.save`'s `.pt`/`.pth`, e.g. PyMIC's
/// `*_best.pt`), which carries none: `config` (a `[network]` table, e.g.
/// from `medseg-config import-pymic`) describes the network then.
///
/// # Errors
/// [`NetError::Checkpoint`] for a PyTorch checkpoint without `config`, and
/// as [`load_network`] and [`import_pytorch`].
pub fn load_network_with(
    path: &Path,
    device: &Device,
    config: Option<&serde_json::Value>,
) -> Result<(VarMap, Box<dyn SegNetwork>)> {
    if !is_pytorch_checkpoint(path) {
        return load_network(path, device);
    }
    let config = config.ok_or_else(|| {
        ck_err(
            path,
            "a PyTorch checkpoint carries no network configuration: give an experiment \
             config whose [network] section describes the network",
        )
    })?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, candle_core::DType::F32, device);
    let net = build_network(config, vb)?;
    fill_from_pth(path, &varmap, &[".num_batches_tracked"])?;
    Ok((varmap, net))
}

/// A copy of `network` for inference whose weights are `varmap`'s values as
/// plain tensors (detached: the same storage, no copy). Its forward records
/// no autograd graph, so every intermediate activation is freed as soon as
/// the next layer has read it, as under PyTorch's `no_grad`; a forward
/// through the variables themselves keeps every activation alive, linked
/// from the output, until the output is dropped. The copy is built from
/// `network.config()` through the built-in registry, like [`load_network`].
pub fn inference_copy(
    network: &dyn SegNetwork,
    varmap: &VarMap,
    device: &Device,
) -> Result<Box<dyn SegNetwork>> {
    let tensors: HashMap<String, Tensor> = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| NetError::Config("variable map poisoned".into()))?;
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect()
    };
    let vb = VarBuilder::from_tensors(tensors, candle_core::DType::F32, device);
    build_network(&network.config(), vb)
}

/// Builds the network stored in a checkpoint and loads its weights.
pub fn load_network(path: &Path, device: &Device) -> Result<(VarMap, Box<dyn SegNetwork>)> {
    let bytes = read_bytes(path)?;
    let config = config_from_bytes(path, &bytes)?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, candle_core::DType::F32, device);
    let net = build_network(&config, vb)?;
    fill_varmap(path, &bytes, &varmap, &[])?;
    Ok((varmap, net))
}
