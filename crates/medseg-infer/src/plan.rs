//! Resolving an inference run from an experiment config and explicit
//! settings: which checkpoints, which cases, which settings, which device,
//! where the outputs go; then running it.
//!
//! Settings take precedence in this order: explicit settings
//! ([`InferenceOverrides`], the command-line flags of `medseg-infer`) > the
//! experiment config given > the run's `config.toml` stored beside the first
//! checkpoint (`<run>/config.toml` for `<run>/checkpoints/x.safetensors`) >
//! defaults.

use crate::{CaseOutput, InferError, InferenceJob, LargestComponentMode, Predictor, Result};
use candle_core::Device;
use medseg_config::{ExperimentConfig, InferenceConfig, LargestComponent};
use medseg_io::{Manifest, ManifestRow};
use medseg_transforms::{build_pipeline, Mode, Pipeline};
use std::path::{Path, PathBuf};

/// The file listing every case written by [`InferencePlan::run`], in the
/// output folder: `image`, `label` (when known) and `prediction` columns,
/// absolute paths, ready for `medseg-eval --manifest`.
pub const PREDICTIONS_CSV: &str = "predictions.csv";

/// A device name: `cpu`, `cuda` (GPU 0) or `cuda:N`. CUDA needs a build with
/// candle's CUDA support (the `cuda` feature).
///
/// # Errors
/// [`InferError::Invalid`] (key `device`) for any other name, or when the
/// CUDA device cannot be opened (e.g. a build without CUDA support).
pub fn parse_device(s: &str) -> Result<Device> {
    let bad = |message: String| InferError::Invalid {
        key: "device".into(),
        message,
    };
    let ordinal = match s.trim() {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => {
                return Err(bad(format!(
                    "`{other}`: expected `cpu`, `cuda` or `cuda:N` (N a GPU number)"
                )))
            }
        },
    };
    Device::new_cuda(ordinal)
        .map_err(|e| bad(format!("`{s}`: cannot open CUDA device {ordinal}: {e}")))
}

/// The checkpoint file a name stands for: `best` and `latest` are
/// `<training.output_dir>/checkpoints/<name>.safetensors` of `cfg`; any
/// other name is a path.
///
/// # Errors
/// [`InferError::Job`] for `best` or `latest` without a config.
pub fn checkpoint_path(name: &str, cfg: Option<&ExperimentConfig>) -> Result<PathBuf> {
    match (name, cfg) {
        ("best" | "latest", Some(c)) => Ok(c
            .training
            .output_dir
            .join("checkpoints")
            .join(format!("{name}.safetensors"))),
        ("best" | "latest", None) => Err(InferError::Job(format!(
            "checkpoint `{name}` needs a config to locate the run"
        ))),
        (p, _) => Ok(PathBuf::from(p)),
    }
}

/// The run config stored beside a checkpoint (`<run>/config.toml` for
/// `<run>/checkpoints/x.safetensors`), when it exists and parses.
pub fn run_config_of(checkpoint: &Path) -> Option<ExperimentConfig> {
    let p = checkpoint.parent()?.parent()?.join("config.toml");
    let text = std::fs::read_to_string(p).ok()?;
    ExperimentConfig::from_toml_str(&text).ok()
}

/// Loads an experiment config with `--set` style overrides and makes its
/// relative paths relative to the current folder.
///
/// # Errors
/// [`InferError::Config`] when the file cannot be read or is invalid;
/// [`InferError::Core`] when the current folder cannot be read.
pub fn load_config(path: &Path, overrides: &[String]) -> Result<ExperimentConfig> {
    let mut c = ExperimentConfig::load(path, overrides)?;
    let cwd = std::env::current_dir().map_err(|e| medseg_core::Error::io(".", e))?;
    c.resolve_paths(&cwd);
    Ok(c)
}

/// The largest-component mode of a name: `per_class`, `union` or `none`
/// (`None`).
///
/// # Errors
/// [`InferError::Invalid`] (key `largest_component`) for another name.
pub fn parse_largest_component(s: &str) -> Result<Option<LargestComponentMode>> {
    match s {
        "per_class" => Ok(Some(LargestComponentMode::PerClass)),
        "union" => Ok(Some(LargestComponentMode::Union)),
        "none" => Ok(None),
        other => Err(InferError::Invalid {
            key: "largest_component".into(),
            message: format!("`{other}`: expected per_class, union or none"),
        }),
    }
}

/// The largest-component mode of the config's `inference.largest_component`.
pub fn largest_component_mode(lc: LargestComponent) -> Option<LargestComponentMode> {
    match lc {
        LargestComponent::PerClass => Some(LargestComponentMode::PerClass),
        LargestComponent::Union => Some(LargestComponentMode::Union),
        LargestComponent::None => None,
    }
}

/// A manifest path of `cfg`: absolute paths as they are, relative ones
/// under `dataset.root`.
pub fn manifest_path(cfg: &ExperimentConfig, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cfg.dataset.root.join(p)
    }
}

/// One case to predict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferenceCase {
    /// Output name (the first image's file name without extension).
    pub name: String,
    /// Its image files, one per modality.
    pub images: Vec<PathBuf>,
    /// The ground truth, when the manifest has one.
    pub label: Option<PathBuf>,
}

impl InferenceCase {
    /// A case of one image file, named after it, without ground truth.
    pub fn from_file(path: &Path) -> Self {
        InferenceCase {
            name: medseg_io::file_stem(path),
            images: vec![path.to_path_buf()],
            label: None,
        }
    }
}

/// The cases of a manifest: one per row, named after the first image,
/// with the row's label as ground truth.
pub fn cases_of_manifest(m: &Manifest) -> Vec<InferenceCase> {
    m.rows
        .iter()
        .map(|r| {
            let images: Vec<PathBuf> = r.images.iter().map(|p| m.resolve(p)).collect();
            InferenceCase {
                name: images
                    .first()
                    .map(|p| medseg_io::file_stem(p))
                    .unwrap_or_default(),
                images,
                label: r.label.as_ref().map(|l| m.resolve(l)),
            }
        })
        .collect()
}

/// The cases of the config's test manifest (`dataset.test_csv`, relative to
/// `dataset.root`).
///
/// # Errors
/// [`InferError::Job`] without `dataset.test_csv`; the manifest's read
/// errors (naming the file and row).
pub fn test_cases(cfg: &ExperimentConfig) -> Result<Vec<InferenceCase>> {
    let test = cfg.dataset.test_csv.as_ref().ok_or_else(|| {
        InferError::Job("no input files and no dataset.test_csv in the config".into())
    })?;
    let m = Manifest::read(&manifest_path(cfg, test), Some(&cfg.dataset.root))?;
    Ok(cases_of_manifest(&m))
}

/// Explicit settings of an inference run, each overriding the config's
/// (the flags of `medseg-infer`). The default overrides nothing.
#[derive(Debug, Clone, Default)]
pub struct InferenceOverrides {
    /// Checkpoints to ensemble (replace `inference.checkpoints`).
    pub checkpoints: Vec<PathBuf>,
    /// Input image files, one case each (replace the test manifest).
    pub inputs: Vec<PathBuf>,
    /// Output folder.
    pub output: Option<PathBuf>,
    /// Sliding-window size per spatial axis.
    pub patch_size: Option<Vec<usize>>,
    /// Flip TTA on (cannot switch the config's off).
    pub tta: bool,
    /// Largest component: `per_class`, `union` or `none`.
    pub largest_component: Option<String>,
    /// Save probabilities (cannot switch the config's off).
    pub save_probabilities: bool,
    /// Switch overlay pictures off.
    pub no_overlays: bool,
    /// Device name (see [`parse_device`]).
    pub device: Option<String>,
}

/// A resolved inference run: everything [`InferencePlan::run`] needs.
#[derive(Debug, Clone)]
pub struct InferencePlan {
    /// Checkpoint files, all present; several are ensembled.
    pub checkpoints: Vec<PathBuf>,
    /// The `[network]` table of the config in force: it describes the
    /// network of PyTorch checkpoints (`.pt`, e.g. PyMIC's), which carry
    /// none; medseg's safetensors checkpoints carry their own.
    pub network: Option<serde_json::Value>,
    /// Test-time transform specs (`dataset.test_transforms`).
    pub test_transforms: Vec<serde_json::Value>,
    /// The `[inference]` settings in force (before the overrides).
    pub settings: InferenceConfig,
    /// The sliding window.
    pub window: crate::SlidingWindow,
    /// Flip TTA.
    pub tta: bool,
    /// Keep-largest-component post-processing.
    pub largest_component: Option<LargestComponentMode>,
    /// Save class probabilities.
    pub save_probabilities: bool,
    /// Save overlay pictures.
    pub overlays: bool,
    /// Output folder.
    pub out_dir: PathBuf,
    /// The device name in force (`cpu`, `cuda`, `cuda:N`).
    pub device: String,
    /// The cases to predict.
    pub cases: Vec<InferenceCase>,
}

impl InferencePlan {
    /// Resolves a run from the experiment config `cfg` (if any) and the
    /// explicit `overrides`:
    ///
    /// - checkpoints: the overrides', else `inference.checkpoints` of `cfg`
    ///   (see [`checkpoint_path`]); each must exist;
    /// - settings and test transforms: `cfg`, else the run config beside
    ///   the first checkpoint ([`run_config_of`]), else defaults; flags
    ///   override them;
    /// - output folder: the override, else `inference.output_dir`, else
    ///   `<training.output_dir>/predictions` of `cfg`, else `predictions`;
    /// - device: the override, else `training.device` of `cfg`, else `cpu`
    ///   (not the stored run's: the device belongs to this machine);
    /// - cases: the input files, else the test manifest of `cfg`.
    ///
    /// # Errors
    /// [`InferError::Job`] when no checkpoint or no case is given, or a
    /// checkpoint is missing; [`InferError::Invalid`] for a bad
    /// largest-component or device name; manifest errors.
    pub fn resolve(cfg: Option<&ExperimentConfig>, overrides: &InferenceOverrides) -> Result<Self> {
        let checkpoints: Vec<PathBuf> = if !overrides.checkpoints.is_empty() {
            overrides.checkpoints.clone()
        } else if let Some(c) = cfg {
            c.inference
                .checkpoints
                .iter()
                .map(|n| checkpoint_path(n, Some(c)))
                .collect::<Result<_>>()?
        } else {
            return Err(InferError::Job(
                "give a config or at least one checkpoint".into(),
            ));
        };
        if checkpoints.is_empty() {
            return Err(InferError::Job(
                "no checkpoint: inference.checkpoints is empty".into(),
            ));
        }
        for c in &checkpoints {
            if !c.is_file() {
                return Err(InferError::Job(format!(
                    "checkpoint {} not found (train first, or check inference.checkpoints)",
                    c.display()
                )));
            }
        }
        let run_cfg = cfg.cloned().or_else(|| run_config_of(&checkpoints[0]));
        let settings: InferenceConfig = run_cfg
            .as_ref()
            .map(|c| c.inference.clone())
            .unwrap_or_default();
        let test_transforms = run_cfg
            .as_ref()
            .map(|c| c.dataset.test_transforms.clone())
            .unwrap_or_default();
        let window = crate::SlidingWindow {
            patch_size: overrides.patch_size.clone().or(settings.patch_size.clone()),
            overlap: settings.overlap,
            gaussian: settings.gaussian,
            sigma_scale: settings.sigma_scale,
            batch_size: settings.sw_batch_size,
        };
        let largest_component = match overrides.largest_component.as_deref() {
            Some(s) => parse_largest_component(s)?,
            None => largest_component_mode(settings.largest_component),
        };
        let out_dir = overrides
            .output
            .clone()
            .or(settings.output_dir.clone())
            .or(cfg.map(|c| c.training.output_dir.join("predictions")))
            .unwrap_or_else(|| PathBuf::from("predictions"));
        let device = overrides
            .device
            .clone()
            .or(cfg.map(|c| c.training.device.clone()))
            .unwrap_or_else(|| "cpu".into());
        parse_device_name(&device)?;
        let cases = if !overrides.inputs.is_empty() {
            overrides
                .inputs
                .iter()
                .map(|p| InferenceCase::from_file(p))
                .collect()
        } else if let Some(c) = cfg {
            test_cases(c)?
        } else {
            return Err(InferError::Job(
                "give input files or a config with dataset.test_csv".into(),
            ));
        };
        Ok(InferencePlan {
            checkpoints,
            network: run_cfg.as_ref().map(|c| c.network.clone()),
            test_transforms,
            tta: overrides.tta || settings.tta_flip,
            save_probabilities: overrides.save_probabilities || settings.save_probabilities,
            overlays: !overrides.no_overlays && settings.overlays,
            settings,
            window,
            largest_component,
            out_dir,
            device,
            cases,
        })
    }

    /// The test-time transform pipeline, in inference mode.
    ///
    /// # Errors
    /// [`InferError::Invalid`] (key `dataset.test_transforms`) for an
    /// unknown transform or parameter.
    pub fn pipeline(&self) -> Result<Pipeline> {
        Ok(build_pipeline(&self.test_transforms)
            .map_err(|e| InferError::Invalid {
                key: "dataset.test_transforms".into(),
                message: e.to_string(),
            })?
            .with_mode(Mode::Inference))
    }

    /// The written value of each predicted class that the settings'
    /// `output_label_source`/`output_label_target` convert.
    pub fn label_map(&self) -> Vec<(u16, u16)> {
        self.settings
            .output_label_source
            .iter()
            .copied()
            .zip(self.settings.output_label_target.iter().copied())
            .collect()
    }

    /// Loads every checkpoint's network on `device`: medseg checkpoints
    /// build the network they store; PyTorch checkpoints (`.pt`, `.pth`)
    /// the one of [`InferencePlan::network`]. The networks read the weights
    /// as plain tensors ([`medseg_nets::inference_copy`]), so a forward
    /// keeps no activations for a backward pass.
    ///
    /// # Errors
    /// [`InferError::Network`] naming the checkpoint that failed.
    pub fn load_networks(&self, device: &Device) -> Result<Vec<LoadedNetwork>> {
        self.checkpoints
            .iter()
            .map(|c| {
                let (varmap, network) =
                    medseg_nets::load_network_with(c, device, self.network.as_ref()).map_err(
                        |error| InferError::Network {
                            path: c.clone(),
                            error,
                        },
                    )?;
                // a forward without autograd graph: activations are freed
                // layer by layer
                let network = medseg_nets::inference_copy(network.as_ref(), &varmap, device)
                    .map_err(|error| InferError::Network {
                        path: c.clone(),
                        error,
                    })?;
                Ok(LoadedNetwork { varmap, network })
            })
            .collect()
    }

    /// Runs the plan: opens the device, builds the pipeline, loads the
    /// networks, predicts every case into [`InferencePlan::out_dir`]
    /// (calling `on_case` after each) and writes [`PREDICTIONS_CSV`] there.
    /// Returns the path of that listing.
    ///
    /// # Errors
    /// Setup errors as in [`InferencePlan::pipeline`] and
    /// [`InferencePlan::load_networks`]; [`InferError::Case`] naming the
    /// case that failed; an output folder another live process is writing
    /// into (its lock, `.medseg.lock`, names the process).
    pub fn run(&self, on_case: &mut dyn FnMut(&InferenceCase, &CaseOutput)) -> Result<PathBuf> {
        let device = parse_device(&self.device)?;
        let pipeline = self.pipeline()?;
        let nets = self.load_networks(&device)?;
        // one writer per output folder (see medseg_core::DirLock)
        let _lock = medseg_core::DirLock::acquire(&self.out_dir, "inference")?;
        let job = InferenceJob {
            predictor: Predictor::new(
                nets.iter().map(|n| n.network.as_ref()).collect(),
                device,
                self.window.clone(),
                self.tta,
            )?,
            pipeline: &pipeline,
            largest_component: self.largest_component,
            save_probabilities: self.save_probabilities,
            overlays: self.overlays,
            out_dir: self.out_dir.clone(),
        };
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let mut listing = Manifest::new(&self.out_dir);
        for case in &self.cases {
            let out = job
                .run_case_with(&case.images, &case.name, &self.label_map())
                .map_err(|e| InferError::Case {
                    name: case.name.clone(),
                    file: case.images.first().cloned().unwrap_or_default(),
                    error: Box::new(e),
                })?;
            let mut row = ManifestRow::new(abs(&case.images[0]));
            row.label = case.label.as_deref().map(abs);
            row.extra.insert(
                "prediction".into(),
                abs(&out.label).to_string_lossy().into_owned(),
            );
            listing.rows.push(row);
            on_case(case, &out);
        }
        std::fs::create_dir_all(&self.out_dir)
            .map_err(|e| medseg_core::Error::io(&self.out_dir, e))?;
        let path = self.out_dir.join(PREDICTIONS_CSV);
        listing.write(&path)?;
        Ok(path)
    }
}

/// Checks a device name without opening the device.
fn parse_device_name(s: &str) -> Result<()> {
    match s.trim() {
        "cpu" | "cuda" => Ok(()),
        other
            if other
                .strip_prefix("cuda:")
                .is_some_and(|n| n.parse::<usize>().is_ok()) =>
        {
            Ok(())
        }
        other => Err(InferError::Invalid {
            key: "device".into(),
            message: format!("`{other}`: expected `cpu`, `cuda` or `cuda:N` (N a GPU number)"),
        }),
    }
}

/// A network loaded from a checkpoint, with the variables that hold its
/// weights.
pub struct LoadedNetwork {
    /// The weights.
    pub varmap: candle_nn::VarMap,
    /// The network.
    pub network: Box<dyn medseg_nets::SegNetwork>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::{VarBuilder, VarMap};
    use serde_json::json;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("medseg_infer_{name}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A config text with `dataset_extra` appended to `[dataset]` and
    /// `extra` after `[training]`.
    fn config_text(root: &Path, dataset_extra: &str, extra: &str) -> String {
        format!(
            r#"
network = {{ name = "UNet", in_chns = 1, class_num = 2, feature_chns = [2, 4], dropout = [0.0, 0.0] }}
[dataset]
root = "{root}"
train_csv = "train.csv"
test_csv = "test.csv"
class_num = 2
{dataset_extra}
[training]
output_dir = "{root}/run"
iterations = 1
loss = {{ name = "DiceLoss" }}
{extra}
"#,
            root = root.display()
        )
    }

    fn config(root: &Path, extra: &str) -> ExperimentConfig {
        ExperimentConfig::from_toml_str(&config_text(root, "", extra)).unwrap()
    }

    fn save_net(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let cfg = json!({"name": "UNet", "in_chns": 1, "class_num": 2, "feature_chns": [2, 4],
                         "dropout": [0.0, 0.0], "seed": 1});
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, candle_core::DType::F32, &Device::Cpu);
        let net = medseg_nets::build_network(&cfg, vb).unwrap();
        medseg_nets::save_checkpoint(path, &vm, &net.config()).unwrap();
    }

    #[test]
    fn devices() {
        assert!(matches!(parse_device("cpu").unwrap(), Device::Cpu));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let e = parse_device(bad).unwrap_err().to_string();
            assert!(
                e.contains("expected `cpu`, `cuda` or `cuda:N`"),
                "{bad}: {e}"
            );
        }
        // without CUDA (this build or this machine) cuda is a clear error
        if let Err(e) = parse_device("cuda:0") {
            assert!(e.to_string().contains("cannot open CUDA device 0"), "{e}");
        }
    }

    #[test]
    fn checkpoint_names_and_largest_component() {
        let root = PathBuf::from("/data/x");
        let c = config(&root, "");
        assert_eq!(
            checkpoint_path("best", Some(&c)).unwrap(),
            root.join("run/checkpoints/best.safetensors")
        );
        assert_eq!(
            checkpoint_path("a/b.safetensors", None).unwrap(),
            PathBuf::from("a/b.safetensors")
        );
        assert!(checkpoint_path("latest", None)
            .unwrap_err()
            .to_string()
            .contains("needs a config"));
        assert_eq!(
            parse_largest_component("union").unwrap(),
            Some(LargestComponentMode::Union)
        );
        assert_eq!(parse_largest_component("none").unwrap(), None);
        assert!(parse_largest_component("biggest").is_err());
        assert_eq!(manifest_path(&c, Path::new("t.csv")), root.join("t.csv"));
        assert_eq!(
            manifest_path(&c, Path::new("/t.csv")),
            PathBuf::from("/t.csv")
        );
    }

    #[test]
    fn settings_precedence_flags_config_run_config_defaults() {
        let d = temp_dir("plan");
        let ckpt = d.join("run/checkpoints/best.safetensors");
        save_net(&ckpt);
        std::fs::write(d.join("a.nii.gz"), b"").unwrap();
        // no config, no run config: defaults
        let o = InferenceOverrides {
            checkpoints: vec![ckpt.clone()],
            inputs: vec![d.join("a.nii.gz")],
            ..Default::default()
        };
        let p = InferencePlan::resolve(None, &o).unwrap();
        assert_eq!(p.out_dir, PathBuf::from("predictions"));
        assert_eq!(p.device, "cpu");
        assert!(!p.tta && p.overlays && p.test_transforms.is_empty());
        assert_eq!(p.cases, vec![InferenceCase::from_file(&d.join("a.nii.gz"))]);
        assert_eq!(p.cases[0].name, "a");
        // an unparsable run config is ignored
        std::fs::write(d.join("run/config.toml"), "network = 1\nunknown = 2\n").unwrap();
        assert!(run_config_of(&ckpt).is_none());
        // the run's config.toml beside the checkpoint folder
        let run = config_text(
            &d,
            "test_transforms = [{ name = \"NormalizeIntensity\" }]",
            "[inference]\ntta_flip = true\noverlays = false",
        );
        std::fs::write(d.join("run/config.toml"), run).unwrap();
        assert!(run_config_of(&ckpt).is_some());
        let p = InferencePlan::resolve(None, &o).unwrap();
        assert!(p.tta && !p.overlays);
        assert_eq!(p.test_transforms.len(), 1);
        // an explicit config wins over the run's; flags win over both
        let mut cfg = config(&d, "[inference]\nlargest_component = \"union\"");
        cfg.inference.checkpoints = vec!["best".into()];
        let p = InferencePlan::resolve(Some(&cfg), &o).unwrap();
        assert!(!p.tta && p.overlays);
        assert_eq!(p.largest_component, Some(LargestComponentMode::Union));
        assert_eq!(p.out_dir, d.join("run/predictions"));
        let flags = InferenceOverrides {
            inputs: vec![d.join("a.nii.gz")],
            output: Some(d.join("out")),
            patch_size: Some(vec![32, 32]),
            tta: true,
            largest_component: Some("none".into()),
            no_overlays: true,
            ..Default::default()
        };
        let p = InferencePlan::resolve(Some(&cfg), &flags).unwrap();
        assert_eq!(p.checkpoints, vec![ckpt.clone()]);
        assert!(p.tta && !p.overlays);
        assert_eq!(p.largest_component, None);
        assert_eq!(p.window.patch_size, Some(vec![32, 32]));
        assert_eq!(p.out_dir, d.join("out"));
        // errors
        let missing = InferenceOverrides {
            checkpoints: vec![d.join("nope.safetensors")],
            ..o.clone()
        };
        let e = InferencePlan::resolve(None, &missing)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.safetensors not found"), "{e}");
        let bad_device = InferenceOverrides {
            device: Some("tpu".into()),
            ..o.clone()
        };
        assert!(InferencePlan::resolve(None, &bad_device).is_err());
        assert!(InferencePlan::resolve(None, &InferenceOverrides::default()).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn runs_the_test_manifest_and_lists_the_predictions() {
        let d = temp_dir("plan_run");
        let ckpt = d.join("run/checkpoints/latest.safetensors");
        save_net(&ckpt);
        std::fs::create_dir_all(d.join("images")).unwrap();
        let image = medseg_core::Image::new(
            ndarray::Array::from_shape_fn((1, 16, 16), |(_, y, x)| (x + y) as f32 / 32.0)
                .into_dyn(),
            medseg_core::Geometry::identity(),
        )
        .unwrap();
        medseg_io::write_image(
            &d.join("images/c1.nii.gz"),
            &image,
            medseg_io::DataType::F32,
        )
        .unwrap();
        std::fs::write(d.join("test.csv"), "image\nimages/c1.nii.gz\n").unwrap();
        let mut cfg = config(&d, "");
        cfg.inference.checkpoints = vec!["latest".into()];
        let plan = InferencePlan::resolve(Some(&cfg), &InferenceOverrides::default()).unwrap();
        assert_eq!(plan.cases.len(), 1);
        let mut seen = Vec::new();
        let listing = plan
            .run(&mut |c, out| seen.push((c.name.clone(), out.label.clone())))
            .unwrap();
        assert_eq!(listing, d.join("run/predictions/predictions.csv"));
        assert_eq!(seen[0].0, "c1");
        let pred = medseg_io::read_label(&seen[0].1).unwrap();
        assert_eq!(pred.data.shape(), &[1, 16, 16]);
        let m = Manifest::read(&listing, None).unwrap();
        assert_eq!(m.rows[0].extra["prediction"], seen[0].1.to_string_lossy());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
