//! Setting up a run: the registries a run builds its parts from, the
//! device, and [`TrainerBuilder`], which turns a configuration into a
//! [`Trainer`].

use crate::error::{LearnError, Result};
use crate::learner::LearnerInit;
use crate::registry::LearnerRegistry;
use crate::trainer::Frozen;
use crate::trainer::Trainer;
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use medseg_config::ExperimentConfig;
use medseg_io::Manifest;
use medseg_losses::{Loss, LossRegistry};
use medseg_nets::PretrainedSpec;
use medseg_nets::{NetRegistry, SegNetwork};
use medseg_transforms::{Mode, Pipeline, Registry as TransformRegistry};
use std::path::{Path, PathBuf};

/// The name → constructor tables a run builds its parts from. Start from
/// [`Registries::with_builtins`] and register your own network, loss,
/// transform or learner; the names then work in configs like the built-in ones.
pub struct Registries {
    /// Networks (`network.name`).
    pub networks: NetRegistry,
    /// Losses (`training.loss.name`).
    pub losses: LossRegistry,
    /// Transforms (`dataset.train_transforms`, `dataset.test_transforms`).
    pub transforms: TransformRegistry,
    /// Learners (`semi.method`, `weak.method`, or `supervised`).
    pub learners: LearnerRegistry,
}

impl Registries {
    /// Every built-in network, loss, transform and learner.
    pub fn with_builtins() -> Self {
        Registries {
            networks: NetRegistry::with_builtins(),
            losses: LossRegistry::with_builtins(),
            transforms: TransformRegistry::with_builtins(),
            learners: LearnerRegistry::with_builtins(),
        }
    }
}

impl Default for Registries {
    fn default() -> Self {
        Self::with_builtins()
    }
}

/// The device named by `name` (`training.device`): `cpu`, `cuda` (GPU 0)
/// or `cuda:N`, as [`medseg_infer::parse_device`] reads it; a CUDA device
/// needs a build with the `cuda` feature.
pub fn parse_device(name: &str) -> Result<Device> {
    medseg_infer::parse_device(name)
        .map_err(|e| LearnError::Config(format!("training.device: {e}")))
}

/// The learner a configuration asks for: `semi.method` when there is a
/// `[semi]` section, else `weak.method` for `[weak]`, else `noisy.method`
/// for `[noisy]`, else `supervised`.
pub fn learner_name(cfg: &ExperimentConfig) -> &str {
    cfg.semi
        .as_ref()
        .or(cfg.weak.as_ref())
        .or(cfg.noisy.as_ref())
        .map_or("supervised", |s| s.method.as_str())
}

/// Builds a [`Trainer`] from a configuration: the network, loss, transforms
/// and learner by name from [`Registries`], on a device.
///
/// ```no_run
/// # fn main() -> medseg_learners::Result<()> {
/// use medseg_learners::TrainerBuilder;
/// let mut cfg = medseg_config::ExperimentConfig::load(
///     std::path::Path::new("configs/semi/cps.toml"), &[])
///     .map_err(|e| medseg_learners::LearnError::Config(e.to_string()))?;
/// cfg.resolve_paths(&std::env::current_dir().unwrap());
/// let summary = TrainerBuilder::new(cfg).build()?.run()?;
/// println!("{summary}");
/// # Ok(()) }
/// ```
pub struct TrainerBuilder {
    cfg: ExperimentConfig,
    registries: Registries,
    device: Option<Device>,
    learner: Option<String>,
    progress: bool,
}

impl TrainerBuilder {
    /// A builder for `cfg` (paths resolved already, see
    /// [`ExperimentConfig::resolve_paths`]) with the built-in registries,
    /// the device of `training.device` and the learner of [`learner_name`].
    pub fn new(cfg: ExperimentConfig) -> Self {
        TrainerBuilder {
            cfg,
            registries: Registries::with_builtins(),
            device: None,
            learner: None,
            progress: true,
        }
    }

    /// Uses `registries` instead of the built-in ones.
    pub fn registries(mut self, registries: Registries) -> Self {
        self.registries = registries;
        self
    }

    /// The registries, to add entries in place.
    pub fn registries_mut(&mut self) -> &mut Registries {
        &mut self.registries
    }

    /// Runs on `device` instead of `training.device`.
    pub fn device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
    }

    /// Trains with the learner registered as `name` instead of the
    /// configuration's.
    pub fn learner(mut self, name: &str) -> Self {
        self.learner = Some(name.to_string());
        self
    }

    /// Shows a progress bar (default) or not.
    pub fn progress(mut self, show: bool) -> Self {
        self.progress = show;
        self
    }

    /// Builds the student network, the loss and the learner (which builds
    /// whatever extra networks it needs), checking that network and data agree.
    pub fn build(self) -> Result<Trainer> {
        let TrainerBuilder {
            cfg,
            registries,
            device,
            learner,
            progress,
        } = self;
        let device = match device {
            Some(d) => d,
            None => parse_device(&cfg.training.device)?,
        };
        let net_config = network_config(&cfg);
        let built = build_net_pretrained(&registries.networks, &net_config, &device)?;
        let frozen = Frozen {
            vars: medseg_nets::vars_named(&built.varmap, &built.loaded),
            until: built.pretrained.freeze_iterations,
        };
        let (varmap, net) = (built.varmap, built.net);
        if net.class_num() != cfg.dataset.class_num {
            return Err(LearnError::Config(format!(
                "network.class_num is {} but dataset.class_num is {}",
                net.class_num(),
                cfg.dataset.class_num
            )));
        }
        if net.in_chns() != cfg.dataset.in_channels {
            return Err(LearnError::Config(format!(
                "network.in_chns is {} but dataset.in_channels is {}",
                net.in_chns(),
                cfg.dataset.in_channels
            )));
        }
        let loss = build_loss_with(&registries.losses, &cfg.training.loss)?;
        let name = learner.unwrap_or_else(|| learner_name(&cfg).to_string());
        let learner = registries.learners.build(
            &name,
            &LearnerInit {
                config: &cfg,
                device: &device,
                student: &varmap,
                student_net: net.as_ref(),
                network_config: &net_config,
                networks: &registries.networks,
            },
        )?;
        Ok(Trainer::from_parts(
            cfg,
            device,
            (varmap, net, net_config),
            loss,
            learner,
            registries.transforms,
            progress,
        )
        .with_frozen(frozen))
    }
}

/// Path of a manifest named in the config (relative to the dataset root).
pub fn manifest_path(cfg: &ExperimentConfig, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cfg.dataset.root.join(p)
    }
}

/// Loads the manifest `p` of the config, with paths relative to the root.
pub fn read_manifest(cfg: &ExperimentConfig, p: &Path) -> Result<Manifest> {
    Ok(Manifest::read(
        &manifest_path(cfg, p),
        Some(&cfg.dataset.root),
    )?)
}

/// Builds the loss of `training.loss` (a table with `name` and parameters)
/// from the built-in losses.
pub fn build_loss(spec: &serde_json::Value) -> Result<Box<dyn Loss>> {
    build_loss_with(&LossRegistry::with_builtins(), spec)
}

/// Builds the loss of `training.loss` from `registry`.
pub fn build_loss_with(registry: &LossRegistry, spec: &serde_json::Value) -> Result<Box<dyn Loss>> {
    let obj = spec
        .as_object()
        .ok_or_else(|| LearnError::Config("training.loss must be a table with a `name`".into()))?;
    let name = obj
        .get("name")
        .and_then(|v| v.as_str())
        .ok_or_else(|| LearnError::Config("training.loss.name is missing".into()))?;
    let mut params = obj.clone();
    params.remove("name");
    Ok(registry.build(name, &serde_json::Value::Object(params))?)
}

/// The network table of the config with the training seed, input channels
/// and class count filled in where absent.
pub fn network_config(cfg: &ExperimentConfig) -> serde_json::Value {
    let mut net = cfg.network.clone();
    if let Some(o) = net.as_object_mut() {
        o.entry("seed")
            .or_insert(serde_json::json!(cfg.training.seed));
        o.entry("in_chns")
            .or_insert(serde_json::json!(cfg.dataset.in_channels));
        o.entry("class_num")
            .or_insert(serde_json::json!(cfg.dataset.class_num));
    }
    net
}

/// Builds a built-in network from its table into a fresh VarMap.
pub fn build_net(
    cfg: &serde_json::Value,
    device: &Device,
) -> Result<(VarMap, Box<dyn SegNetwork>)> {
    build_net_with(&NetRegistry::with_builtins(), cfg, device)
}

/// Builds a network of `registry` from its table into a fresh VarMap.
/// With `pretrained` in the table, the weights file is loaded into the new
/// network (see [`build_net_pretrained`]).
pub fn build_net_with(
    registry: &NetRegistry,
    cfg: &serde_json::Value,
    device: &Device,
) -> Result<(VarMap, Box<dyn SegNetwork>)> {
    let b = build_net_pretrained(registry, cfg, device)?;
    Ok((b.varmap, b.net))
}

/// A network built from its table, with what `network.pretrained` loaded.
pub struct BuiltNet {
    /// The network's weights.
    pub varmap: VarMap,
    /// The network.
    pub net: Box<dyn SegNetwork>,
    /// What `network.pretrained` and `network.freeze_encoder` asked for.
    pub pretrained: PretrainedSpec,
    /// Names of the tensors loaded from `network.pretrained` (empty without).
    pub loaded: Vec<String>,
}

/// Builds a network of `registry` from its table into a fresh VarMap, then
/// loads `network.pretrained` (if given) by name: every tensor of the file
/// must exist in the network with the same shape, and the network's other
/// tensors keep their initial values.
pub fn build_net_pretrained(
    registry: &NetRegistry,
    cfg: &serde_json::Value,
    device: &Device,
) -> Result<BuiltNet> {
    let (rest, spec) = medseg_nets::split_pretrained(cfg)?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let net = registry.build(&rest, vb)?;
    let loaded = match &spec.path {
        Some(p) => medseg_nets::load_pretrained(p, &varmap)?,
        None => Vec::new(),
    };
    Ok(BuiltNet {
        varmap,
        net,
        pretrained: spec,
        loaded,
    })
}

/// The test-time pipeline of the config (normalisation and other
/// deterministic steps) from the built-in transforms, in inference mode.
pub fn test_pipeline(cfg: &ExperimentConfig) -> Result<Pipeline> {
    test_pipeline_with(&TransformRegistry::with_builtins(), cfg)
}

/// The test-time pipeline of the config from `registry`, in inference mode.
pub fn test_pipeline_with(
    registry: &TransformRegistry,
    cfg: &ExperimentConfig,
) -> Result<Pipeline> {
    Ok(registry
        .build(&cfg.dataset.test_transforms)?
        .with_mode(Mode::Inference))
}
