//! Reading PyMIC's INI files: Python's `configparser` layout and PyMIC's
//! `parse_value_from_string` typing of values.

use serde_json::{json, Value};

/// One `key = value` line: section and key lower-cased (as `configparser`
/// does), the raw text, the typed value and the 1-based line number.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Section name, lower-case.
    pub section: String,
    /// Key, lower-case.
    pub key: String,
    /// The value as written (continuation lines joined by a space).
    pub raw: String,
    /// The value typed as PyMIC types it.
    pub value: Value,
    /// Line of the key.
    pub line: usize,
}

/// Parses a value the way PyMIC's `parse_value_from_string` does: integers,
/// floats, booleans, `None`, `[a, b]` lists (nested once), else a string.
/// Floats such as `1.0e-5`, which PyMIC leaves as strings, are read as
/// numbers.
pub(crate) fn parse_value(s: &str) -> Value {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("none") {
        return Value::Null;
    }
    if let Ok(i) = s.parse::<i64>() {
        return json!(i);
    }
    if let Ok(f) = s.parse::<f64>() {
        if f.is_finite() && (s.contains('.') || s.contains('e') || s.contains('E')) {
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
        if inner.trim().is_empty() {
            return Value::Array(vec![]);
        }
        let mut out = Vec::new();
        let mut depth = 0i32;
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
    Value::String(s.trim_matches(|c| c == '\'' || c == '"').to_string())
}

/// Reads INI text into entries, in file order. Comment lines start with `#`
/// or `;`; an inline ` #` comment is cut; indented lines continue the
/// previous value; a key given twice in a section is an error (as in
/// `configparser`). Empty values are kept with a `null` value (PyMIC drops
/// them).
///
/// # Errors
/// A message naming the line for a line that is neither a section, a
/// `key = value` pair nor a continuation, a key outside any section, or a
/// repeated key.
pub(crate) fn parse_ini(text: &str) -> Result<Vec<Entry>, String> {
    let mut out: Vec<Entry> = Vec::new();
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
            if let Some(i) = last {
                out[i].raw.push(' ');
                out[i].raw.push_str(trimmed);
                out[i].value = parse_value(&out[i].raw);
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
        if key.is_empty() {
            return Err(format!("line {}: empty key", n + 1));
        }
        let mut val = trimmed[pos + 1..].trim().to_string();
        if let Some(c) = val.find(" #") {
            val.truncate(c);
        }
        let val = val.trim().to_string();
        if let Some(prev) = out.iter().find(|e| e.section == section && e.key == key) {
            return Err(format!(
                "line {}: key `{key}` repeats line {} of [{section}]",
                n + 1,
                prev.line
            ));
        }
        out.push(Entry {
            section: section.clone(),
            key,
            value: parse_value(&val),
            raw: val,
            line: n + 1,
        });
        last = Some(out.len() - 1);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_like_pymic() {
        assert_eq!(parse_value("3"), json!(3));
        assert_eq!(parse_value("-3"), json!(-3));
        assert_eq!(parse_value("1e-3"), json!(1e-3));
        assert_eq!(parse_value("0.5"), json!(0.5));
        assert_eq!(parse_value("True"), json!(true));
        assert_eq!(parse_value("[96, 96]"), json!([96, 96]));
        assert_eq!(parse_value("[[1, 2], [3]]"), json!([[1, 2], [3]]));
        assert_eq!(parse_value("[0,  0,  0.3]"), json!([0, 0, 0.3]));
        assert_eq!(parse_value("None"), Value::Null);
        assert_eq!(parse_value("[1, None]"), json!([1, null]));
        assert_eq!(parse_value("./data"), json!("./data"));
        assert_eq!(parse_value("nan"), json!("nan"));
    }

    #[test]
    fn ini_layout() {
        let e = parse_ini("[Dataset]\nTrain_Dir = a # comment\n  b\n; c\n[x]\nk: 1\n").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].section.as_str(), e[0].key.as_str()),
            ("dataset", "train_dir")
        );
        assert_eq!(e[0].raw, "a b");
        assert_eq!(e[1].value, json!(1));
        assert_eq!(e[1].line, 6);
        assert!(parse_ini("[a]\nk = 1\nK = 2\n")
            .unwrap_err()
            .contains("repeats line 2"));
        assert!(parse_ini("k = 1").unwrap_err().contains("outside"));
        assert!(parse_ini("[a]\nnonsense").unwrap_err().contains("line 2"));
    }
}
