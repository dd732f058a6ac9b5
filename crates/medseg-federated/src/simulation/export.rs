//! One multi-organ model from a federation whose sites keep local arrays.
//!
//! - Normalisation layers kept local (FedBN, SegViz with `local_norms`):
//!   the example-weighted mean of the sites' arrays (running statistics
//!   included), the natural model for a site that took no part.
//! - Local output layers (SegViz's heads), when each class is annotated at
//!   one site: the layer is linear in the shared features, so site `s`'s
//!   log-odds of its class `c` against background are the rows
//!   `W_s[c] − W_s[0]`, `b_s[c] − b_s[0]`. The assembled layer has those
//!   rows for every class, zero for background and a bias of −30 (never
//!   chosen) for a class no site annotated: a pixel goes to the class with
//!   the highest log-odds when it is positive, background otherwise, which
//!   is SegViz's "most confident site wins" in one network. It is exact
//!   when the body is shared (no local norms) and an approximation with
//!   averaged local norms.

use crate::error::{FedError, Result};
use crate::Weights;
use ndarray::{ArrayD, Axis};

/// A site's final weights (global body, its local arrays) and what it
/// annotated.
#[derive(Debug, Clone)]
pub struct SiteModel {
    /// The site.
    pub name: String,
    /// Its weights.
    pub weights: Weights,
    /// Foreground classes it annotated.
    pub organs: Vec<u16>,
    /// Its training cases (the averaging weight).
    pub examples: usize,
}

/// The local output layers of `w`: pairs (`…weight`, `…bias`) where the
/// weight has rank 3 or more and `class_num` output rows and the bias has
/// `class_num` values.
pub fn head_keys<'a>(
    w: &'a Weights,
    class_num: usize,
    is_local: impl Fn(&str) -> bool + 'a,
) -> impl Iterator<Item = (String, String)> + 'a {
    w.iter().filter_map(move |(k, a)| {
        let layer = k.strip_suffix(".weight")?;
        if !is_local(k) || a.ndim() < 3 || a.shape()[0] != class_num {
            return None;
        }
        let bias = format!("{layer}.bias");
        let b = w.get(&bias)?;
        (b.shape() == [class_num] && is_local(&bias)).then(|| (k.to_string(), bias))
    })
}

/// The model to evaluate on an unseen site, and a sentence saying how its
/// local arrays were combined (see the module documentation).
///
/// # Errors
/// Sites whose local arrays differ in shape, or a class annotated at two
/// sites when heads are local.
pub fn final_model(
    global: &Weights,
    sites: &[SiteModel],
    class_num: usize,
    is_local: &dyn Fn(&str) -> bool,
) -> Result<(Weights, String)> {
    let local: Vec<String> = global
        .keys()
        .filter(|k| is_local(k))
        .map(String::from)
        .collect();
    if local.is_empty() {
        return Ok((global.clone(), "the global weights".into()));
    }
    let heads: Vec<(String, String)> = head_keys(global, class_num, is_local).collect();
    let in_heads = |k: &str| heads.iter().any(|(w, b)| w == k || b == k);
    let mut out = global.clone();
    let total: usize = sites.iter().map(|s| s.examples.max(1)).sum();
    let mut averaged = 0;
    for k in local.iter().filter(|k| !in_heads(k)) {
        let mut acc: Option<ArrayD<f64>> = None;
        for s in sites {
            let a = s.weights.get(k).ok_or_else(|| FedError::MissingKey {
                site: s.name.clone(),
                key: k.clone(),
            })?;
            let wgt = s.examples.max(1) as f64 / total as f64;
            let a = a.mapv(|v| v as f64 * wgt);
            acc = Some(match acc {
                None => a,
                Some(m) if m.shape() == a.shape() => m + a,
                Some(m) => {
                    return Err(FedError::ShapeMismatch {
                        site: s.name.clone(),
                        key: k.clone(),
                        expected: m.shape().to_vec(),
                        found: a.shape().to_vec(),
                    })
                }
            });
        }
        if let Some(m) = acc {
            out.insert(k.clone(), m.mapv(|v| v as f32));
            averaged += 1;
        }
    }
    for (wk, bk) in &heads {
        let (mut w, mut b) = (
            ArrayD::<f32>::zeros(global.get(wk).map(|a| a.shape()).unwrap_or(&[]).to_vec()),
            ArrayD::<f32>::from_elem(vec![class_num], -30.0),
        );
        b[[0]] = 0.0;
        for s in sites {
            let (sw, sb) = match (s.weights.get(wk), s.weights.get(bk)) {
                (Some(sw), Some(sb)) if sw.shape() == w.shape() && sb.shape() == b.shape() => {
                    (sw, sb)
                }
                _ => {
                    return Err(FedError::Array {
                        key: wk.clone(),
                        msg: format!(
                            "site `{}`'s head does not have the global head's shape {:?}",
                            s.name,
                            w.shape()
                        ),
                    })
                }
            };
            for &c in &s.organs {
                let c = c as usize;
                let row = &sw.index_axis(Axis(0), c) - &sw.index_axis(Axis(0), 0);
                w.index_axis_mut(Axis(0), c).assign(&row);
                b[[c]] = sb[[c]] - sb[[0]];
            }
        }
        out.insert(wk.clone(), w);
        out.insert(bk.clone(), b);
    }
    let mut note = Vec::new();
    if averaged > 0 {
        note.push(format!(
            "{averaged} local arrays (normalisation layers) averaged over the sites, weighted by examples"
        ));
    }
    if !heads.is_empty() {
        note.push(format!(
            "{} local output layers assembled from each site's rows of the classes it annotated",
            heads.len()
        ));
    }
    Ok((out, note.join("; ")))
}
