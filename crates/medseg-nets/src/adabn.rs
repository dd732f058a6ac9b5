//! Adaptive batch normalisation (AdaBN, Li et al. 2016): a trained
//! network's batch-norm running statistics are replaced by the statistics
//! of a new domain's images, everything else kept. A network trained at
//! other sites (or with statistics averaged over sites, as a federation
//! exports them) then normalises a new site's features with that site's
//! own statistics.
//!
//! The estimate is PyTorch's cumulative average (`momentum = None`): the
//! mean over the given batches of each batch's per-channel mean and of its
//! unbiased per-channel variance, i.e. what training-mode normalisation of
//! batches like these divides by. Batches should therefore look like the
//! training batches (same crop size and batch size), and dropout should be
//! off (see [`without_dropout`]): training-mode passes would otherwise
//! inflate the variances of the layers after a dropout.

use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;

use crate::error::{NetError, Result};
use crate::layers::BN_MOMENTUM;
use crate::SegNetwork;

/// `config` (a network configuration as [`SegNetwork::config`] gives it)
/// with every dropout probability set to zero: any key whose name contains
/// `dropout` and holds a number or an array of numbers, at any depth.
/// Building a network from it gives the same eval-mode network, whose
/// training-mode passes (used by [`adapt_batch_norm`]) draw no masks.
pub fn without_dropout(config: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    fn zero(v: &Value) -> Value {
        match v {
            Value::Number(_) => Value::from(0.0),
            Value::Array(a) => Value::Array(a.iter().map(zero).collect()),
            other => other.clone(),
        }
    }
    match config {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let numeric = match v {
                        Value::Number(_) => true,
                        Value::Array(a) => a.iter().all(|x| x.is_number()),
                        _ => false,
                    };
                    let nv = if k.contains("dropout") && numeric {
                        zero(v)
                    } else {
                        without_dropout(v)
                    };
                    (k.clone(), nv)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_dropout).collect()),
        other => other.clone(),
    }
}

/// The batch-norm running statistics of a VarMap: (name prefix, running
/// mean, running variance), sorted by name.
fn running_stats(varmap: &VarMap) -> Vec<(String, Var, Var)> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<(String, Var, Var)> = data
        .iter()
        .filter_map(|(k, m)| {
            let prefix = k.strip_suffix(".running_mean")?;
            let v = data.get(&format!("{prefix}.running_var"))?;
            Some((prefix.to_string(), m.clone(), v.clone()))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Re-estimates every batch norm's running statistics of `net` (whose
/// variables are `varmap`) on `batches` (network inputs, e.g.
/// `[N, C, H, W]`), by one training-mode forward pass per batch: each
/// layer's running mean becomes the average over the batches of the
/// batch's per-channel mean, its running variance the average of the
/// batch's unbiased per-channel variance (PyTorch's `momentum = None`).
/// Only running statistics change; learnt weights are untouched. Build
/// `net` from [`without_dropout`] of its configuration, or dropout masks
/// enter the statistics. Returns the number of batches used; an empty
/// `batches`, or a network without batch norm, is an error.
pub fn adapt_batch_norm<I>(net: &dyn SegNetwork, varmap: &VarMap, batches: I) -> Result<usize>
where
    I: IntoIterator<Item = Tensor>,
{
    let stats = running_stats(varmap);
    if stats.is_empty() {
        return Err(NetError::Config(
            "adapt_batch_norm: the network has no batch-norm layer".into(),
        ));
    }
    let mut sums: Vec<(Tensor, Tensor)> = Vec::with_capacity(stats.len());
    for (_, m, v) in &stats {
        sums.push((
            m.as_tensor().zeros_like()?.to_dtype(DType::F64)?,
            v.as_tensor().zeros_like()?.to_dtype(DType::F64)?,
        ));
    }
    let mut n = 0usize;
    for x in batches {
        // with the running statistics at zero, one update leaves
        // `momentum * batch statistic` in them
        for (_, m, v) in &stats {
            m.set(&m.as_tensor().zeros_like()?)?;
            v.set(&v.as_tensor().zeros_like()?)?;
        }
        net.forward_t(&x, true)?;
        for ((_, m, v), (sm, sv)) in stats.iter().zip(sums.iter_mut()) {
            let bm = (m.as_tensor().to_dtype(DType::F64)? / BN_MOMENTUM)?;
            let bv = (v.as_tensor().to_dtype(DType::F64)? / BN_MOMENTUM)?;
            *sm = (&*sm + bm)?;
            *sv = (&*sv + bv)?;
        }
        n += 1;
    }
    if n == 0 {
        return Err(NetError::Config(
            "adapt_batch_norm: no batch to estimate the statistics on".into(),
        ));
    }
    for ((_, m, v), (sm, sv)) in stats.iter().zip(sums.iter()) {
        let dt = m.as_tensor().dtype();
        m.set(&(sm / n as f64)?.to_dtype(dt)?)?;
        v.set(&(sv / n as f64)?.to_dtype(dt)?)?;
    }
    Ok(n)
}
