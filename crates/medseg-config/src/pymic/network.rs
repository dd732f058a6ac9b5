//! The `[network]` section: PyMIC's `net_type` to a medseg network name,
//! the keys of the UNet family passed through (medseg-nets reads PyMIC's
//! key names), and the network a method needs.

use super::method::Method;
use super::{required, Ctx, Effect, PymicError};
use serde_json::{json, Map, Value};

/// medseg name and dimension of a PyMIC `net_type`; `dim` is the
/// `dimension` key of PyMIC 0.6's generic networks (default 2).
fn map_name(net: &str, dim: u64) -> Option<(&'static str, u64)> {
    Some(match net {
        // PyMIC 0.6's registry: generic networks with a `dimension` key
        "UNet" => ("UNet", dim),
        "UNet_ScSE" => ("UNet_ScSE", dim),
        "AttentionUNet" => ("AttentionUNet", dim),
        "UNetpp" => ("UNetpp", dim),
        // the 2D/3D names of PyMIC 0.5 and of PyMIC_examples' configs
        "UNet2D" => ("UNet2D", 2),
        "UNet3D" => ("UNet3D", 3),
        "UNet2D_ScSE" => ("UNet_ScSE", 2),
        "UNet3D_ScSE" => ("UNet_ScSE", 3),
        "UNet2Dpp" | "UNet2D_PP" => ("UNetpp", 2),
        "UNet2D5" => ("UNet2D5", 3),
        "COPLENet" => ("COPLENet", 2),
        "AttentionUNet2D" => ("AttentionUNet2D", 2),
        "AttentionUNet3D" => ("AttentionUNet3D", 3),
        "UNet2D_CCT" => ("CCTNet", 2),
        "MCNet2D" => ("MCNet", 2),
        "UNet2D_DualBranch" => ("DualDecoderUNet", 2),
        "UNet3D_DualBranch" => ("DualDecoderUNet", 3),
        _ => return None,
    })
}

/// Keys of the network section that medseg-nets reads under the same name.
const PASS_THROUGH: [&str; 11] = [
    "in_chns",
    "feature_chns",
    "dropout",
    "up_mode",
    "multiscale_pred",
    "conv_dims",
    "norm_type",
    "vat_it",
    "vat_xi",
    "vat_eps",
    "uniform_range",
];

/// The medseg `[network]` table.
pub(crate) fn network(
    cx: &mut Ctx,
    method: Option<&Method>,
) -> Result<Map<String, Value>, PymicError> {
    let mut out = Map::new();
    let net = required(cx, "network", "net_type")?;
    // CPS, Co-teaching, TriNet: one net_type per network, all the same
    let names: Vec<String> = match &net {
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect(),
        other => vec![other.as_str().unwrap_or_default().to_string()],
    };
    let first = names.first().cloned().unwrap_or_default();
    let raw = net.to_string();
    if names.iter().any(|n| *n != first) {
        cx.note_free(
            "network.net_type",
            &raw,
            Effect::ChangesResults,
            "medseg's multi-network methods train copies of one network",
        );
    }
    let dim = match cx.get("network", "dimension") {
        Some(v) => {
            v.as_u64()
                .filter(|d| *d == 2 || *d == 3)
                .ok_or_else(|| PymicError::Invalid {
                    key: "network.dimension".into(),
                    message: format!("expected 2 or 3, got {v}"),
                })?
        }
        None => 2,
    };
    let (mut name, dimension) = match map_name(&first, dim) {
        Some((n, d)) => (n.to_string(), Some(d)),
        None => {
            cx.note_free(
                "network.net_type",
                &raw,
                Effect::ChangesResults,
                format!(
                    "medseg-nets has no `{first}`; the name is kept, so a network registered \
                     under it in medseg-nets' registry would be used"
                ),
            );
            (first.clone(), None)
        }
    };
    if let (Some(needed), Some(_)) = (method.and_then(|m| m.network), dimension) {
        // PyMIC builds the method's network from the plain UNet's keys
        name = needed.to_string();
    }
    out.insert("name".into(), json!(name));
    if let Some(d) = dimension {
        out.insert("dimension".into(), json!(d));
    }
    let class_num = required(cx, "network", "class_num")?;
    if class_num.as_u64().is_none_or(|c| c < 1) {
        return Err(PymicError::Invalid {
            key: "network.class_num".into(),
            message: format!("expected a positive integer, got {class_num}"),
        });
    }
    if class_num.as_u64() == Some(1) {
        cx.note_free(
            "network.class_num",
            "1",
            Effect::ChangesResults,
            "one output channel (PyMIC's reconstruction tasks); medseg segments background \
             and at least one class, so the translated config will not validate",
        );
    }
    out.insert("class_num".into(), class_num);
    for k in PASS_THROUGH {
        if let Some(v) = cx.get("network", k) {
            out.insert(k.into(), v);
        }
    }
    if let Some(v) = cx.get("network", "deep_supervise") {
        out.insert("multiscale_pred".into(), v);
    }
    if name == "URPC" {
        // medseg's URPC always has its pyramid heads
        if let Some(v) = out.remove("multiscale_pred") {
            cx.note_free(
                "network.multiscale_pred",
                &v.to_string(),
                Effect::NoEffect,
                "medseg's URPC network always returns its pyramid outputs",
            );
        }
    }
    cx.note(
        "network",
        "bilinear",
        Effect::NoEffect,
        "not read by PyMIC 0.6's networks (up_mode chooses the up-sampling)",
    );
    cx.note(
        "network",
        "img_size",
        Effect::ChangesResults,
        "a key of PyMIC's transformer networks, which medseg-nets lacks",
    );
    cx.note(
        "network",
        "infer_mode",
        Effect::NoEffect,
        "medseg's multi-decoder networks predict with their main decoder, as PyMIC's mode 1",
    );
    cx.note(
        "network",
        "output_mode",
        Effect::NoEffect,
        "medseg's dual-decoder network predicts with its first decoder (`first`)",
    );
    if let Some(v) = cx.peek("network", "weights_load_mode").cloned() {
        cx.note(
            "network",
            "weights_load_mode",
            Effect::ChangesResults,
            format!(
                "initialising only the {v} from a PyMIC checkpoint is not mapped (medseg's \
                 network.pretrained reads medseg's safetensors encoder exports)"
            ),
        );
    }
    Ok(out)
}
