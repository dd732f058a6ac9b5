//! PyTorch `.pt`/`.pth` checkpoints (`torch.save`'s zip + pickle format):
//! a bare state dict, or PyMIC's `{"model_state_dict": ..., "iteration":
//! ..., "optimizer_state_dict": ...}`. The pickle is read by
//! `candle_core::pickle`; tensors are read one at a time, and only when
//! their shape is the one the network expects, so memory stays bounded by
//! the network's size whatever the file claims.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use candle_core::pickle::{read_pth_tensor_info, PthTensors, TensorInfo};
use candle_core::DType;
use candle_nn::VarMap;

use crate::error::{NetError, Result};

/// The entry PyMIC's trainer stores the network weights under.
pub const PYMIC_STATE_KEY: &str = "model_state_dict";
/// Largest `data.pkl` read (the pickle of the object graph, not the tensor
/// data): 64 MiB, far above any state dict's.
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;

fn err(path: &Path, msg: impl Into<String>) -> NetError {
    NetError::Checkpoint {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Whether `path` looks like a PyTorch checkpoint: a zip archive (what
/// `torch.save` writes since PyTorch 1.6) or a legacy pickle (protocol 2+,
/// first byte 0x80) that is not a safetensors file (an 8-byte header
/// length, whose first byte may be 0x80 too, then `{`).
pub fn is_pytorch_checkpoint(path: &Path) -> bool {
    let mut head = [0u8; 9];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let n = f.read(&mut head).unwrap_or(0);
    if n >= 4 && &head[..4] == b"PK\x03\x04" {
        return true;
    }
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let header_len = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    let safetensors = n == 9 && head[8] == b'{' && header_len.saturating_add(8) <= size;
    n >= 1 && head[0] == 0x80 && !safetensors
}

/// Checks the zip layout: one `*/data.pkl` of bounded size.
fn check_archive(path: &Path) -> Result<()> {
    let mut head = [0u8; 4];
    let mut f = std::fs::File::open(path).map_err(|source| NetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if f.read_exact(&mut head).is_err() {
        return Err(err(path, "file too short to be a checkpoint"));
    }
    if head[0] == 0x80 {
        return Err(err(
            path,
            "a PyTorch file in the legacy (pre-1.6, non-zip) format, which medseg does not \
             read; load it in PyTorch and save it again with torch.save(obj, path)",
        ));
    }
    if &head != b"PK\x03\x04" {
        return Err(err(
            path,
            "neither safetensors nor a PyTorch zip checkpoint",
        ));
    }
    let file = std::fs::File::open(path).map_err(|source| NetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| err(path, format!("not a readable zip archive: {e}")))?;
    let mut pickles = 0;
    for i in 0..zip.len() {
        let entry = zip
            .by_index(i)
            .map_err(|e| err(path, format!("zip entry {i}: {e}")))?;
        let name = entry
            .name()
            .map_err(|e| err(path, format!("zip entry {i}: {e}")))?
            .into_owned();
        if name.ends_with("data.pkl") {
            pickles += 1;
            if entry.size() > MAX_PICKLE_BYTES {
                return Err(err(
                    path,
                    format!(
                        "{} is {} bytes, above the {} bytes a state dict needs",
                        name,
                        entry.size(),
                        MAX_PICKLE_BYTES
                    ),
                ));
            }
        }
    }
    if pickles != 1 {
        return Err(err(
            path,
            format!("expected one data.pkl in the archive, found {pickles}"),
        ));
    }
    Ok(())
}

/// The tensor entries of the state dict: under `model_state_dict` when the
/// file holds PyMIC's training dict, else the top-level dict. A
/// `module.` prefix (nn.DataParallel) is removed.
fn state_dict(path: &Path) -> Result<HashMap<String, TensorInfo>> {
    check_archive(path)?;
    let infos = match read_pth_tensor_info(path, false, Some(PYMIC_STATE_KEY)) {
        Ok(i) => i,
        Err(e) if e.to_string().contains("not found") => read_pth_tensor_info(path, false, None)
            .map_err(|e| err(path, format!("cannot read the pickle: {e}")))?,
        Err(e) => return Err(err(path, format!("cannot read the pickle: {e}"))),
    };
    if infos.is_empty() {
        return Err(err(
            path,
            format!(
                "no tensors found: expected a state dict, or a dict with `{PYMIC_STATE_KEY}` \
                 (PyMIC's checkpoints)"
            ),
        ));
    }
    Ok(infos
        .into_iter()
        .map(|t| {
            (
                t.name
                    .strip_prefix("module.")
                    .unwrap_or(&t.name)
                    .to_string(),
                t,
            )
        })
        .collect())
}

/// Copies the state dict of the PyTorch checkpoint `path` into `varmap`, by
/// name. Every variable must be present with the same shape; file tensors
/// the VarMap lacks are errors too, except names ending in one of
/// `ignore_suffixes`. All problems are listed in one error.
pub(crate) fn fill_from_pth(path: &Path, varmap: &VarMap, ignore_suffixes: &[&str]) -> Result<()> {
    let infos = state_dict(path)?;
    // tensors are looked up by their names in the file
    let by_file_name: HashMap<&str, &TensorInfo> =
        infos.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let pth = PthTensors::new(path, Some(PYMIC_STATE_KEY))
        .or_else(|_| PthTensors::new(path, None))
        .map_err(|e| err(path, format!("cannot read the pickle: {e}")))?;
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let (mut missing, mut misshaped, mut unexpected, mut bad_dtype) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut loads = Vec::new();
    for name in names {
        let var = &data[name];
        match by_file_name.get(name.as_str()) {
            None => missing.push(name.clone()),
            Some(t) if t.layout.dims() != var.dims() => misshaped.push(format!(
                "{name}: file {:?} vs network {:?}",
                t.layout.dims(),
                var.dims()
            )),
            Some(t) if !matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64) => {
                bad_dtype.push(format!("{name}: {:?}", t.dtype))
            }
            Some(t) => loads.push((var.clone(), t.name.clone())),
        }
    }
    let mut file_names: Vec<&String> = infos.keys().collect();
    file_names.sort();
    for n in file_names {
        if !data.contains_key(n) && !ignore_suffixes.iter().any(|s| n.ends_with(s)) {
            unexpected.push(n.clone());
        }
    }
    let mut parts = Vec::new();
    for (what, list) in [
        ("missing tensors", &missing),
        ("mis-shaped tensors", &misshaped),
        ("unexpected tensors", &unexpected),
        ("tensors of a non-float type", &bad_dtype),
    ] {
        if !list.is_empty() {
            parts.push(format!("{what}: {}", list.join(", ")));
        }
    }
    if !parts.is_empty() {
        return Err(err(path, parts.join(". ")));
    }
    for (var, file_name) in loads {
        let t = pth
            .get(&file_name)
            .map_err(|e| err(path, format!("cannot read tensor {file_name}: {e}")))?
            .ok_or_else(|| err(path, format!("tensor {file_name} vanished")))?
            .to_device(var.device())?
            .to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}
