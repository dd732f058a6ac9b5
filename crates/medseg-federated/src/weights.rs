//! Named f32 arrays ([`Weights`]) and what a site sends back after a round
//! ([`ClientUpdate`]), with conversions from and to candle `VarMap`s and
//! safetensors.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use ndarray::{ArrayD, IxDyn};

use crate::error::{FedError, Result};

/// A model's arrays by name: the VarBuilder paths of a medseg network
/// (e.g. `encoder.in_conv.conv_conv.0.weight`, PyTorch layout), each an
/// `f32` array of any rank. Batch-norm running statistics
/// (`*.running_mean`, `*.running_var`) are arrays like any other.
///
/// Aggregation works on these plain arrays only, so the same code serves an
/// in-process simulation (convert with [`Weights::from_varmap`] and
/// [`Weights::load_into`]) and a real federation (send
/// [`Weights::to_safetensors_bytes`] over the wire).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Weights {
    arrays: BTreeMap<String, ArrayD<f32>>,
}

impl Weights {
    /// No arrays.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of arrays.
    pub fn len(&self) -> usize {
        self.arrays.len()
    }

    /// Whether there is no array.
    pub fn is_empty(&self) -> bool {
        self.arrays.is_empty()
    }

    /// Total number of scalars over all arrays.
    pub fn num_values(&self) -> usize {
        self.arrays.values().map(|a| a.len()).sum()
    }

    /// Adds (or replaces) the array `key`, returning the old one.
    pub fn insert(&mut self, key: impl Into<String>, array: ArrayD<f32>) -> Option<ArrayD<f32>> {
        self.arrays.insert(key.into(), array)
    }

    /// Removes the array `key`.
    pub fn remove(&mut self, key: &str) -> Option<ArrayD<f32>> {
        self.arrays.remove(key)
    }

    /// The array `key`.
    pub fn get(&self, key: &str) -> Option<&ArrayD<f32>> {
        self.arrays.get(key)
    }

    /// The array `key`, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut ArrayD<f32>> {
        self.arrays.get_mut(key)
    }

    /// Whether there is an array `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.arrays.contains_key(key)
    }

    /// Array names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.arrays.keys().map(String::as_str)
    }

    /// `(name, array)` pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ArrayD<f32>)> {
        self.arrays.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The underlying map.
    pub fn as_map(&self) -> &BTreeMap<String, ArrayD<f32>> {
        &self.arrays
    }

    /// The underlying map, by value.
    pub fn into_map(self) -> BTreeMap<String, ArrayD<f32>> {
        self.arrays
    }

    /// Keeps only the arrays whose name satisfies `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.arrays.retain(|k, _| keep(k));
    }

    /// A copy holding only the arrays whose name satisfies `keep` (e.g.
    /// `|k| !aggregator.is_local(k)`: what a site sends to the server).
    pub fn filtered(&self, keep: impl Fn(&str) -> bool) -> Weights {
        self.arrays
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// A site's next starting point: the arrays of `self` (the new global
    /// weights) except those for which `is_local` holds, which are taken
    /// from `site` (the site's own last weights) when it has them and from
    /// `self` otherwise (a site's first round). Local arrays that only the
    /// site has are kept too. For FedBN these are the site's normalisation
    /// arrays, for SegViz its segmentation head.
    pub fn merge_local(&self, site: &Weights, is_local: impl Fn(&str) -> bool) -> Weights {
        let mut out = Weights::new();
        for (k, v) in &self.arrays {
            let chosen = if is_local(k) {
                site.arrays.get(k).unwrap_or(v)
            } else {
                v
            };
            out.arrays.insert(k.clone(), chosen.clone());
        }
        for (k, v) in &site.arrays {
            if is_local(k) && !out.arrays.contains_key(k) {
                out.arrays.insert(k.clone(), v.clone());
            }
        }
        out
    }

    /// Every tensor of a `VarMap` (weights and running statistics),
    /// converted to `f32` and copied to host memory.
    ///
    /// # Errors
    /// A tensor that cannot be converted, naming it.
    pub fn from_varmap(varmap: &VarMap) -> Result<Self> {
        let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Weights::new();
        for (k, var) in data.iter() {
            let a = tensor_to_array(var.as_tensor()).map_err(|e| FedError::Array {
                key: k.clone(),
                msg: format!("cannot copy it out of the VarMap: {e}"),
            })?;
            out.arrays.insert(k.clone(), a);
        }
        Ok(out)
    }

    /// Named tensors (e.g. a safetensors file loaded with candle, or
    /// `trainable_vars`), converted to `f32` in host memory.
    ///
    /// # Errors
    /// A tensor that cannot be converted, naming it.
    pub fn from_tensors<'a, I>(tensors: I) -> Result<Self>
    where
        I: IntoIterator<Item = (&'a str, &'a Tensor)>,
    {
        let mut out = Weights::new();
        for (k, t) in tensors {
            let a = tensor_to_array(t).map_err(|e| FedError::Array {
                key: k.to_string(),
                msg: format!("cannot convert the tensor: {e}"),
            })?;
            out.arrays.insert(k.to_string(), a);
        }
        Ok(out)
    }

    /// The arrays as `f32` candle tensors on `device`, sorted by name.
    ///
    /// # Errors
    /// A tensor that cannot be made on `device`, naming it.
    pub fn to_tensors(&self, device: &Device) -> Result<Vec<(String, Tensor)>> {
        self.arrays
            .iter()
            .map(|(k, a)| {
                array_to_tensor(a, device)
                    .map(|t| (k.clone(), t))
                    .map_err(|e| FedError::Array {
                        key: k.clone(),
                        msg: format!("cannot make a tensor on {device:?}: {e}"),
                    })
            })
            .collect()
    }

    /// A new `VarMap` holding every array as an `f32` variable on `device`
    /// (e.g. to build a network on the aggregated weights with a
    /// `VarBuilder::from_varmap`).
    ///
    /// # Errors
    /// A tensor that cannot be made on `device`, naming it.
    pub fn to_varmap(&self, device: &Device) -> Result<VarMap> {
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
            for (k, t) in self.to_tensors(device)? {
                let var = Var::from_tensor(&t).map_err(|e| FedError::Array {
                    key: k.clone(),
                    msg: format!("cannot make a variable: {e}"),
                })?;
                data.insert(k, var);
            }
        }
        Ok(varmap)
    }

    /// Copies every array into the variable of the same name of `varmap`
    /// (converted to the variable's dtype, on its device). The names must
    /// match exactly: a variable without array, an array without variable
    /// or a shape mismatch is an error naming the array, and nothing is
    /// written then.
    ///
    /// # Errors
    /// As above.
    pub fn load_into(&self, varmap: &VarMap) -> Result<()> {
        self.load_into_except(varmap, |_| false)
    }

    /// [`Weights::load_into`] leaving alone every variable whose name
    /// satisfies `skip` (e.g. `|k| aggregator.is_local(k)`: a site takes
    /// the global weights but keeps its own normalisation layers or head).
    /// Skipped names may be absent from either side.
    ///
    /// # Errors
    /// A variable (not skipped) without array, an array (not skipped)
    /// without variable, or a shape mismatch, naming the array; nothing is
    /// written then.
    pub fn load_into_except(&self, varmap: &VarMap, skip: impl Fn(&str) -> bool) -> Result<()> {
        let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        let mut loads = Vec::new();
        for name in names {
            if skip(name) {
                continue;
            }
            let var = &data[name];
            let a = self.arrays.get(name).ok_or_else(|| FedError::Array {
                key: name.clone(),
                msg: "the VarMap has this variable but the weights lack it".into(),
            })?;
            if a.shape() != var.dims() {
                return Err(FedError::Array {
                    key: name.clone(),
                    msg: format!(
                        "shape {:?} in the weights, {:?} in the VarMap",
                        a.shape(),
                        var.dims()
                    ),
                });
            }
            loads.push((name, var, a));
        }
        if let Some(k) = self
            .arrays
            .keys()
            .find(|k| !skip(k) && !data.contains_key(*k))
        {
            return Err(FedError::Array {
                key: k.clone(),
                msg: "the weights have this array but the VarMap has no such variable".into(),
            });
        }
        for (name, var, a) in loads {
            array_to_tensor(a, var.device())
                .and_then(|t| t.to_dtype(var.dtype()))
                .and_then(|t| var.set(&t))
                .map_err(|e| FedError::Array {
                    key: name.clone(),
                    msg: format!("cannot write it into the VarMap: {e}"),
                })?;
        }
        Ok(())
    }

    /// The arrays as a safetensors file in memory (`F32`, little endian),
    /// with `metadata` in its header when given.
    ///
    /// # Errors
    /// Serialisation failure.
    pub fn to_safetensors_bytes_with(
        &self,
        metadata: Option<HashMap<String, String>>,
    ) -> Result<Vec<u8>> {
        let views: Vec<(&str, F32View<'_>)> = self
            .arrays
            .iter()
            .map(|(k, a)| (k.as_str(), F32View::new(a)))
            .collect();
        safetensors::serialize(views, metadata).map_err(|e| FedError::Safetensors(e.to_string()))
    }

    /// The arrays as a safetensors file in memory (`F32`, little endian).
    ///
    /// # Errors
    /// Serialisation failure.
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>> {
        self.to_safetensors_bytes_with(None)
    }

    /// Reads safetensors bytes (any float or integer dtype, converted to
    /// `f32`; e.g. a medseg checkpoint or a PyTorch state dict saved with
    /// `safetensors.torch.save_file`).
    ///
    /// # Errors
    /// Bytes that are not safetensors, or a tensor that cannot be
    /// converted (named).
    pub fn from_safetensors_bytes(bytes: &[u8]) -> Result<Self> {
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| FedError::Safetensors(e.to_string()))?;
        let mut out = Weights::new();
        for (name, view) in st.tensors() {
            let a = view
                .load(&Device::Cpu)
                .and_then(|t| tensor_to_array(&t))
                .map_err(|e| FedError::Array {
                    key: name.clone(),
                    msg: format!("cannot read it from safetensors: {e}"),
                })?;
            out.arrays.insert(name, a);
        }
        Ok(out)
    }

    /// Writes the arrays as a safetensors file, atomically (a temporary
    /// file in the same folder, renamed).
    ///
    /// # Errors
    /// I/O failure, naming the file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_safetensors_bytes()?;
        medseg_core::write_atomic(path, &bytes).map_err(|e| match e {
            medseg_core::Error::Io { path, source } => FedError::Io { path, source },
            other => FedError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(other.to_string()),
            },
        })
    }

    /// Reads a safetensors file (see [`Weights::from_safetensors_bytes`]).
    ///
    /// # Errors
    /// I/O failure or bad content, naming the file or the array.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| FedError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_safetensors_bytes(&bytes).map_err(|e| match e {
            FedError::Safetensors(msg) => {
                FedError::Safetensors(format!("{}: {msg}", path.display()))
            }
            other => other,
        })
    }
}

impl From<BTreeMap<String, ArrayD<f32>>> for Weights {
    fn from(arrays: BTreeMap<String, ArrayD<f32>>) -> Self {
        Self { arrays }
    }
}

impl FromIterator<(String, ArrayD<f32>)> for Weights {
    fn from_iter<T: IntoIterator<Item = (String, ArrayD<f32>)>>(iter: T) -> Self {
        Self {
            arrays: iter.into_iter().collect(),
        }
    }
}

impl IntoIterator for Weights {
    type Item = (String, ArrayD<f32>);
    type IntoIter = std::collections::btree_map::IntoIter<String, ArrayD<f32>>;
    fn into_iter(self) -> Self::IntoIter {
        self.arrays.into_iter()
    }
}

impl<'a> IntoIterator for &'a Weights {
    type Item = (&'a String, &'a ArrayD<f32>);
    type IntoIter = std::collections::btree_map::Iter<'a, String, ArrayD<f32>>;
    fn into_iter(self) -> Self::IntoIter {
        self.arrays.iter()
    }
}

/// What a site sends back after a round of local training.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientUpdate {
    /// The site's name, as used in error messages and logs.
    pub site: String,
    /// Its weights after local training. Arrays the aggregator calls local
    /// ([`Aggregator::is_local`](crate::Aggregator::is_local)) may be left
    /// out; they are ignored when present.
    pub weights: Weights,
    /// Number of training examples behind the update (the weight of the
    /// site in weighted means); must be positive.
    pub num_examples: usize,
    /// Training metrics of the round (e.g. `loss`), averaged over sites by
    /// [`weighted_metrics`](crate::weighted_metrics).
    pub metrics: BTreeMap<String, f64>,
}

impl ClientUpdate {
    /// An update without metrics.
    pub fn new(site: impl Into<String>, weights: Weights, num_examples: usize) -> Self {
        Self {
            site: site.into(),
            weights,
            num_examples,
            metrics: BTreeMap::new(),
        }
    }

    /// Adds the metric `name`.
    pub fn with_metric(mut self, name: impl Into<String>, value: f64) -> Self {
        self.metrics.insert(name.into(), value);
        self
    }
}

/// A candle tensor (any dtype, any device) as an `f32` array in host
/// memory, same shape.
///
/// # Errors
/// A dtype that cannot be converted.
pub fn tensor_to_array(t: &Tensor) -> candle_core::Result<ArrayD<f32>> {
    let dims = t.dims().to_vec();
    let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    ArrayD::from_shape_vec(IxDyn(&dims), values)
        .map_err(|e| candle_core::Error::Msg(format!("shape {dims:?}: {e}")))
}

/// An `f32` array as a candle tensor on `device`, same shape.
///
/// # Errors
/// A device that cannot hold the tensor.
pub fn array_to_tensor(a: &ArrayD<f32>, device: &Device) -> candle_core::Result<Tensor> {
    let std = a.as_standard_layout();
    let slice = std
        .as_slice()
        .ok_or_else(|| candle_core::Error::Msg("array is not contiguous".into()))?;
    Tensor::from_slice(slice, a.shape(), device)
}

/// An `f32` array as a safetensors view.
struct F32View<'a> {
    shape: &'a [usize],
    array: &'a ArrayD<f32>,
}

impl<'a> F32View<'a> {
    fn new(array: &'a ArrayD<f32>) -> Self {
        Self {
            shape: array.shape(),
            array,
        }
    }
}

impl safetensors::View for F32View<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let mut bytes = Vec::with_capacity(self.array.len() * 4);
        // logical (row-major) order whatever the memory layout
        for v in self.array.iter() {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        Cow::Owned(bytes)
    }

    fn data_len(&self) -> usize {
        self.array.len() * 4
    }
}
