//! The `[testing]` section: checkpoints, sliding window, TTA,
//! post-processing and outputs.

use super::{Ctx, Effect, PymicError};
use serde_json::{json, Map, Value};

const SEC: &str = "testing";

/// The medseg `[inference]` table. `patch_size` is `dataset.patch_size`,
/// PyMIC's default window (stride: half of it).
pub(crate) fn testing(
    cx: &mut Ctx,
    patch_size: Option<&Value>,
    volumetric: bool,
) -> Result<Map<String, Value>, PymicError> {
    let mut inf = Map::new();
    if !cx.has_section(SEC) {
        return Ok(inf);
    }
    // PyMIC averages overlapping windows uniformly
    inf.insert("gaussian".into(), json!(false));
    let sw = cx
        .get(SEC, "sliding_window_enable")
        .and_then(|v| v.as_bool())
        == Some(true);
    let size = cx.get(SEC, "sliding_window_size");
    let stride = cx.get(SEC, "sliding_window_stride");
    if sw {
        let size = size.or_else(|| patch_size.cloned());
        let sizes: Option<Vec<f64>> = size
            .as_ref()
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_f64).collect());
        let Some(sizes) = sizes.filter(|s| !s.is_empty()) else {
            return Err(PymicError::Invalid {
                key: "testing.sliding_window_size".into(),
                message: "a list of sizes is needed with sliding_window_enable = True \
                          (or dataset.patch_size)"
                    .into(),
            });
        };
        let strides: Vec<f64> = match stride.as_ref().and_then(Value::as_array) {
            Some(a) => a.iter().filter_map(Value::as_f64).collect(),
            None => sizes.iter().map(|s| (s / 2.0).floor()).collect(),
        };
        let overlaps: Vec<f64> = sizes
            .iter()
            .zip(&strides)
            .map(|(s, st)| (1.0 - st / s).clamp(0.0, 0.95))
            .collect();
        let overlap = overlaps.iter().cloned().fold(0.0f64, f64::max);
        if overlaps.iter().any(|o| (o - overlap).abs() > 1e-9) {
            cx.note_free(
                "testing.sliding_window_stride",
                &format!("{strides:?}"),
                Effect::Approximated,
                "medseg uses one overlap fraction for every axis (the largest here)",
            );
        }
        inf.insert(
            "patch_size".into(),
            json!(sizes.iter().map(|s| *s as u64).collect::<Vec<_>>()),
        );
        inf.insert("overlap".into(), json!(overlap));
    } else if size.is_some() || stride.is_some() {
        cx.note(
            SEC,
            "sliding_window_size",
            Effect::NoEffect,
            "read only with sliding_window_enable = True",
        );
        cx.note(
            SEC,
            "sliding_window_stride",
            Effect::NoEffect,
            "read only with sliding_window_enable = True",
        );
    }
    if let Some(b) = cx.get(SEC, "sliding_window_batch") {
        inf.insert("sw_batch_size".into(), b);
    }
    match cx.peek(SEC, "tta_mode").and_then(Value::as_i64) {
        None | Some(0) => {
            cx.get(SEC, "tta_mode");
        }
        Some(1) => {
            inf.insert("tta_flip".into(), json!(true));
            if volumetric {
                cx.note(
                    SEC,
                    "tta_mode",
                    Effect::Approximated,
                    "PyMIC flips H and W; medseg flips every subset of the spatial axes \
                     (depth too in 3D)",
                );
            }
            cx.get(SEC, "tta_mode");
        }
        Some(_) => cx.note(
            SEC,
            "tta_mode",
            Effect::ChangesResults,
            "medseg's TTA is flipping (PyMIC's mode 1)",
        ),
    }
    match cx.get(SEC, "post_process").as_ref().and_then(Value::as_str) {
        None => {
            inf.insert("largest_component".into(), json!("none"));
        }
        Some("KeepLargestComponent") => {
            let mode = cx
                .get(SEC, "keeplargestcomponent_mode")
                .and_then(|v| v.as_i64())
                .unwrap_or(1);
            let m = if mode == 2 { "per_class" } else { "union" };
            inf.insert("largest_component".into(), json!(m));
        }
        Some(other) => cx.note_free(
            "testing.post_process",
            other,
            Effect::ChangesResults,
            "medseg's post-processing is KeepLargestComponent",
        ),
    }
    match cx.peek(SEC, "ckpt_mode").and_then(Value::as_i64) {
        Some(0) => {
            cx.get(SEC, "ckpt_mode");
            inf.insert("checkpoints".into(), json!(["latest"]));
        }
        Some(2 | 3) => {
            cx.get(SEC, "ckpt_mode");
            let names = match cx.get(SEC, "ckpt_name") {
                Some(Value::Array(a)) => a,
                Some(v) => vec![v],
                None => {
                    return Err(PymicError::Invalid {
                        key: "testing.ckpt_name".into(),
                        message: "required with ckpt_mode 2 or 3".into(),
                    })
                }
            };
            inf.insert("checkpoints".into(), Value::Array(names));
        }
        _ => {
            cx.get(SEC, "ckpt_mode");
            inf.insert("checkpoints".into(), json!(["best"]));
        }
    }
    cx.note(
        SEC,
        "ckpt_name",
        Effect::NoEffect,
        "read only with ckpt_mode 2 or 3",
    );
    if let Some(o) = cx.get(SEC, "output_dir") {
        inf.insert("output_dir".into(), o);
    }
    if let Some(p) = cx.get(SEC, "save_probability") {
        inf.insert("save_probabilities".into(), p);
    }
    match cx.peek(SEC, "evaluation_mode").and_then(Value::as_bool) {
        Some(false) => cx.note(
            SEC,
            "evaluation_mode",
            Effect::ChangesResults,
            "medseg always predicts in evaluation mode",
        ),
        _ => cx.note(
            SEC,
            "evaluation_mode",
            Effect::NoEffect,
            "medseg predicts in evaluation mode, as PyMIC's default",
        ),
    }
    // PyMIC converts the predicted labels before saving when both are given
    match (cx.get(SEC, "label_source"), cx.get(SEC, "label_target")) {
        (Some(src), Some(dst)) => {
            let list = |v: &Value, key: &str| -> Result<Vec<u64>, PymicError> {
                v.as_array()
                    .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
                    .filter(|a| a.iter().all(|x| *x <= u64::from(u16::MAX)))
                    .ok_or_else(|| PymicError::Invalid {
                        key: format!("testing.{key}"),
                        message: format!("expected a list of label values, got {v}"),
                    })
            };
            let (a, b) = (list(&src, "label_source")?, list(&dst, "label_target")?);
            if a.len() != b.len() {
                return Err(PymicError::Invalid {
                    key: "testing.label_target".into(),
                    message: "one value per entry of label_source".into(),
                });
            }
            inf.insert("output_label_source".into(), json!(a));
            inf.insert("output_label_target".into(), json!(b));
        }
        (Some(_), None) | (None, Some(_)) => cx.note_free(
            "testing.label_source/label_target",
            "(one of them)",
            Effect::NoEffect,
            "PyMIC converts predicted labels only when both are given",
        ),
        (None, None) => {}
    }
    cx.note(
        SEC,
        "gpus",
        Effect::NoEffect,
        "medseg picks the device with --device",
    );
    Ok(inf)
}
