#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod pymic;
mod schema;

pub use pymic::{import_pymic, Effect, PymicError, PymicImport, PymicNote, PymicOptions};
pub use schema::*;

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Errors from loading, overriding or validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The config file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Parsing or typing failed; the message names the key and the file.
    #[error("{path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// What was wrong, naming the key.
        message: String,
    },
    /// A `--set key=value` override that is not of that form.
    #[error("override `{0}`: expected key=value, e.g. training.lr=0.001")]
    Override(String),
    /// A value that parsed but makes no sense.
    #[error("{path}: invalid value for `{key}`: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The dotted key at fault.
        key: String,
        /// What was expected.
        message: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// The prefix of environment overrides: `MEDSEG_TRAINING__LR=0.01` sets
/// `training.lr`. Sections and keys are separated by a double underscore.
pub const ENV_PREFIX: &str = "MEDSEG";

/// Environment variables that share the prefix but are process settings,
/// not config keys, and are therefore not read as overrides:
/// `MEDSEG_MALLOC=default` (leave glibc's allocator untuned, see
/// `medseg_core::runtime`) and `MEDSEG_WINOGRAD=0` (medseg-ops computes 3x3
/// convolutions through im2col only).
pub const RUNTIME_ENV: &[&str] = &["MEDSEG_MALLOC", "MEDSEG_WINOGRAD"];

/// The process environment less [`RUNTIME_ENV`] and variables that are not
/// valid Unicode (which cannot be config overrides).
fn override_env() -> config::Map<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| !RUNTIME_ENV.contains(&k.as_str()))
        .collect()
}

/// Parses one `--set` value as TOML (so `3`, `0.1`, `true`, `[96, 96]` and
/// `"adam"` keep their types); a bare word that is not valid TOML becomes a string.
fn parse_override_value(raw: &str) -> config::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => toml_to_config(t.remove("v").expect("key v was just parsed")),
        Err(_) => config::Value::from(raw.to_string()),
    }
}

fn toml_to_config(v: toml::Value) -> config::Value {
    match v {
        toml::Value::String(s) => s.into(),
        toml::Value::Integer(i) => i.into(),
        toml::Value::Float(f) => f.into(),
        toml::Value::Boolean(b) => b.into(),
        toml::Value::Datetime(d) => d.to_string().into(),
        toml::Value::Array(a) => a.into_iter().map(toml_to_config).collect::<Vec<_>>().into(),
        toml::Value::Table(t) => t
            .into_iter()
            .map(|(k, v)| (k, toml_to_config(v)))
            .collect::<std::collections::HashMap<_, _>>()
            .into(),
    }
}

impl ExperimentConfig {
    /// Loads `path` (TOML), then applies environment overrides
    /// (`MEDSEG_SECTION__KEY=value`), then `overrides` (`section.key=value`, in
    /// order), then validates. Relative paths in the result are left as written;
    /// [`ExperimentConfig::resolve_paths`] makes them relative to a base folder.
    ///
    /// # Errors
    /// A missing file, malformed TOML, an unknown key or a wrong type: the
    /// error names the file and the key.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        if !path.is_file() {
            return Err(ConfigError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "config file not found"),
            });
        }
        let mut builder = config::Config::builder()
            .add_source(config::File::new(
                &path.to_string_lossy(),
                config::FileFormat::Toml,
            ))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(override_env())),
            );
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| ConfigError::Override(o.clone()))?;
            let k = k.trim();
            if k.is_empty() {
                return Err(ConfigError::Override(o.clone()));
            }
            builder = builder
                .set_override(k, parse_override_value(v.trim()))
                .map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: format!("override `{o}`: {e}"),
                })?;
        }
        let parse_err = |e: config::ConfigError| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let cfg: ExperimentConfig = builder
            .build()
            .map_err(parse_err)?
            .try_deserialize()
            .map_err(parse_err)?;
        cfg.validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                path: path.to_path_buf(),
                key,
                message,
            })?;
        Ok(cfg)
    }

    /// Parses a TOML string (no environment or command-line overrides), for
    /// tests and for configs embedded in checkpoints.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let origin = PathBuf::from("<string>");
        let cfg: ExperimentConfig = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Parse {
                path: origin.clone(),
                message: e.to_string(),
            })?;
        cfg.validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                path: origin,
                key,
                message,
            })?;
        Ok(cfg)
    }

    /// The configuration as TOML text (after overrides), e.g. to save beside a run.
    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# could not serialise: {e}"))
    }

    /// A SHA-256 of the canonical JSON form, stored in checkpoints so that a
    /// resumed or evaluated run can tell whether its config changed.
    pub fn hash(&self) -> String {
        hash_json(self)
    }

    /// Makes relative dataset and output paths relative to `base` (usually the
    /// current directory, or the config file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.dataset.root);
        fix(&mut self.training.output_dir);
        if let Some(o) = self.inference.output_dir.as_mut() {
            fix(o);
        }
    }
}

/// SHA-256 (hex) of the JSON serialisation of `value`, with object keys sorted.
pub fn hash_json<T: Serialize>(value: &T) -> String {
    let v = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    let canonical = canonical_json(&v);
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn canonical_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<_> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        serde_json::Value::from(k.as_str()),
                        canonical_json(&m[k])
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        serde_json::Value::Array(a) => {
            format!(
                "[{}]",
                a.iter().map(canonical_json).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}
