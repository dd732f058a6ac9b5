//! The in-process federation: every site is a [`Trainer`] in this
//! process; each round the server asks a seeded sample of sites to train a
//! few local steps from the global weights, some of them drop out, and
//! the strategy aggregates the answers.

use super::config::{FederationConfig, FinetuneScope};
use super::export::{final_model, SiteModel};
use super::log::{RoundRecord, RoundsLog};
use crate::error::{FedError, Result};
use crate::site::{site_err, LocalSite};
use crate::{Aggregator, AggregatorRegistry, ClientUpdate, ProximalTerm, Weights};
use medseg_config::ExperimentConfig;
use medseg_learners::Registries;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use std::time::Instant;

/// What a finished simulation gives.
#[derive(Debug, Clone)]
pub struct SimulationSummary {
    /// Rounds run.
    pub rounds: usize,
    /// The multi-organ model (a medseg-nets checkpoint: the global weights,
    /// with the local arrays of FedBN and SegViz combined as
    /// [`final_model`] describes).
    pub model: PathBuf,
    /// The raw global weights after the last round.
    pub global: PathBuf,
    /// Per-round log (CSV) and its curves (PNG).
    pub log_csv: PathBuf,
    /// The curves.
    pub curves: PathBuf,
    /// Mean validation Dice of each site on its own annotated classes after
    /// the last validation (site name, Dice).
    pub last_valid: Vec<(String, f64)>,
    /// How the final model's local arrays were combined.
    pub export_note: String,
}

impl std::fmt::Display for SimulationSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} rounds; model {}", self.rounds, self.model.display())?;
        for (s, d) in &self.last_valid {
            write!(f, "; {s} valid Dice {d:.4}")?;
        }
        Ok(())
    }
}

/// A federation ready to run.
pub struct Simulation {
    cfg: FederationConfig,
    sites: Vec<LocalSite>,
    aggregator: Box<dyn Aggregator>,
    global: Weights,
    class_num: usize,
    /// Print one line per round.
    pub progress: bool,
}

impl Simulation {
    /// Builds every site's trainer from `site_cfgs` (one per site of
    /// `cfg`, e.g. from [`FederationConfig::site_config`]) with the
    /// learner registries of `registries`, and the strategy from
    /// `aggregators`. Every site starts from the first site's initial
    /// weights.
    ///
    /// # Errors
    /// A site whose trainer cannot be built, whose manifest lacks
    /// `annotated_classes` on a row (with `partial_labels`), whose network
    /// disagrees with the first site's in an array's shape or name; an
    /// unknown strategy or bad parameters; with local heads (SegViz), a
    /// class annotated at two sites. Errors name the site and the key.
    pub fn new(
        cfg: &FederationConfig,
        site_cfgs: Vec<ExperimentConfig>,
        registries: &dyn Fn() -> Registries,
        aggregators: &AggregatorRegistry,
    ) -> Result<Self> {
        if site_cfgs.len() != cfg.sites.len() {
            return Err(FedError::Config {
                path: cfg.federation.base.clone(),
                msg: format!(
                    "{} learner configs for {} sites",
                    site_cfgs.len(),
                    cfg.sites.len()
                ),
            });
        }
        let params = cfg
            .federation
            .strategy_params
            .clone()
            .unwrap_or(serde_json::Value::Null);
        let mut aggregator = aggregators.build(&cfg.federation.strategy, &params)?;
        let mut sites = Vec::new();
        let class_num = site_cfgs[0].dataset.class_num;
        for (sc, scfg) in cfg.sites.iter().zip(site_cfgs) {
            let name = sc.name.clone();
            if scfg.dataset.class_num != class_num {
                return Err(site_err(
                    &name,
                    format!(
                        "dataset.class_num is {}, the first site's is {class_num}",
                        scfg.dataset.class_num
                    ),
                ));
            }
            sites.push(LocalSite::new(
                &name,
                scfg,
                &cfg.federation.learner,
                cfg.federation.keep_optimizer,
                cfg.federation.partial_labels,
                registries(),
            )?);
        }
        let global = Weights::from_varmap(sites[0].trainer.varmap())?;
        aggregator.prepare(&global)?;
        for s in &sites[1..] {
            let w = Weights::from_varmap(s.trainer.varmap())?;
            check_same_network(&s.name, &sites[0].name, &global, &w, aggregator.as_ref())?;
            global.load_into(s.trainer.varmap())?;
        }
        let sim = Simulation {
            cfg: cfg.clone(),
            sites,
            aggregator,
            global,
            class_num,
            progress: false,
        };
        if sim.has_local_heads() {
            sim.check_one_site_per_class()?;
        }
        Ok(sim)
    }

    /// Whether some local arrays are output layers (rows per class), as
    /// with SegViz.
    fn has_local_heads(&self) -> bool {
        super::export::head_keys(&self.global, self.class_num, |k| {
            self.aggregator.is_local(k)
        })
        .next()
        .is_some()
    }

    fn check_one_site_per_class(&self) -> Result<()> {
        let mut owner: std::collections::BTreeMap<u16, &str> = Default::default();
        for s in &self.sites {
            for &c in &s.organs {
                if let Some(other) = owner.insert(c, &s.name) {
                    return Err(site_err(
                        &s.name,
                        format!(
                            "annotated_classes: class {c} is annotated at site `{other}` too; \
                             with site heads ({}) each class needs one site",
                            self.aggregator.name()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The global weights now.
    pub fn global(&self) -> &Weights {
        &self.global
    }

    /// Runs every round, writing `rounds.csv`, `rounds.png`,
    /// `global.safetensors` and `model.safetensors` (and each site's own
    /// `sites/<name>/model.safetensors` when the strategy keeps local
    /// arrays) under the federation's `output_dir`.
    ///
    /// # Errors
    /// A site's training or validation error (naming the site), an
    /// aggregation error, a file that cannot be written.
    pub fn run(&mut self) -> Result<SimulationSummary> {
        let f = self.cfg.federation.clone();
        let out = f.output_dir.clone();
        std::fs::create_dir_all(&out).map_err(|e| FedError::Io {
            path: out.clone(),
            source: e,
        })?;
        let names: Vec<String> = self.sites.iter().map(|s| s.name.clone()).collect();
        let mut log = RoundsLog::new(&out, names.clone());
        let mut rng = ChaCha8Rng::seed_from_u64(f.seed ^ 0x5EED_F00D);
        let n = self.sites.len();
        let asked_n = ((f.fraction * n as f64).round() as usize).clamp(f.min_sites, n);
        let mut last_valid = Vec::new();
        for round in 1..=f.rounds {
            let t0 = Instant::now();
            let mut asked: Vec<usize> = sample(&mut rng, n, asked_n).into_vec();
            asked.sort_unstable();
            let answered: Vec<usize> = asked
                .iter()
                .copied()
                .filter(|_| rng.random::<f64>() >= f.dropout)
                .collect();
            let mut rec = RoundRecord::new(round, n);
            for &k in &asked {
                rec.asked[k] = true;
            }
            let mut updates = Vec::new();
            for &k in &answered {
                let u = self.local_round(k, f.local_iterations)?;
                rec.loss[k] = u.metrics.get("loss").copied().unwrap_or(f64::NAN);
                rec.answered[k] = true;
                updates.push(u);
            }
            if !updates.is_empty() {
                self.global = self.aggregator.aggregate(round, &self.global, &updates)?;
            }
            let validate =
                f.validate_every > 0 && (round % f.validate_every == 0 || round == f.rounds);
            if validate {
                last_valid.clear();
                for k in 0..n {
                    let d = self.validate_site(k)?;
                    rec.valid[k] = d;
                    if let Some(d) = d {
                        last_valid.push((self.sites[k].name.clone(), d));
                    }
                }
            }
            rec.seconds = t0.elapsed().as_secs_f64();
            if self.progress {
                eprintln!("{}", rec.describe(&names));
            }
            log.push(rec)?;
        }
        // every site ends with the last global weights and its own local arrays
        for k in 0..n {
            self.receive_global(k)?;
        }
        if f.finetune_iterations > 0 {
            self.finetune(f.finetune_iterations, f.finetune_scope)?;
        }
        let finetuned = f.finetune_iterations > 0;
        let global_path = out.join("global.safetensors");
        self.global.save(&global_path)?;
        let net_config = self.sites[0].trainer.network_config().clone();
        let models: Vec<SiteModel> = self
            .sites
            .iter()
            .map(|s| {
                Ok(SiteModel {
                    name: s.name.clone(),
                    weights: Weights::from_varmap(s.trainer.varmap())?,
                    organs: s.organs.clone(),
                    examples: s.session.num_examples(),
                })
            })
            .collect::<Result<_>>()?;
        let local = |k: &str| self.aggregator.is_local(k);
        let (model, export_note) = final_model(&self.global, &models, self.class_num, &local)?;
        let model_path = out.join("model.safetensors");
        save_network(&model_path, &model, &net_config)?;
        if finetuned || self.global.keys().any(local) {
            for (s, m) in self.sites.iter().zip(&models) {
                let p = out.join("sites").join(&s.name).join("model.safetensors");
                save_network(&p, &m.weights, &net_config)?;
            }
        }
        let (log_csv, curves) = log.finish()?;
        Ok(SimulationSummary {
            rounds: f.rounds,
            model: model_path,
            global: global_path,
            log_csv,
            curves,
            last_valid,
            export_note,
        })
    }

    /// Every site trains `steps` more steps on its own data, keeping its
    /// optimiser state: every array (`All`), or only the strategy's local
    /// arrays (`Local`: after each step the shared arrays are reset to the
    /// global weights, so each step's gradient is taken, and the local
    /// arrays move, with the shared ones held at the federation's).
    fn finetune(&mut self, steps: usize, scope: FinetuneScope) -> Result<()> {
        let has_local = self.global.keys().any(|k| self.aggregator.is_local(k));
        if scope == FinetuneScope::Local && !has_local {
            return Err(FedError::Config {
                path: self.cfg.federation.base.clone(),
                msg: format!(
                    "federation.finetune_scope = \"local\", but strategy {} keeps no array \
                     local: use finetune_scope = \"all\" or a strategy with local arrays \
                     (FedBN, SegViz)",
                    self.aggregator.name()
                ),
            });
        }
        for k in 0..self.sites.len() {
            self.sites[k].session.keep_optimizer = true;
            match scope {
                FinetuneScope::All => {
                    self.sites[k].train(steps, None)?;
                }
                FinetuneScope::Local => {
                    for _ in 0..steps {
                        self.sites[k].train(1, None)?;
                        self.receive_global(k)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Loads the global weights into site `k`'s network, keeping its local
    /// arrays.
    fn receive_global(&self, k: usize) -> Result<()> {
        self.sites[k].receive(&self.global, &|key| self.aggregator.is_local(key))
    }

    /// Site `k` receives the global weights, trains `steps` steps (with the
    /// proximal term when the strategy asks for one) and answers.
    fn local_round(&mut self, k: usize, steps: usize) -> Result<ClientUpdate> {
        self.receive_global(k)?;
        let prox = match self.aggregator.proximal_mu() {
            Some(mu) => Some(ProximalTerm::for_aggregator(
                &self.global,
                self.aggregator.as_ref(),
                mu,
                self.sites[k].trainer.device(),
            )?),
            None => None,
        };
        self.sites[k].train(steps, prox.as_ref())
    }

    /// Mean validation Dice of site `k`'s model (global weights, its local
    /// arrays) over the classes it annotated; `None` without a validation
    /// manifest.
    fn validate_site(&self, k: usize) -> Result<Option<f64>> {
        self.receive_global(k)?;
        self.sites[k].validate()
    }
}

/// Site `site`'s initial weights must have the first site's arrays (those
/// that are shared) with the same shapes.
fn check_same_network(
    site: &str,
    first: &str,
    reference: &Weights,
    w: &Weights,
    agg: &dyn Aggregator,
) -> Result<()> {
    for (k, a) in reference.iter() {
        if agg.is_local(k) {
            continue;
        }
        match w.get(k) {
            None => {
                return Err(site_err(
                    site,
                    format!(
                    "its network has no array `{k}`, which site `{first}`'s has (network section)"
                ),
                ))
            }
            Some(b) if b.shape() != a.shape() => {
                return Err(FedError::ShapeMismatch {
                    site: site.to_string(),
                    key: k.to_string(),
                    expected: a.shape().to_vec(),
                    found: b.shape().to_vec(),
                })
            }
            _ => {}
        }
    }
    if let Some(k) = w
        .keys()
        .find(|k| !reference.contains_key(k) && !agg.is_local(k))
    {
        return Err(site_err(
            site,
            format!("its network has array `{k}`, which site `{first}`'s lacks (network section)"),
        ));
    }
    Ok(())
}

/// Writes `w` as a medseg-nets checkpoint with `net_config`.
fn save_network(path: &std::path::Path, w: &Weights, net_config: &serde_json::Value) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| FedError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
    }
    let vm = w.to_varmap(&candle_core::Device::Cpu)?;
    medseg_nets::save_checkpoint(path, &vm, net_config).map_err(|e| FedError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}
