//! The `[training]` section: optimiser, schedules, losses (weights, deep
//! supervision), intervals, checkpoints and seed.

use super::{number, required, Ctx, Effect, PymicError};
use serde_json::{json, Map, Value};

const SEC: &str = "training";

fn get_num(cx: &mut Ctx, key: &str) -> Result<Option<f64>, PymicError> {
    cx.get(SEC, key)
        .map(|v| number(&v, &format!("{SEC}.{key}")))
        .transpose()
}

/// The medseg `[training]` table.
pub(crate) fn training(
    cx: &mut Ctx,
    iter_max: f64,
    iter_valid: f64,
) -> Result<Map<String, Value>, PymicError> {
    let mut t = Map::new();
    let dir = match cx.get(SEC, "ckpt_dir") {
        Some(v) => Some(v),
        None => cx.get(SEC, "ckpt_save_dir"),
    };
    let dir = dir.ok_or_else(|| PymicError::Invalid {
        key: "training.ckpt_dir".into(),
        message: "required by PyMIC and missing".into(),
    })?;
    t.insert("output_dir".into(), dir);
    t.insert("iterations".into(), json!(iter_max as u64));
    t.insert("validate_every".into(), json!(iter_valid as u64));
    cx.get(SEC, "iter_max");
    cx.get(SEC, "iter_valid");
    match cx.get(SEC, "iter_save") {
        Some(Value::Array(a)) => {
            let first = a.first().and_then(Value::as_u64).unwrap_or(iter_max as u64);
            t.insert("checkpoint_every".into(), json!(first));
            if a.len() > 1 {
                cx.note_free(
                    "training.iter_save",
                    &Value::Array(a.clone()).to_string(),
                    Effect::Approximated,
                    "medseg saves `latest` every checkpoint_every iterations (the first \
                     entry) and at the end, and `best` at each validation; training is \
                     unchanged",
                );
            }
        }
        Some(v) => {
            t.insert(
                "checkpoint_every".into(),
                json!(number(&v, "training.iter_save")? as u64),
            );
        }
        None => {}
    }
    if let Some(v) = cx.get(SEC, "random_seed") {
        t.insert("seed".into(), v);
    }
    if let Some(s) = get_num(cx, "iter_start")? {
        t.insert("resume".into(), json!(s > 0.0));
        if s > 0.0 {
            cx.note_free(
                "training.iter_start",
                &s.to_string(),
                Effect::Approximated,
                "medseg resumes from output_dir's `latest` checkpoint (resume = true), not \
                 from the checkpoint of that iteration",
            );
        }
    }
    optimizer(cx, &mut t)?;
    schedule(cx, &mut t, iter_valid)?;
    if let Some(v) = cx.get(SEC, "early_stop_patience") {
        t.insert("early_stop_patience".into(), v);
    }
    t.insert("loss".into(), loss(cx)?);
    for (k, why) in [
        (
            "gpus",
            "medseg picks the device with training.device or --device",
        ),
        (
            "deterministic",
            "medseg runs are always deterministic for a seed",
        ),
        (
            "ckpt_prefix",
            "medseg names its checkpoints best and latest",
        ),
    ] {
        cx.note(SEC, k, Effect::NoEffect, why);
    }
    for k in ["ckpt_init_name", "ckpt_init_mode"] {
        cx.note(
            SEC,
            k,
            Effect::ChangesResults,
            "initialising training from a PyMIC checkpoint is not mapped (medseg's \
             network.pretrained reads medseg's safetensors encoder exports)",
        );
    }
    Ok(t)
}

fn optimizer(cx: &mut Ctx, t: &mut Map<String, Value>) -> Result<(), PymicError> {
    let lr = required(cx, SEC, "learning_rate")?;
    t.insert("lr".into(), json!(number(&lr, "training.learning_rate")?));
    let name = required(cx, SEC, "optimizer")?;
    let name = name.as_str().unwrap_or_default().to_lowercase();
    match name.as_str() {
        "sgd" => {
            t.insert("optimizer".into(), json!("sgd"));
            // PyMIC's SGD defaults to Nesterov momentum
            let nesterov = cx.get(SEC, "nesterov").unwrap_or(json!(true));
            t.insert("nesterov".into(), nesterov);
        }
        "adam" => {
            t.insert("optimizer".into(), json!("adam"));
            cx.note(
                SEC,
                "nesterov",
                Effect::NoEffect,
                "PyMIC reads nesterov for SGD only",
            );
        }
        _ => cx.note_free(
            "training.optimizer",
            &name,
            Effect::ChangesResults,
            "medseg has the sgd, adam and adamw optimisers (PyMIC's SGD and Adam are mapped)",
        ),
    }
    // PyMIC requires both for every optimiser; Adam ignores the momentum
    t.insert("momentum".into(), required(cx, SEC, "momentum")?);
    t.insert("weight_decay".into(), required(cx, SEC, "weight_decay")?);
    Ok(())
}

fn schedule(cx: &mut Ctx, t: &mut Map<String, Value>, iter_valid: f64) -> Result<(), PymicError> {
    let name = cx.get(SEC, "lr_scheduler");
    let name = name.as_ref().and_then(Value::as_str).unwrap_or("");
    let gamma = get_num(cx, "lr_gamma")?;
    let per_validation = "PyMIC steps its schedulers once per validation (every iter_valid \
                          iterations), medseg at every iteration";
    let kind = match name {
        "" => "constant",
        "ReduceLROnPlateau" => {
            let p =
                get_num(cx, "reducelronplateau_patience")?.ok_or_else(|| PymicError::Invalid {
                    key: "training.ReduceLROnPlateau_patience".into(),
                    message: "required by PyMIC's ReduceLROnPlateau and missing".into(),
                })?;
            // PyMIC: patience in validations = patience_it / iter_valid
            t.insert(
                "plateau_patience".into(),
                json!((p / iter_valid.max(1.0)).floor() as u64),
            );
            "plateau"
        }
        "MultiStepLR" => {
            let m = required(cx, SEC, "lr_milestones")?;
            let ms: Vec<u64> = m
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_f64)
                        .map(|x| x as u64)
                        .collect()
                })
                .unwrap_or_default();
            if ms.iter().any(|x| (*x as f64) % iter_valid != 0.0) {
                cx.note_free(
                    "training.lr_milestones",
                    &m.to_string(),
                    Effect::Approximated,
                    per_validation,
                );
            }
            t.insert("lr_milestones".into(), json!(ms));
            "multistep"
        }
        "StepLR" => {
            let s = get_num(cx, "lr_step")?.ok_or_else(|| PymicError::Invalid {
                key: "training.lr_step".into(),
                message: "required by PyMIC's StepLR and missing".into(),
            })?;
            if s % iter_valid != 0.0 {
                cx.note_free(
                    "training.lr_step",
                    &s.to_string(),
                    Effect::Approximated,
                    per_validation,
                );
            }
            t.insert("lr_step".into(), json!(s as u64));
            "step"
        }
        "CosineAnnealingLR" => {
            if let Some(m) = get_num(cx, "lr_min")? {
                t.insert("lr_min".into(), json!(m));
            }
            cx.note_free(
                "training.lr_scheduler",
                name,
                Effect::Approximated,
                per_validation,
            );
            "cosine"
        }
        "PolynomialLR" => {
            let p = get_num(cx, "lr_power")?.ok_or_else(|| PymicError::Invalid {
                key: "training.lr_power".into(),
                message: "required by PyMIC's PolynomialLR and missing".into(),
            })?;
            t.insert("poly_power".into(), json!(p));
            cx.note_free(
                "training.lr_scheduler",
                name,
                Effect::Approximated,
                per_validation,
            );
            "poly"
        }
        other => {
            cx.note_free(
                "training.lr_scheduler",
                other,
                Effect::ChangesResults,
                format!("medseg has no `{other}` schedule"),
            );
            "constant"
        }
    };
    if let Some(g) = gamma {
        t.insert("lr_gamma".into(), json!(g));
    }
    t.insert("lr_scheduler".into(), json!(kind));
    // keys of other schedulers are not read by PyMIC either
    for k in [
        "lr_milestones",
        "lr_step",
        "lr_power",
        "lr_min",
        "reducelronplateau_patience",
    ] {
        cx.note(
            SEC,
            k,
            Effect::NoEffect,
            format!(
                "not read by PyMIC's {} scheduler",
                if name.is_empty() { "(no)" } else { name }
            ),
        );
    }
    Ok(())
}

/// One loss term: medseg name and parameters, from the PyMIC name and the
/// loss-specific keys of `[training]`.
fn loss_term(
    cx: &mut Ctx,
    name: &str,
    class_weight: &Option<Value>,
) -> (String, Map<String, Value>) {
    let mut p = Map::new();
    let mut put = |cx: &mut Ctx, pymic: &str, medseg: &str, default: Option<Value>| {
        if let Some(v) = cx.get(SEC, pymic).or(default) {
            p.insert(medseg.into(), v);
        }
    };
    match name {
        "CrossEntropyLoss" | "DiceLoss" => {
            if let Some(w) = class_weight {
                p.insert("class_weight".into(), w.clone());
            }
        }
        "GeneralizedCELoss" => put(cx, "loss_gce_q", "q", Some(json!(0.5))),
        "NoiseRobustDiceLoss" => put(cx, "noiserobustdiceloss_gamma", "gamma", None),
        "FocalDiceLoss" => put(cx, "focaldiceloss_beta", "beta", None),
        "ExpLogLoss" => {
            put(cx, "explogloss_w_dice", "w_dice", None);
            put(cx, "explogloss_gamma", "gamma", None);
        }
        "SLSRLoss" => put(cx, "slsrloss_epsilon", "epsilon", Some(json!(0.25))),
        "MAELoss" | "MSELoss" => {}
        other => cx.note_free(
            "training.loss_type",
            other,
            Effect::ChangesResults,
            format!(
                "medseg-losses has no `{other}`; the name is kept, so a loss registered under \
                 it would be used"
            ),
        ),
    }
    (name.to_string(), p)
}

fn loss(cx: &mut Ctx) -> Result<Value, PymicError> {
    let names = required(cx, SEC, "loss_type")?;
    let names: Vec<String> = match names {
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect(),
        other => vec![other.as_str().unwrap_or_default().to_string()],
    };
    let class_weight = cx.get(SEC, "class_weight");
    let weights: Option<Vec<f64>> = cx.get(SEC, "loss_weight").map(|v| match v {
        Value::Array(a) => a.iter().filter_map(Value::as_f64).collect(),
        o => o.as_f64().into_iter().collect(),
    });
    if let Some(a) = cx.peek(SEC, "loss_acti_func").cloned() {
        let effect = if a.as_str() == Some("softmax") {
            Effect::NoEffect
        } else {
            Effect::ChangesResults
        };
        cx.note(
            SEC,
            "loss_acti_func",
            effect,
            "medseg's losses apply softmax to the logits",
        );
    }
    let terms: Vec<(String, Map<String, Value>)> = names
        .iter()
        .map(|n| loss_term(cx, n, &class_weight))
        .collect();
    let base = if names.len() == 1 {
        let (n, p) = terms.into_iter().next().expect("one loss");
        let mut m = p;
        m.insert("name".into(), json!(n));
        Value::Object(m)
    } else {
        let w = weights.clone().unwrap_or_default();
        if w.len() != names.len() {
            return Err(PymicError::Invalid {
                key: "training.loss_weight".into(),
                message: format!(
                    "PyMIC's CombinedLoss needs one weight per loss_type ({} losses, {} weights)",
                    names.len(),
                    w.len()
                ),
            });
        }
        let terms: Vec<Value> = terms
            .into_iter()
            .zip(w)
            .map(|((n, p), w)| {
                let mut m = Map::new();
                m.insert("loss".into(), json!(n));
                m.insert("weight".into(), json!(w));
                if !p.is_empty() {
                    m.insert("params".into(), Value::Object(p));
                }
                Value::Object(m)
            })
            .collect();
        json!({ "name": "CombinedLoss", "terms": terms })
    };
    if names.len() == 1 && weights.is_some() {
        cx.note_free(
            "training.loss_weight",
            &format!("{weights:?}"),
            Effect::NoEffect,
            "PyMIC reads loss_weight only for a list of losses",
        );
    }
    let deep = cx.get(SEC, "deep_supervise").and_then(|v| v.as_bool()) == Some(true);
    let ds_weight = cx.get(SEC, "deep_supervise_weight");
    if !deep {
        if ds_weight.is_some() {
            cx.note_free(
                "training.deep_supervise_weight",
                "",
                Effect::NoEffect,
                "read only with deep_supervise = True",
            );
        }
        cx.note(
            SEC,
            "deep_supervise_mode",
            Effect::NoEffect,
            "read only with deep_supervise = True",
        );
        return Ok(base);
    }
    let mut obj = base.as_object().cloned().unwrap_or_default();
    let name = obj.remove("name").unwrap_or(json!(""));
    let mut spec = Map::new();
    spec.insert("loss".into(), name);
    if !obj.is_empty() {
        spec.insert("params".into(), Value::Object(obj));
    }
    let mut ds = json!({ "name": "DeepSuperviseLoss", "base": Value::Object(spec) });
    if let Some(w) = ds_weight {
        ds["weights"] = w;
    }
    let mode = cx
        .get(SEC, "deep_supervise_mode")
        .map_or("2".into(), |v| v.to_string());
    cx.note_free(
        "training.deep_supervise_mode",
        &mode,
        Effect::Approximated,
        "medseg down-samples the label to each output's size by nearest neighbour; PyMIC's \
         default (mode 2) averages the one-hot label over each output pixel",
    );
    Ok(ds)
}
