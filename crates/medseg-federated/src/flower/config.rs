//! The node config: a site of a federation, as one TOML file (`[node]`
//! and `[site]`), read with the same rules as the simulation's
//! federation files.

use std::path::{Path, PathBuf};

use medseg_config::ExperimentConfig;
use serde::{Deserialize, Serialize};

use super::FlowerError;
use crate::simulation::{override_value, FederationConfig, FederationSettings, SiteConfig};

/// A node's config file: how the site trains and which arrays stay at
/// the site. Unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Learner, strategy, defaults for the rounds.
    pub node: NodeSettings,
    /// The site: name, manifests, overrides (as a `[[sites]]` table of a
    /// federation file).
    pub site: SiteConfig,
}

/// The `[node]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// The learner config (an experiment TOML), relative to this file.
    pub base: PathBuf,
    /// The learner the site runs (default `supervised`).
    #[serde(default = "default_learner")]
    pub learner: String,
    /// The medseg aggregation strategy whose notion of local arrays the
    /// node follows (`FedAvg` and `FedProx`: none; `FedBN`: normalisation
    /// layers; `SegViz`: the heads). Local arrays are never sent to the
    /// server nor replaced by its arrays. Default `FedAvg`.
    #[serde(default = "default_strategy")]
    pub strategy: String,
    /// That strategy's parameters (a table).
    #[serde(default)]
    pub strategy_params: Option<serde_json::Value>,
    /// Local steps per round when the server's config has no
    /// `local-iterations`.
    pub local_iterations: usize,
    /// Rounds the learning-rate schedule spans (the schedule runs over
    /// `rounds x local_iterations` steps).
    pub rounds: usize,
    /// Keep the optimiser's state from round to round (default false).
    #[serde(default)]
    pub keep_optimizer: bool,
    /// Seed of the initial weights and the data order (default 1). Sites
    /// given the same seed and network start from the same weights.
    #[serde(default = "one_u64")]
    pub seed: u64,
    /// Every training row says which classes it annotated (default true).
    #[serde(default = "yes")]
    pub partial_labels: bool,
    /// Where the node writes its log (`node.csv`), its last model and,
    /// with `save_replies`, every reply's arrays.
    pub output_dir: PathBuf,
    /// Seconds between heartbeats the node promises (10 to 1800; default
    /// 30).
    #[serde(default = "thirty")]
    pub heartbeat_interval: f64,
    /// Write the arrays of every reply to
    /// `output_dir/replies/<run>_<round>_<type>.safetensors` (for checks;
    /// default false).
    #[serde(default)]
    pub save_replies: bool,
}

fn default_learner() -> String {
    "supervised".into()
}
fn default_strategy() -> String {
    "FedAvg".into()
}
fn one_u64() -> u64 {
    1
}
fn yes() -> bool {
    true
}
fn thirty() -> f64 {
    30.0
}

impl NodeConfig {
    /// Reads `path` and applies `overrides` (`node.key=value` or
    /// `site.key=value`); `base` becomes relative to the file's folder.
    ///
    /// # Errors
    /// A missing file, bad TOML, an unknown key, a value out of range:
    /// naming the file and the key.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, FlowerError> {
        let err = |msg: String| FlowerError::Config {
            path: path.to_path_buf(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| err(format!("not valid TOML: {e}")))?;
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| err(format!("override `{o}` is not KEY=VALUE")))?;
            let (section, key) = k
                .trim()
                .split_once('.')
                .filter(|(s, _)| *s == "node" || *s == "site")
                .ok_or_else(|| err(format!("override `{o}`: keys are `node.*` or `site.*`")))?;
            let t = table
                .entry(section)
                .or_insert_with(|| toml::Value::Table(Default::default()));
            let toml::Value::Table(t) = t else {
                return Err(err(format!("`{section}` must be a table")));
            };
            t.insert(key.to_string(), override_value(v.trim()));
        }
        let mut cfg: NodeConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| err(e.to_string()))?;
        if cfg.node.base.is_relative() {
            cfg.node.base = path.parent().unwrap_or(Path::new(".")).join(&cfg.node.base);
        }
        cfg.federation().validate().map_err(|m| {
            err(m
                .replace("federation.", "node.")
                .replace("[[sites]]", "[site]"))
        })?;
        if !(10.0..=1800.0).contains(&cfg.node.heartbeat_interval) {
            return Err(err(format!(
                "node.heartbeat_interval must be between 10 and 1800 seconds, got {}",
                cfg.node.heartbeat_interval
            )));
        }
        Ok(cfg)
    }

    /// The node as a one-site federation (to reuse the simulation's rules
    /// for building the site's learner config).
    pub fn federation(&self) -> FederationConfig {
        let n = &self.node;
        FederationConfig {
            federation: FederationSettings {
                base: n.base.clone(),
                learner: n.learner.clone(),
                strategy: n.strategy.clone(),
                strategy_params: n.strategy_params.clone(),
                rounds: n.rounds,
                local_iterations: n.local_iterations,
                fraction: 1.0,
                min_sites: 1,
                dropout: 0.0,
                keep_optimizer: n.keep_optimizer,
                validate_every: 0,
                seed: n.seed,
                output_dir: n.output_dir.clone(),
                partial_labels: n.partial_labels,
                // a Flower node trains what the ServerApp asks, no more
                finetune_iterations: 0,
                finetune_scope: Default::default(),
            },
            sites: vec![self.site.clone()],
        }
    }

    /// The site's learner config (see [`FederationConfig::site_config`];
    /// its output folder is `output_dir/sites/<name>`).
    ///
    /// # Errors
    /// The base config's errors, naming the site.
    pub fn site_config(
        &self,
        extra: &[String],
        cwd: &Path,
    ) -> Result<ExperimentConfig, FlowerError> {
        Ok(self.federation().site_config(0, extra, cwd)?)
    }
}
