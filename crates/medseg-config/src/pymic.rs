//! Translation of PyMIC INI configs (v0.5/0.6 keys) into medseg TOML.

use serde_json::{json, Map, Value};

/// The result of [`import_pymic`].
#[derive(Debug, Clone)]
pub struct PymicImport {
    /// The translated configuration as TOML text.
    pub toml: String,
    /// `section.key` of every PyMIC key that has no medseg equivalent and was dropped.
    pub unmapped: Vec<String>,
}

/// Parses a value the way PyMIC's `parse_value_from_string` does: integers,
/// floats, booleans, `None`, `[a, b]` lists (nested once), else a string.
fn parse_value(s: &str) -> Value {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("none") {
        return Value::Null;
    }
    if let Ok(i) = s.parse::<i64>() {
        return json!(i);
    }
    if let Ok(f) = s.parse::<f64>() {
        if s.contains('.') || s.contains('e') || s.contains('E') {
            return json!(f);
        }
    }
    if s.eq_ignore_ascii_case("true") {
        return json!(true);
    }
    if s.eq_ignore_ascii_case("false") {
        return json!(false);
    }
    if s.starts_with('[') && s.ends_with(']') {
        let inner = &s[1..s.len() - 1];
        if inner.contains('[') {
            // nested lists: split on "]," at depth 0
            let mut out = Vec::new();
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in inner.char_indices() {
                match c {
                    '[' => depth += 1,
                    ']' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(parse_value(&inner[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            out.push(parse_value(&inner[start..]));
            return Value::Array(out);
        }
        if inner.trim().is_empty() {
            return Value::Array(vec![]);
        }
        return Value::Array(inner.split(',').map(parse_value).collect());
    }
    Value::String(s.trim_matches(|c| c == '\'' || c == '"').to_string())
}

/// Reads INI text into ordered (section, key, raw value) triples. Keys are
/// lower-cased, as Python's configparser does.
fn parse_ini(text: &str) -> Result<Vec<(String, String, String)>, String> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    let mut section = String::new();
    let mut last: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if trimmed.starts_with('[')
            && trimmed.ends_with(']')
            && !line.starts_with(char::is_whitespace)
        {
            section = trimmed[1..trimmed.len() - 1].trim().to_lowercase();
            last = None;
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            // continuation of the previous value
            if let Some(i) = last {
                out[i].2.push(' ');
                out[i].2.push_str(trimmed);
                continue;
            }
        }
        let Some(pos) = trimmed.find(['=', ':']) else {
            return Err(format!(
                "line {}: expected `key = value`, got `{trimmed}`",
                n + 1
            ));
        };
        if section.is_empty() {
            return Err(format!("line {}: key outside any [section]", n + 1));
        }
        let key = trimmed[..pos].trim().to_lowercase();
        let mut val = trimmed[pos + 1..].trim().to_string();
        if let Some(c) = val.find(" #") {
            val.truncate(c);
        }
        out.push((section.clone(), key, val.trim().to_string()));
        last = Some(out.len() - 1);
    }
    Ok(out)
}

fn map_loss_name(name: &str) -> String {
    name.to_string()
}

/// Translates a PyMIC INI config into medseg TOML, reporting what could not
/// be mapped. Sections `dataset`, `network`, `training`, `testing`/`inference`
/// and the semi-supervised section are read.
///
/// # Errors
/// A message naming the line when the INI text is malformed.
pub fn import_pymic(text: &str) -> Result<PymicImport, String> {
    let entries = parse_ini(text)?;
    let mut dataset = Map::new();
    let mut network = Map::new();
    let mut training = Map::new();
    let mut inference = Map::new();
    let mut semi = Map::new();
    let mut semi_params = Map::new();
    let mut unmapped = Vec::new();
    // transform names first, then their `Name_param` keys
    let mut train_tf: Vec<String> = Vec::new();
    let mut test_tf: Vec<String> = Vec::new();
    let mut tf_params: Vec<(String, Value)> = Vec::new();
    let mut loss_types: Vec<String> = Vec::new();
    let mut loss_weights: Vec<f64> = Vec::new();
    let mut sw_size: Option<Value> = None;
    let mut sw_stride: Option<Value> = None;
    let mut sw_enable = true;

    let as_names = |v: &Value| -> Vec<String> {
        match v {
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            Value::String(s) => vec![s.clone()],
            _ => vec![],
        }
    };

    for (sec, key, raw) in &entries {
        let v = parse_value(raw);
        let full = format!("{sec}.{key}");
        match (sec.as_str(), key.as_str()) {
            ("dataset", "root_dir") => {
                dataset.insert("root".into(), v);
            }
            ("dataset", k @ ("train_csv" | "valid_csv" | "test_csv")) => {
                dataset.insert(k.into(), v);
            }
            ("dataset", "train_csv_unlab") => {
                dataset.insert("train_unlabelled_csv".into(), v);
            }
            ("dataset", "modal_num") => {
                dataset.insert("in_channels".into(), v);
            }
            ("dataset", k @ ("train_batch_size" | "train_batch_size_unlab")) => {
                dataset.insert(k.into(), v);
            }
            ("dataset", "num_worker" | "num_workers") => {
                dataset.insert("num_workers".into(), v);
            }
            ("dataset", "train_transform") => train_tf = as_names(&v),
            ("dataset", "valid_transform" | "test_transform") => {
                for n in as_names(&v) {
                    if !test_tf.contains(&n) {
                        test_tf.push(n);
                    }
                }
            }
            ("dataset", "task_type" | "tensor_type" | "supervise_type") => {
                unmapped.push(format!("{full} (medseg infers it)"))
            }
            ("dataset", k)
                if k.contains('_') && k.chars().next().is_some_and(|c| c.is_alphabetic()) =>
            {
                tf_params.push((k.to_string(), v));
            }
            ("network", "net_type") => {
                network.insert("name".into(), v);
            }
            ("network", "class_num") => {
                dataset.insert("class_num".into(), v.clone());
                network.insert("class_num".into(), v);
            }
            ("network", k) => {
                network.insert(k.into(), v);
            }
            ("training", "loss_type") => loss_types = as_names(&v),
            ("training", "loss_weight") => {
                loss_weights = match &v {
                    Value::Array(a) => a.iter().filter_map(|x| x.as_f64()).collect(),
                    other => other.as_f64().into_iter().collect(),
                }
            }
            ("training", "learning_rate") => {
                training.insert("lr".into(), v);
            }
            (
                "training",
                k @ ("momentum"
                | "weight_decay"
                | "lr_gamma"
                | "lr_milestones"
                | "early_stop_patience"),
            ) => {
                training.insert(k.into(), v);
            }
            ("training", "lr_step" | "step_size") => {
                training.insert("lr_step".into(), v);
            }
            ("training", "optimizer") => {
                let name = v.as_str().unwrap_or("").to_lowercase();
                match name.as_str() {
                    "sgd" | "adam" | "adamw" => {
                        training.insert("optimizer".into(), json!(name));
                    }
                    _ => unmapped.push(format!("{full} = {raw} (medseg has sgd, adam, adamw)")),
                }
            }
            ("training", "lr_scheduler") => {
                let name = v.as_str().unwrap_or("");
                let mapped = match name {
                    "ReduceLROnPlateau" => Some("plateau"),
                    "MultiStepLR" => Some("multistep"),
                    "StepLR" => Some("step"),
                    "CosineAnnealingLR" => Some("cosine"),
                    "PolynomialLR" => Some("poly"),
                    _ => None,
                };
                match mapped {
                    Some(m) => {
                        training.insert("lr_scheduler".into(), json!(m));
                    }
                    None => unmapped.push(format!("{full} = {raw}")),
                }
            }
            ("training", "ckpt_save_dir" | "ckpt_dir") => {
                training.insert("output_dir".into(), v);
            }
            ("training", "iter_max") => {
                training.insert("iterations".into(), v);
            }
            ("training", "iter_valid") => {
                training.insert("validate_every".into(), v);
            }
            ("training", "iter_save") => {
                let first = match &v {
                    Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
                    o => o.clone(),
                };
                training.insert("checkpoint_every".into(), first);
            }
            ("training", "random_seed") => {
                training.insert("seed".into(), v);
            }
            ("training", "iter_start") => {
                let resume = v.as_i64().unwrap_or(0) > 0;
                training.insert("resume".into(), json!(resume));
            }
            ("testing" | "inference", "sliding_window_enable") => {
                sw_enable = v.as_bool().unwrap_or(true)
            }
            ("testing" | "inference", "sliding_window_size") => sw_size = Some(v),
            ("testing" | "inference", "sliding_window_stride") => sw_stride = Some(v),
            ("testing" | "inference", "tta_mode") => {
                inference.insert("tta_flip".into(), json!(v.as_i64().unwrap_or(0) > 0));
            }
            ("testing" | "inference", "output_dir") => {
                inference.insert("output_dir".into(), v);
            }
            ("testing" | "inference", "save_probability") => {
                inference.insert("save_probabilities".into(), v);
            }
            ("testing" | "inference", "post_process") => {
                if v.as_str() == Some("KeepLargestComponent") {
                    inference.insert("largest_component".into(), json!("per_class"));
                } else {
                    unmapped.push(format!("{full} = {raw}"));
                }
            }
            ("testing" | "inference", "ckpt_mode") => {
                let m = match v.as_i64() {
                    Some(0) => "latest",
                    _ => "best",
                };
                inference.insert("checkpoints".into(), json!([m]));
            }
            ("testing" | "inference", "ckpt_name") => {
                inference.insert("checkpoints".into(), json!([v]));
            }
            ("semi_supervised_learning", "method_name") => {
                semi.insert("method".into(), v);
            }
            (
                "semi_supervised_learning",
                k @ ("regularize_w" | "rampup_start" | "rampup_end" | "ema_decay"),
            ) => {
                semi.insert(k.into(), v);
            }
            ("semi_supervised_learning", k) => {
                semi_params.insert(k.into(), v);
            }
            _ => unmapped.push(full),
        }
    }

    // transforms with their parameters: `RandomCrop_output_size` -> RandomCrop.output_size
    let mut used = vec![false; tf_params.len()];
    let build = |names: &[String], used: &mut Vec<bool>| -> Vec<Value> {
        names
            .iter()
            .map(|n| {
                let mut t = Map::new();
                t.insert("name".into(), json!(n));
                let prefix = format!("{}_", n.to_lowercase());
                for (i, (k, v)) in tf_params.iter().enumerate() {
                    if let Some(p) = k.strip_prefix(&prefix) {
                        t.insert(p.to_string(), v.clone());
                        used[i] = true;
                    }
                }
                Value::Object(t)
            })
            .collect()
    };
    let train_specs = build(&train_tf, &mut used);
    let test_specs = build(&test_tf, &mut used);
    for (i, (k, _)) in tf_params.iter().enumerate() {
        if !used[i] {
            unmapped.push(format!("dataset.{k}"));
        }
    }
    if !train_specs.is_empty() {
        dataset.insert("train_transforms".into(), Value::Array(train_specs));
    }
    if !test_specs.is_empty() {
        dataset.insert("test_transforms".into(), Value::Array(test_specs));
    }

    if !loss_types.is_empty() {
        let loss = if loss_types.len() == 1 {
            json!({ "name": map_loss_name(&loss_types[0]) })
        } else {
            let terms: Vec<Value> = loss_types
                .iter()
                .enumerate()
                .map(|(i, n)| json!({ "loss": map_loss_name(n), "weight": loss_weights.get(i).copied().unwrap_or(1.0) }))
                .collect();
            json!({ "name": "CombinedLoss", "terms": terms })
        };
        training.insert("loss".into(), loss);
    }

    if sw_enable {
        if let Some(size) = sw_size {
            if let (Some(sz), Some(Value::Array(st))) = (size.as_array(), &sw_stride) {
                let overlaps: Vec<f64> = sz
                    .iter()
                    .zip(st)
                    .filter_map(|(a, b)| Some(1.0 - b.as_f64()? / a.as_f64()?))
                    .collect();
                if let Some(o) = overlaps.iter().cloned().reduce(f64::min) {
                    inference.insert("overlap".into(), json!(o.clamp(0.0, 0.95)));
                }
            }
            inference.insert("patch_size".into(), size);
        }
    }

    let mut root = Map::new();
    root.insert("dataset".into(), Value::Object(dataset));
    root.insert("network".into(), Value::Object(network));
    root.insert("training".into(), Value::Object(training));
    if !inference.is_empty() {
        root.insert("inference".into(), Value::Object(inference));
    }
    if !semi.is_empty() || !semi_params.is_empty() {
        if !semi_params.is_empty() {
            semi.insert("params".into(), Value::Object(semi_params));
        }
        root.insert("semi".into(), Value::Object(semi));
    }
    let root = strip_nulls(Value::Object(root));
    let toml = toml::to_string_pretty(&root).map_err(|e| format!("could not write TOML: {e}"))?;
    Ok(PymicImport { toml, unmapped })
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.into_iter()
                .filter(|v| !v.is_null())
                .map(strip_nulls)
                .collect(),
        ),
        o => o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_like_pymic() {
        assert_eq!(parse_value("3"), json!(3));
        assert_eq!(parse_value("1e-3"), json!(1e-3));
        assert_eq!(parse_value("0.5"), json!(0.5));
        assert_eq!(parse_value("True"), json!(true));
        assert_eq!(parse_value("[96, 96]"), json!([96, 96]));
        assert_eq!(parse_value("[[1, 2], [3]]"), json!([[1, 2], [3]]));
        assert_eq!(parse_value("None"), Value::Null);
        assert_eq!(parse_value("./data"), json!("./data"));
    }
}
