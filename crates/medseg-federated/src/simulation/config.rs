//! The federation config: the strategy, the rounds and the sites, each
//! site a learner config of its own (a shared base file plus the site's
//! manifests and overrides).

use crate::error::{FedError, Result};
use medseg_config::ExperimentConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A federation, as read from its TOML file (`[federation]` and one
/// `[[sites]]` table per site). Unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// Rounds, strategy, participation.
    pub federation: FederationSettings,
    /// The sites, in order (at least one).
    pub sites: Vec<SiteConfig>,
}

/// The `[federation]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSettings {
    /// The learner config (an experiment TOML) every site starts from,
    /// relative to the federation file.
    pub base: PathBuf,
    /// The learner each site runs (default `supervised`; any registered
    /// learner that trains one network).
    #[serde(default = "default_learner")]
    pub learner: String,
    /// The aggregation strategy's registered name (`FedAvg`, `FedProx`,
    /// `FedBN`, `FedAdam`, `FedYogi`, `SegViz` or your own).
    pub strategy: String,
    /// The strategy's parameters (a table; unknown keys are errors).
    #[serde(default)]
    pub strategy_params: Option<serde_json::Value>,
    /// Communication rounds.
    pub rounds: usize,
    /// Local training steps of a site per round.
    pub local_iterations: usize,
    /// Fraction of the sites asked to train each round (at least
    /// `min_sites`), drawn with the seed; default 1.
    #[serde(default = "one")]
    pub fraction: f64,
    /// Fewest sites asked per round; default 1.
    #[serde(default = "one_usize")]
    pub min_sites: usize,
    /// Probability that an asked site fails to answer in a round (a
    /// simulated drop-out, drawn with the seed); default 0.
    #[serde(default)]
    pub dropout: f64,
    /// Each site keeps its optimiser's state (Adam's moments) from round to
    /// round (a stateful client); default false: a fresh optimiser every
    /// round, as a stateless Flower client.
    #[serde(default)]
    pub keep_optimizer: bool,
    /// Validate every site's model every this many rounds (and after the
    /// last); 0 never. Default 1.
    #[serde(default = "one_usize")]
    pub validate_every: usize,
    /// Seed of the initial weights, of the site sampling and drop-outs, and
    /// of every site's data order. Default 1.
    #[serde(default = "one_u64")]
    pub seed: u64,
    /// Where logs, curves and models go.
    pub output_dir: PathBuf,
    /// Sites hold partial labels: every row of a site's training manifest
    /// must say which classes it annotated (`annotated_classes`), and the
    /// losses receive them. Default true.
    #[serde(default = "yes")]
    pub partial_labels: bool,
    /// After the last round, every site fine-tunes its model on its own
    /// data for this many steps (personalisation; with `finetune_scope =
    /// "local"` SegViz's optional head fine-tuning). The learning-rate
    /// schedule spans rounds and fine-tuning; the site models are written
    /// to `sites/<name>/model.safetensors`. Default 0 (none).
    #[serde(default)]
    pub finetune_iterations: usize,
    /// What fine-tuning trains: `local` (only the strategy's local arrays,
    /// e.g. SegViz's heads or FedBN's norms; every shared array stays the
    /// global one) or `all` (every array). Default `local`.
    #[serde(default)]
    pub finetune_scope: FinetuneScope,
}

/// What [`FederationSettings::finetune_iterations`] trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinetuneScope {
    /// The strategy's local arrays only.
    #[default]
    Local,
    /// Every array.
    All,
}

/// One `[[sites]]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The site's name (unique; a folder under `output_dir/sites`).
    pub name: String,
    /// Its training manifest (relative to the base config's
    /// `dataset.root`).
    pub train_csv: PathBuf,
    /// Its validation manifest, if any.
    #[serde(default)]
    pub valid_csv: Option<PathBuf>,
    /// Overrides of the base config for this site only
    /// (`section.key=value`, as `--set`).
    #[serde(default)]
    pub set: Vec<String>,
}

fn default_learner() -> String {
    "supervised".into()
}
fn one() -> f64 {
    1.0
}
fn one_usize() -> usize {
    1
}
fn one_u64() -> u64 {
    1
}
fn yes() -> bool {
    true
}

/// Splits command-line overrides: keys under `federation.` change the
/// federation file, every other key goes to each site's learner config.
pub fn split_overrides(set: &[String]) -> (Vec<String>, Vec<String>) {
    set.iter()
        .cloned()
        .partition(|o| o.trim_start().starts_with("federation."))
}

/// A TOML value from an override's text: a number, boolean, array or
/// table when it parses as one, a string otherwise.
pub(crate) fn override_value(text: &str) -> toml::Value {
    let doc = format!("v = {text}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(text.into())),
        Err(_) => toml::Value::String(text.into()),
    }
}

impl FederationConfig {
    /// Reads `path` and applies `overrides` (`federation.key=value`; other
    /// keys are rejected here, see [`split_overrides`]); relative paths
    /// (`base`, `output_dir`) become relative to the current folder
    /// through the file's folder for `base` and as written for
    /// `output_dir`.
    ///
    /// # Errors
    /// A missing file, malformed TOML, an unknown key, a bad value: the
    /// error names the file and the key.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let cfg_err = |msg: String| FedError::Config {
            path: path.to_path_buf(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| FedError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| cfg_err(format!("not valid TOML: {e}")))?;
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| cfg_err(format!("override `{o}` is not KEY=VALUE")))?;
            let key = k.trim();
            let field = key.strip_prefix("federation.").ok_or_else(|| {
                cfg_err(format!(
                    "override `{o}`: only `federation.*` keys belong to the federation file"
                ))
            })?;
            let section = table
                .entry("federation")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(section) = section else {
                return Err(cfg_err("`federation` must be a table".into()));
            };
            section.insert(field.to_string(), override_value(v.trim()));
        }
        let mut cfg: FederationConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| cfg_err(e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        if cfg.federation.base.is_relative() {
            cfg.federation.base = dir.join(&cfg.federation.base);
        }
        cfg.validate().map_err(cfg_err)?;
        Ok(cfg)
    }

    /// Checks counts and ranges; the message names the key.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let f = &self.federation;
        if f.rounds == 0 {
            return Err("federation.rounds must be at least 1".into());
        }
        if f.local_iterations == 0 {
            return Err("federation.local_iterations must be at least 1".into());
        }
        if !(f.fraction > 0.0 && f.fraction <= 1.0) {
            return Err(format!(
                "federation.fraction must be in (0, 1], got {}",
                f.fraction
            ));
        }
        if !(0.0..1.0).contains(&f.dropout) {
            return Err(format!(
                "federation.dropout must be in [0, 1), got {}",
                f.dropout
            ));
        }
        if self.sites.is_empty() {
            return Err("a federation needs at least one [[sites]] table".into());
        }
        if f.min_sites == 0 || f.min_sites > self.sites.len() {
            return Err(format!(
                "federation.min_sites must be between 1 and the {} sites, got {}",
                self.sites.len(),
                f.min_sites
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for s in &self.sites {
            let ok = !s.name.is_empty()
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !s.name.starts_with('.');
            if !ok {
                return Err(format!(
                    "sites.name {:?}: use letters, digits, `-`, `_` or `.` (it names a folder)",
                    s.name
                ));
            }
            if !names.insert(s.name.as_str()) {
                return Err(format!("sites.name `{}` is given twice", s.name));
            }
        }
        Ok(())
    }

    /// The learner config of site `k`: the base file with `extra`
    /// overrides (the command line's non-federation keys) and the site's
    /// own `set`, its manifests, `training.iterations` = rounds x local
    /// iterations + fine-tuning iterations (so the learning-rate schedule
    /// spans the federation),
    /// the federation's seed, and `output_dir/sites/<name>` as its
    /// output folder; relative paths resolved against `cwd`.
    ///
    /// # Errors
    /// The base config's errors, naming the site.
    pub fn site_config(&self, k: usize, extra: &[String], cwd: &Path) -> Result<ExperimentConfig> {
        let s = &self.sites[k];
        let mut set: Vec<String> = extra.to_vec();
        set.extend(s.set.iter().cloned());
        let mut cfg =
            ExperimentConfig::load(&self.federation.base, &set).map_err(|e| FedError::Site {
                site: s.name.clone(),
                msg: format!("learner config: {e}"),
            })?;
        cfg.dataset.train_csv = s.train_csv.clone();
        cfg.dataset.valid_csv = s.valid_csv.clone();
        cfg.training.iterations = self.federation.rounds * self.federation.local_iterations
            + self.federation.finetune_iterations;
        cfg.training.seed = self.federation.seed;
        cfg.training.resume = false;
        cfg.training.output_dir = self.federation.output_dir.join("sites").join(&s.name);
        cfg.resolve_paths(cwd);
        Ok(cfg)
    }
}
