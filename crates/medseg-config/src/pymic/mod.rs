//! Translation of PyMIC 0.6 INI configs into medseg TOML.
//!
//! Every key of PyMIC's segmentation schema that has a medseg meaning is
//! mapped (data root and manifests, transforms with their parameters and
//! PyMIC's defaults, network, losses with weights and deep supervision,
//! optimiser and schedulers, intervals, the method sections, testing). Every
//! other key is reported in a [`PymicNote`] with the reason; a key whose
//! loss would change the results ([`Effect::ChangesResults`]) makes
//! [`import_pymic`] fail unless [`PymicOptions::allow_unmapped`] is set.
//! `docs/pymic.md` lists the mapping.

mod dataset;
mod ini;
mod method;
mod network;
mod paths;
mod testing;
mod training;
mod transforms;

use ini::Entry;
use serde_json::{Map, Value};
use std::fmt;
use std::path::PathBuf;

/// How to translate.
#[derive(Debug, Clone)]
pub struct PymicOptions {
    /// The folder PyMIC ran from (`pymic_train config/x.cfg` is run from the
    /// example's folder): PyMIC's relative paths (`train_dir`, `train_csv`,
    /// `ckpt_dir`...) are relative to it. The TOML is meant to be used from
    /// the same folder; manifest paths are rewritten relative to the data
    /// root, as medseg reads them.
    pub working_dir: PathBuf,
    /// Translate even when keys that change the results cannot be mapped
    /// (they are still listed).
    pub allow_unmapped: bool,
}

/// What leaving a key out (or translating it approximately) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    /// The run would differ: the import fails unless unmapped keys are allowed.
    ChangesResults,
    /// Mapped, but medseg's behaviour differs in a detail given in the reason.
    Approximated,
    /// Nothing changes (PyMIC does not read the key, medseg infers the
    /// value, or it only concerns PyMIC's runtime such as GPU ids).
    NoEffect,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::ChangesResults => "changes results",
            Effect::Approximated => "approximated",
            Effect::NoEffect => "no effect",
        })
    }
}

/// A PyMIC key that was not mapped, or mapped approximately.
#[derive(Debug, Clone, PartialEq)]
pub struct PymicNote {
    /// `section.key` as written in the file (lower case, as PyMIC reads it).
    pub key: String,
    /// The value as written.
    pub value: String,
    /// What leaving it out does.
    pub effect: Effect,
    /// Why it is not mapped, or what differs.
    pub reason: String,
}

impl fmt::Display for PymicNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = {} ({}): {}",
            self.key, self.value, self.effect, self.reason
        )
    }
}

/// The result of [`import_pymic`].
#[derive(Debug, Clone)]
pub struct PymicImport {
    /// The translated configuration as TOML text.
    pub toml: String,
    /// Keys not mapped or mapped approximately, most serious first.
    pub notes: Vec<PymicNote>,
}

impl PymicImport {
    /// The notes of keys whose loss changes the results.
    pub fn blocking(&self) -> Vec<&PymicNote> {
        self.notes
            .iter()
            .filter(|n| n.effect == Effect::ChangesResults)
            .collect()
    }
}

/// Why [`import_pymic`] failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PymicError {
    /// The INI text is malformed; the message names the line.
    #[error("{0}")]
    Syntax(String),
    /// A required key is missing or has a value that cannot be used.
    #[error("{key}: {message}")]
    Invalid {
        /// `section.key`.
        key: String,
        /// What was expected.
        message: String,
    },
    /// Keys that change the results could not be mapped (and unmapped keys
    /// were not allowed). All notes are carried, blocking ones first.
    #[error("{} key(s) that change the results cannot be mapped (pass --allow-unmapped to translate anyway):\n{}",
        .0.iter().filter(|n| n.effect == Effect::ChangesResults).count(),
        .0.iter().filter(|n| n.effect == Effect::ChangesResults).map(|n| format!("  {n}")).collect::<Vec<_>>().join("\n"))]
    Unmapped(Vec<PymicNote>),
}

/// The INI entries with a record of which were read, and the notes so far.
pub(crate) struct Ctx {
    entries: Vec<Entry>,
    used: Vec<bool>,
    notes: Vec<PymicNote>,
}

impl Ctx {
    fn new(entries: Vec<Entry>) -> Self {
        let used = vec![false; entries.len()];
        Ctx {
            entries,
            used,
            notes: Vec::new(),
        }
    }

    fn index(&self, sec: &str, key: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.section == sec && e.key == key)
    }

    /// The typed value of `sec.key`, marking it read; `None` when absent or
    /// empty/`None` (PyMIC drops empty values).
    pub(crate) fn get(&mut self, sec: &str, key: &str) -> Option<Value> {
        let i = self.index(sec, key)?;
        self.used[i] = true;
        let v = self.entries[i].value.clone();
        (!v.is_null()).then_some(v)
    }

    /// The value without marking it read.
    pub(crate) fn peek(&self, sec: &str, key: &str) -> Option<&Value> {
        self.index(sec, key)
            .map(|i| &self.entries[i].value)
            .filter(|v| !v.is_null())
    }

    /// Whether the file has the section.
    pub(crate) fn has_section(&self, sec: &str) -> bool {
        self.entries.iter().any(|e| e.section == sec)
    }

    /// Keys of `sec` in file order.
    pub(crate) fn keys(&self, sec: &str) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.section == sec)
            .map(|e| e.key.clone())
            .collect()
    }

    /// Records a note on `sec.key` (marking it read); nothing when absent
    /// or already read (so that sweeps over keys a mapping did not read can
    /// follow the mapping). A key already read is noted with
    /// [`Ctx::note_free`].
    pub(crate) fn note(&mut self, sec: &str, key: &str, effect: Effect, reason: impl Into<String>) {
        if let Some(i) = self.index(sec, key) {
            if self.used[i] {
                return;
            }
            self.used[i] = true;
            self.notes.push(PymicNote {
                key: format!("{sec}.{key}"),
                value: self.entries[i].raw.clone(),
                effect,
                reason: reason.into(),
            });
        }
    }

    /// A note on `sec.key` that is not tied to one line (a default of PyMIC
    /// that medseg cannot follow, for instance).
    pub(crate) fn note_free(
        &mut self,
        key: &str,
        value: &str,
        effect: Effect,
        reason: impl Into<String>,
    ) {
        self.notes.push(PymicNote {
            key: key.to_string(),
            value: value.to_string(),
            effect,
            reason: reason.into(),
        });
    }

    /// Marks every key of `sec` read with `effect` and `reason`.
    pub(crate) fn note_section(&mut self, sec: &str, effect: Effect, reason: &str) {
        for k in self.keys(sec) {
            if !self.used[self.index(sec, &k).expect("listed key")] {
                self.note(sec, &k, effect, reason);
            }
        }
    }

    /// Notes every key not read so far as unknown.
    fn finish(&mut self) {
        for i in 0..self.entries.len() {
            if !self.used[i] {
                let e = &self.entries[i];
                let (sec, key) = (e.section.clone(), e.key.clone());
                self.note(
                    &sec,
                    &key,
                    Effect::ChangesResults,
                    "not a key of PyMIC 0.6's segmentation schema that medseg knows",
                );
            }
        }
        self.notes.sort_by_key(|a| a.effect);
    }
}

/// A required value, or [`PymicError::Invalid`] naming the key.
pub(crate) fn required(cx: &mut Ctx, sec: &str, key: &str) -> Result<Value, PymicError> {
    cx.get(sec, key).ok_or_else(|| PymicError::Invalid {
        key: format!("{sec}.{key}"),
        message: "required by PyMIC and missing".into(),
    })
}

/// A value that must be a number, or [`PymicError::Invalid`].
pub(crate) fn number(v: &Value, key: &str) -> Result<f64, PymicError> {
    v.as_f64().ok_or_else(|| PymicError::Invalid {
        key: key.into(),
        message: format!("expected a number, got {v}"),
    })
}

/// Translates a PyMIC 0.6 INI config into medseg TOML.
///
/// # Errors
/// [`PymicError::Syntax`] for malformed INI text (naming the line);
/// [`PymicError::Invalid`] for a missing required key (`network.net_type`,
/// `network.class_num`, `training.iter_max`...) or a value of the wrong
/// type; [`PymicError::Unmapped`] when keys that change the results cannot
/// be mapped and `allow_unmapped` is off.
pub fn import_pymic(text: &str, opts: &PymicOptions) -> Result<PymicImport, PymicError> {
    let entries = ini::parse_ini(text).map_err(PymicError::Syntax)?;
    let mut cx = Ctx::new(entries);

    let method = method::detect(&mut cx)?;
    let network = network::network(&mut cx, method.as_ref())?;
    let class_num = network
        .get("class_num")
        .and_then(Value::as_u64)
        .unwrap_or(0) as usize;
    let iter_max = number(
        &required(&mut cx, "training", "iter_max")?,
        "training.iter_max",
    )?;
    let iter_valid = cx
        .peek("training", "iter_valid")
        .and_then(Value::as_f64)
        .unwrap_or(iter_max);
    let (dataset, patch_size) = dataset::dataset(&mut cx, opts, class_num, method.as_ref())?;
    let training = training::training(&mut cx, iter_max, iter_valid)?;
    let three = |v: Option<&Value>| v.and_then(Value::as_array).is_some_and(|a| a.len() == 3);
    let volumetric = network.get("dimension").and_then(Value::as_u64) == Some(3)
        || three(patch_size.as_ref())
        || three(cx.peek("testing", "sliding_window_size"));
    let inference = testing::testing(&mut cx, patch_size.as_ref(), volumetric)?;
    let method_section = match &method {
        Some(m) => Some(method::section(&mut cx, m, iter_max)?),
        None => None,
    };
    cx.finish();

    let mut root = Map::new();
    root.insert("dataset".into(), Value::Object(dataset));
    root.insert("network".into(), Value::Object(network));
    root.insert("training".into(), Value::Object(training));
    if !inference.is_empty() {
        root.insert("inference".into(), Value::Object(inference));
    }
    if let (Some(m), Some(s)) = (&method, method_section) {
        root.insert(m.medseg_section.into(), Value::Object(s));
    }
    let notes = std::mem::take(&mut cx.notes);
    if !opts.allow_unmapped && notes.iter().any(|n| n.effect == Effect::ChangesResults) {
        return Err(PymicError::Unmapped(notes));
    }
    let root = strip_nulls(Value::Object(root));
    let toml = toml::to_string_pretty(&root).map_err(|e| PymicError::Invalid {
        key: "(output)".into(),
        message: format!("could not write TOML: {e}"),
    })?;
    Ok(PymicImport { toml, notes })
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
