//! The method sections: `semi_supervised_learning`, `weakly_supervised_learning`,
//! `noisy_label_learning` (→ `[semi]`, `[weak]`, `[noisy]`) and
//! `self_supervised_learning` (no medseg counterpart yet).

use super::{number, Ctx, Effect, PymicError};
use serde_json::{json, Map, Value};

/// The learning method a PyMIC config names.
#[derive(Debug, Clone)]
pub(crate) struct Method {
    /// PyMIC's section.
    pub pymic_section: &'static str,
    /// medseg's section (`semi`, `weak`, `noisy`).
    pub medseg_section: &'static str,
    /// The medseg learner name.
    pub name: String,
    /// The network the medseg learner needs, when it needs a special one.
    pub network: Option<&'static str>,
}

const SECTIONS: [(&str, &str); 3] = [
    ("semi_supervised_learning", "semi"),
    ("weakly_supervised_learning", "weak"),
    ("noisy_label_learning", "noisy"),
];

/// Finds the method section and its `method_name`. A self-supervised
/// section is noted (medseg has no self-supervised learner yet).
pub(crate) fn detect(cx: &mut Ctx) -> Result<Option<Method>, PymicError> {
    if cx.has_section("self_supervised_learning") {
        cx.note_section(
            "self_supervised_learning",
            Effect::ChangesResults,
            "PyMIC's self-supervised methods are not mapped to medseg's [pretrain] section \
             yet (it has ModelGenesis, MoCo and SimCLR with their own parameters)",
        );
    }
    for (sec, medseg) in SECTIONS {
        if !cx.has_section(sec) {
            continue;
        }
        let Some(name) = cx.get(sec, "method_name") else {
            return Err(PymicError::Invalid {
                key: format!("{sec}.method_name"),
                message: "required by PyMIC and missing".into(),
            });
        };
        let name = name.as_str().unwrap_or_default().to_string();
        let (mapped, network) = match (medseg, name.as_str()) {
            ("semi", "EntropyMinimization" | "MeanTeacher" | "UAMT" | "CPS") => {
                (name.clone(), None)
            }
            ("semi", "CCT") => (name.clone(), Some("CCTNet")),
            ("semi", "URPC") => (name.clone(), Some("URPC")),
            ("semi", "MCNet") => (name.clone(), Some("MCNet")),
            (
                "weak",
                "EntropyMinimization" | "TotalVariation" | "MumfordShah" | "GatedCRF" | "USTM",
            ) => (name.clone(), None),
            ("weak", "DMPLS") => (name.clone(), Some("DualDecoderUNet")),
            ("noisy", "CoTeaching" | "TriNet" | "DAST") => (name.clone(), None),
            _ => {
                cx.note_free(
                    &format!("{sec}.method_name"),
                    &name,
                    Effect::ChangesResults,
                    format!("medseg has no `{name}` learner in [{medseg}]"),
                );
                cx.note_section(sec, Effect::ChangesResults, "belongs to an unmapped method");
                return Ok(None);
            }
        };
        return Ok(Some(Method {
            pymic_section: sec,
            medseg_section: medseg,
            name: mapped,
            network,
        }));
    }
    Ok(None)
}

/// The medseg method section: weights, ramp-up as fractions of `iter_max`
/// (PyMIC's defaults: 0 and `iter_max`), EMA decay and the method's
/// parameters.
pub(crate) fn section(
    cx: &mut Ctx,
    m: &Method,
    iter_max: f64,
) -> Result<Map<String, Value>, PymicError> {
    let sec = m.pymic_section;
    let mut out = Map::new();
    let mut params = Map::new();
    out.insert("method".into(), json!(m.name));
    let frac = |cx: &mut Ctx, key: &str, default: f64| -> Result<f64, PymicError> {
        let v = match cx.get(sec, key) {
            Some(v) => number(&v, &format!("{sec}.{key}"))?,
            None => default,
        };
        Ok((v / iter_max).clamp(0.0, 1.0))
    };
    let start = frac(cx, "rampup_start", 0.0)?;
    let end = frac(cx, "rampup_end", iter_max)?;
    out.insert(
        "regularize_w".into(),
        cx.get(sec, "regularize_w").unwrap_or(json!(0.1)),
    );
    out.insert("rampup_start".into(), json!(start));
    out.insert("rampup_end".into(), json!(end));
    if let Some(v) = cx.get(sec, "ema_decay") {
        out.insert("ema_decay".into(), v);
    }
    let mut put = |cx: &mut Ctx, pymic: &str, medseg: &str| {
        if let Some(v) = cx.get(sec, pymic) {
            params.insert(medseg.into(), v);
        }
    };
    match m.name.as_str() {
        "CCT" => put(cx, "unsupervised_loss", "unsupervised_loss"),
        "MCNet" => {
            put(cx, "temperature", "temperature");
            if let Some(v) = cx.peek(sec, "unsupervised_loss").cloned() {
                let effect = if v.as_str() == Some("MSE") {
                    Effect::NoEffect
                } else {
                    Effect::ChangesResults
                };
                cx.note(
                    sec,
                    "unsupervised_loss",
                    effect,
                    "medseg's MCNet uses the MSE consistency (PyMIC's default)",
                );
            }
        }
        "UAMT" => put(cx, "uamt_mcdroput_n", "mc_dropout_n"),
        "USTM" => put(cx, "ustm_mcdroput_n", "mc_dropout_n"),
        "MumfordShah" => {
            put(cx, "mumfordshahloss_penalty", "penalty");
            put(cx, "mumfordshahloss_lambda", "lambda");
        }
        "GatedCRF" => {
            let mut g = |k: &str, d: f64| -> Result<f64, PymicError> {
                match cx.get(sec, k) {
                    Some(v) => number(&v, &format!("{sec}.{k}")),
                    None => Ok(d),
                }
            };
            let (w0, xy0, rgb, w1, xy1) = (
                g("gatedcrfloss_w0", 1.0)?,
                g("gatedcrfloss_xy0", 5.0)?,
                g("gatedcrfloss_rgb", 0.1)?,
                g("gatedcrfloss_w1", 1.0)?,
                g("gatedcrfloss_xy1", 3.0)?,
            );
            let radius = g("gatedcrfloss_radius", 5.0)?;
            params.insert("radius".into(), json!(radius.round() as u64));
            params.insert(
                "kernels".into(),
                json!([{ "weight": w0, "xy": xy0, "rgb": rgb }, { "weight": w1, "xy": xy1 }]),
            );
        }
        "CoTeaching" => {
            let ratio = match cx.get(sec, "co_teaching_select_ratio") {
                Some(v) => number(&v, &format!("{sec}.co_teaching_select_ratio"))?,
                None => {
                    return Err(PymicError::Invalid {
                        key: format!("{sec}.co_teaching_select_ratio"),
                        message: "required by PyMIC's CoTeaching and missing".into(),
                    })
                }
            };
            params.insert("forget_rate".into(), json!(1.0 - ratio));
            params.insert("gradual".into(), json!(end.max(1e-9)));
            cx.note_free(
                &format!("{sec}.rampup_start/rampup_end"),
                &format!("{start}..{end} of the iterations"),
                Effect::Approximated,
                "PyMIC raises the forget rate along a sigmoid ramp between rampup_start and \
                 rampup_end; medseg's Co-teaching raises it linearly from 0 over `gradual` \
                 (= rampup_end)",
            );
        }
        "TriNet" => cx.note(
            sec,
            "trinet_select_ratio",
            Effect::ChangesResults,
            "medseg's TriNet learns from the pixels where the two peers agree; it has no \
             small-loss selection ratio",
        ),
        "DAST" => {
            put(cx, "dast_rank_length", "rank_length");
            put(cx, "dast_select_ratio", "select_ratio");
            put(cx, "dast_dbc_w", "dbc_w");
            put(cx, "dast_st_w", "st_w");
        }
        _ => {}
    }
    if !params.is_empty() {
        out.insert("params".into(), Value::Object(params));
    }
    Ok(out)
}
