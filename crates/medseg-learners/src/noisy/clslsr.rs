//! CL-SLSR (Zhang et al., MICCAI 2020; PyMIC's `NLLCLSLSR`): confident
//! learning finds the pixels whose noisy label is probably wrong, then the
//! network is trained with spatial label smoothing (the `SLSRLoss`) on them.
//!
//! 1. Split the training cases into `folds` (by `group_column`, e.g.
//!    `subject`, so that slices of one subject stay together).
//! 2. For each fold, train the configured network on the other folds (the
//!    configured loss, `fold_iterations` steps) and predict the fold's
//!    images: out-of-sample class probabilities for every training pixel.
//!    With `folds = 1`, one network trains on everything and predicts its
//!    own training images, as PyMIC does (in sample).
//! 3. [`find_label_issues`] over all training pixels flags the suspects; with
//!    `correct = true` they also take the predicted class as their label.
//! 4. Write the labels training sees (after any label-simulating transform),
//!    the masks of suspects and a manifest with a `noisy_mask` column; train
//!    on it with the `CLSLSR` learner (the configured loss, `SLSRLoss` in
//!    `configs/noisy/clslsr.toml`, smooths the labels on the suspects).
//!
//! [`prepare`] runs steps 1-4 (reusing an earlier stage with the same
//! settings) and returns the config of step 4; `medseg-noisy train` calls
//! it before training.

use super::confident::{correct_labels, find_label_issues, Prune};
use crate::error::{LearnError, Result};
use crate::learner::{scalar, Learner, StepContext, StepOutput};
use crate::semi::{method_params, Section};
use crate::setup::{read_manifest, Registries, TrainerBuilder};
use crate::supervised::supervised_loss;
use medseg_config::ExperimentConfig;
use medseg_core::{LabelMap, Sample};
use medseg_infer::{InferenceJob, Predictor, SlidingWindow};
use medseg_io::{Dataset, LabelledDataset, Manifest, ManifestRow};
use medseg_transforms::Mode;
use ndarray::{Array2, ArrayD};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `noisy.params` of CL-SLSR; every key is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClSlsrParams {
    /// Cross-validation folds for the out-of-sample probabilities (1 = in
    /// sample, as PyMIC; default 2).
    pub folds: usize,
    /// Training steps of each fold's network (0: `training.iterations`).
    pub fold_iterations: usize,
    /// Which pixels are flagged (default `both`, as PyMIC).
    pub prune: Prune,
    /// Also relabel the flagged pixels with the predicted class (default
    /// false: PyMIC only smooths them).
    pub correct: bool,
    /// Manifest column that keeps cases together in one fold (default
    /// `subject` when the manifest has it, else each case alone).
    pub group_column: Option<String>,
}

impl Default for ClSlsrParams {
    fn default() -> Self {
        ClSlsrParams {
            folds: 2,
            fold_iterations: 0,
            prune: Prune::Both,
            correct: false,
            group_column: None,
        }
    }
}

/// The learner of step 4: the supervised step on the manifest that
/// [`prepare`] wrote, whose batches carry the masks of suspected errors.
#[derive(Debug, Default)]
pub struct ClSlsr;

impl Learner for ClSlsr {
    fn name(&self) -> &str {
        "CLSLSR"
    }

    fn train_step(&mut self, ctx: &StepContext) -> candle_core::Result<StepOutput> {
        let target = &ctx.labelled.target;
        let Some(mask) = &target.noisy_mask else {
            return Err(candle_core::Error::Msg(
                "CLSLSR: the batch has no noisy mask; train on the manifest of the \
                 confident-learning stage (`medseg-noisy train` runs it first), or a \
                 manifest with a `noisy_mask` column"
                    .into(),
            ));
        };
        let out = ctx.net.forward_t(&ctx.labelled.image, true)?;
        let loss = supervised_loss(ctx.loss, &out, target)?;
        let flagged = mask
            .ne(0f32)?
            .to_dtype(candle_core::DType::F32)?
            .mean_all()?;
        Ok(StepOutput {
            terms: vec![
                ("sup".into(), scalar(&loss)?),
                ("flagged".into(), scalar(&flagged)?),
            ],
            loss,
        })
    }
}

/// What the stage found, written as `confident.json` in its folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// The settings the stage ran with (a later run with other settings redoes it).
    pub params: ClSlsrParams,
    /// The training manifest the stage read.
    pub train_csv: PathBuf,
    /// `training.seed` of the fold trainings.
    pub seed: u64,
    /// The manifest written for step 4.
    pub manifest: PathBuf,
    /// Pixels considered (labels within `class_num`).
    pub pixels: usize,
    /// Pixels flagged.
    pub flagged: usize,
    /// Flagged fraction per given class.
    pub flagged_per_class: Vec<f64>,
    /// When the labels were simulated from stored ones: the fraction of
    /// training pixels whose simulated label differs from the stored one.
    pub label_error_rate: Option<f64>,
    /// ... the fraction of flagged pixels that are such errors (precision).
    pub flag_precision: Option<f64>,
    /// ... the fraction of such errors that are flagged (recall).
    pub flag_recall: Option<f64>,
    /// Best validation mean Dice of each fold's network (none without validation).
    pub fold_valid_dice: Vec<Option<f64>>,
}

/// The stage's folder: `<training.output_dir>/confident`.
pub fn stage_dir(cfg: &ExperimentConfig) -> PathBuf {
    cfg.training.output_dir.join("confident")
}

/// The `noisy.params` of a CL-SLSR config, checked.
///
/// # Errors
/// [`LearnError::Config`] naming the key at fault.
pub fn params(cfg: &ExperimentConfig) -> Result<ClSlsrParams> {
    let section = Section::Noisy.of(cfg)?;
    let (_, p) = method_params::<ClSlsrParams>("noisy", "CLSLSR", section)?;
    if p.folds == 0 {
        return Err(LearnError::Config(
            "noisy.params.folds must be >= 1 (1 = in-sample probabilities)".into(),
        ));
    }
    Ok(p)
}

/// Runs the confident-learning stage of a `noisy.method = "CLSLSR"` config
/// (or reuses the one in [`stage_dir`] when its settings match) and returns
/// the config that trains step 4: `dataset.train_csv` is the stage's
/// manifest, the label-simulating training transforms are dropped (their
/// labels are in the manifest) and `dataset.label_column` is unset. Other
/// configs are returned unchanged.
///
/// `registries` makes the tables for each fold's training (user entries
/// included); `progress` shows the fold trainings' progress bars.
///
/// # Errors
/// Config, data, training and inference errors, naming the fold or case.
pub fn prepare(
    cfg: &ExperimentConfig,
    registries: &dyn Fn() -> Registries,
    progress: bool,
) -> Result<ExperimentConfig> {
    if cfg.noisy.as_ref().map(|n| n.method.as_str()) != Some("CLSLSR") {
        return Ok(cfg.clone());
    }
    let p = params(cfg)?;
    let dir = stage_dir(cfg);
    let report_path = dir.join("confident.json");
    let train_csv = crate::setup::manifest_path(cfg, &cfg.dataset.train_csv);
    let previous: Option<StageReport> = std::fs::read(&report_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let report = match previous {
        Some(r)
            if r.params == p
                && r.train_csv == train_csv
                && r.seed == cfg.training.seed
                && r.manifest.is_file() =>
        {
            r
        }
        _ => run_stage(cfg, &p, &dir, registries, progress)?,
    };
    let reg = registries();
    let mut out = cfg.clone();
    out.dataset.train_csv = std::path::absolute(&report.manifest).unwrap_or(report.manifest);
    out.dataset.label_column = None;
    let mut kept = Vec::new();
    for spec in &cfg.dataset.train_transforms {
        let (t, _) = reg.transforms.build_one(spec)?;
        if !t.simulates_labels() {
            kept.push(spec.clone());
        }
    }
    out.dataset.train_transforms = kept;
    Ok(out)
}

/// Fold of each manifest row: groups (by `column`) in order of first
/// appearance, dealt round-robin.
pub fn fold_of_rows(m: &Manifest, folds: usize, column: Option<&str>) -> Vec<usize> {
    let mut groups: Vec<String> = Vec::new();
    m.rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let key = match column.and_then(|c| r.extra.get(c)) {
                Some(v) => v.clone(),
                None => format!("#{i}"),
            };
            let g = match groups.iter().position(|k| *k == key) {
                Some(g) => g,
                None => {
                    groups.push(key);
                    groups.len() - 1
                }
            };
            g % folds
        })
        .collect()
}

/// A manifest of `rows` of `m` with absolute paths, rooted at `root` (an
/// empty root writes every path absolute).
fn subset(m: &Manifest, rows: impl Iterator<Item = usize>, root: &Path) -> Manifest {
    let abs = |p: &Path| std::path::absolute(m.resolve(p)).unwrap_or_else(|_| m.resolve(p));
    let mut out = Manifest::new(root);
    out.image_columns = m.image_columns.clone();
    for i in rows {
        let r = &m.rows[i];
        out.rows.push(ManifestRow {
            images: r.images.iter().map(|p| abs(p)).collect(),
            label: r.label.as_deref().map(abs),
            pixel_weight: r.pixel_weight.as_deref().map(abs),
            noisy_mask: None,
            image_weight: r.image_weight,
            annotated_classes: r.annotated_classes.clone(),
            extra: r.extra.clone(),
        });
    }
    out
}

/// One training case as the stage sees it.
struct Case {
    row: usize,
    sample: Sample,
    /// The label training sees, flattened.
    given: Vec<u16>,
    /// The stored label when a simulation replaced it, flattened.
    stored: Option<Vec<u16>>,
    /// Out-of-sample probabilities `[C, N]`.
    probs: Array2<f32>,
}

fn run_stage(
    cfg: &ExperimentConfig,
    p: &ClSlsrParams,
    dir: &Path,
    registries: &dyn Fn() -> Registries,
    progress: bool,
) -> Result<StageReport> {
    std::fs::create_dir_all(dir).map_err(|e| medseg_core::Error::io(dir, e))?;
    // every path the stage writes is absolute: its manifests are read with
    // `dataset.root` as their root
    let dir = &std::path::absolute(dir).map_err(|e| medseg_core::Error::io(dir, e))?;
    let mut manifest = read_manifest(cfg, &cfg.dataset.train_csv)?;
    if let Some(col) = &cfg.dataset.label_column {
        crate::trainer::use_label_column(&mut manifest, col)?;
    }
    let column = p.group_column.clone().or_else(|| {
        manifest
            .rows
            .iter()
            .all(|r| r.extra.contains_key("subject"))
            .then(|| "subject".to_string())
    });
    let folds = p.folds.min(manifest.rows.len()).max(1);
    let fold = fold_of_rows(&manifest, folds, column.as_deref());
    let reg = registries();
    let simulate = reg
        .transforms
        .build(&cfg.dataset.train_transforms)?
        .label_simulation();
    let simulated = !simulate.is_empty();
    let class_num = cfg.dataset.class_num;
    let mut cases: Vec<Case> = Vec::new();
    let mut fold_dice = Vec::new();
    for k in 0..folds {
        let fold_dir = dir.join(format!("fold{k}"));
        let train_rows: Vec<usize> = if folds == 1 {
            (0..manifest.rows.len()).collect()
        } else {
            (0..manifest.rows.len()).filter(|&i| fold[i] != k).collect()
        };
        let held: Vec<usize> = (0..manifest.rows.len()).filter(|&i| fold[i] == k).collect();
        let csv = fold_dir.join("train.csv");
        std::fs::create_dir_all(&fold_dir).map_err(|e| medseg_core::Error::io(&fold_dir, e))?;
        subset(&manifest, train_rows.into_iter(), &fold_dir).write(&csv)?;
        let mut fc = cfg.clone();
        fc.noisy = None;
        fc.dataset.train_csv = std::path::absolute(&csv).unwrap_or(csv);
        fc.dataset.label_column = None;
        fc.training.output_dir = fold_dir.clone();
        fc.training.resume = false;
        if p.fold_iterations > 0 {
            fc.training.iterations = p.fold_iterations;
        }
        let mut trainer = TrainerBuilder::new(fc.clone())
            .registries(registries())
            .learner("supervised")
            .progress(progress)
            .build()
            .map_err(|e| LearnError::Other(format!("CL-SLSR fold {k}: {e}")))?;
        let summary = trainer.run()?;
        fold_dice.push(summary.best.as_ref().map(|b| b.mean_dice));
        let ckpt = best_checkpoint(&trainer.checkpoint_dir())?;
        let device = crate::setup::parse_device(&fc.training.device)?;
        let pipeline = crate::setup::test_pipeline_with(&reg.transforms, &fc)?;
        let (_weights, net) = medseg_nets::load_network(&ckpt, &device)?;
        let s = &fc.inference;
        let window = SlidingWindow {
            patch_size: s.patch_size.clone(),
            overlap: s.overlap,
            gaussian: s.gaussian,
            sigma_scale: s.sigma_scale,
            batch_size: s.sw_batch_size,
        };
        let job = InferenceJob {
            predictor: Predictor::new(vec![net.as_ref()], device, window, false)?,
            pipeline: &pipeline,
            largest_component: None,
            save_probabilities: false,
            overlays: false,
            out_dir: fold_dir.clone(),
        };
        let ds = LabelledDataset::new(manifest.clone())?;
        for i in held {
            let sample = ds.get(i)?;
            let stored = sample
                .label
                .as_ref()
                .map(|l| l.data.iter().copied().collect::<Vec<_>>());
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
            let seen = simulate.apply_in(sample, &mut rng, Mode::Train)?;
            let label = seen.label.as_ref().ok_or_else(|| {
                LearnError::Other(format!("CL-SLSR: training case {} has no label", seen.name))
            })?;
            let given: Vec<u16> = label.data.iter().copied().collect();
            let (_, probs) = job.predict_labels(&seen.image, &seen.name)?;
            let c = probs.shape()[0];
            let n = probs.len() / c;
            if c != class_num || n != given.len() {
                return Err(LearnError::Other(format!(
                    "CL-SLSR: case {}: {c} class probabilities for {n} pixels, expected {class_num} \
                     for {}",
                    seen.name,
                    given.len()
                )));
            }
            let probs = probs
                .into_shape_with_order((c, n))
                .map_err(|e| LearnError::Other(e.to_string()))?;
            cases.push(Case {
                row: i,
                stored: if simulated { stored } else { None },
                given,
                probs,
                sample: seen,
            });
        }
    }
    cases.sort_by_key(|c| c.row);
    // pool every pixel with a label inside the classes
    let mut labels = Vec::new();
    let mut rows: Vec<f32> = Vec::new();
    for c in &cases {
        for (j, &l) in c.given.iter().enumerate() {
            if (l as usize) < class_num {
                labels.push(l);
                rows.extend(c.probs.column(j).iter());
            }
        }
    }
    let pooled = Array2::from_shape_vec((labels.len(), class_num), rows)
        .map_err(|e| LearnError::Other(e.to_string()))?;
    let flags = find_label_issues(&labels, pooled.view(), p.prune)
        .map_err(|e| LearnError::Other(format!("CL-SLSR: {e}")))?;
    let corrected = if p.correct {
        correct_labels(&labels, pooled.view(), &flags)
    } else {
        labels.clone()
    };
    // write labels, masks and the manifest
    let (lab_dir, mask_dir) = (dir.join("labels"), dir.join("noisy_mask"));
    for d in [&lab_dir, &mask_dir] {
        std::fs::create_dir_all(d).map_err(|e| medseg_core::Error::io(d, e))?;
    }
    let mut out = subset(&manifest, cases.iter().map(|c| c.row), Path::new(""));
    let (mut at, mut per_class, mut class_count) =
        (0usize, vec![0usize; class_num], vec![0usize; class_num]);
    let (mut errors, mut caught) = (0usize, 0usize);
    for (ci, c) in cases.iter().enumerate() {
        let label = c.sample.label.as_ref().expect("checked above");
        let mut new_label = label.data.clone();
        let mut mask = ArrayD::<f32>::zeros(label.data.raw_dim());
        for (j, (l, m)) in new_label.iter_mut().zip(mask.iter_mut()).enumerate() {
            if (*l as usize) >= class_num {
                continue;
            }
            class_count[*l as usize] += 1;
            let wrong = c.stored.as_ref().is_some_and(|s| s[j] != *l);
            errors += wrong as usize;
            if flags[at] {
                *m = 1.0;
                per_class[*l as usize] += 1;
                caught += wrong as usize;
            }
            *l = corrected[at];
            at += 1;
        }
        let name = &c.sample.name;
        let lp = lab_dir.join(format!("{name}.nii.gz"));
        let mp = mask_dir.join(format!("{name}.nii.gz"));
        medseg_io::write_label(&lp, &LabelMap::new(new_label, label.geometry)?)?;
        let m = LabelMap::new(mask.mapv(|v| v as u16), label.geometry)?;
        medseg_io::write_label(&mp, &m)?;
        out.rows[ci].label = Some(lp);
        out.rows[ci].noisy_mask = Some(mp);
    }
    let csv = dir.join("train_clslsr.csv");
    out.write(&csv)?;
    let flagged = flags.iter().filter(|&&f| f).count();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let report = StageReport {
        params: p.clone(),
        train_csv: crate::setup::manifest_path(cfg, &cfg.dataset.train_csv),
        seed: cfg.training.seed,
        manifest: std::path::absolute(&csv).unwrap_or(csv),
        pixels: labels.len(),
        flagged,
        flagged_per_class: per_class
            .iter()
            .zip(&class_count)
            .map(|(&f, &n)| ratio(f, n))
            .collect(),
        label_error_rate: simulated.then(|| ratio(errors, labels.len())),
        flag_precision: simulated.then(|| ratio(caught, flagged)),
        flag_recall: simulated.then(|| ratio(caught, errors)),
        fold_valid_dice: fold_dice,
    };
    let json = serde_json::to_vec_pretty(&report).map_err(|e| LearnError::Other(e.to_string()))?;
    medseg_core::write_atomic(&dir.join("confident.json"), &json)?;
    Ok(report)
}

/// The best checkpoint of a finished run (the latest when none was best).
fn best_checkpoint(checkpoints: &Path) -> Result<PathBuf> {
    for name in ["best", "latest"] {
        let p = checkpoints.join(format!("{name}.safetensors"));
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(LearnError::Other(format!(
        "CL-SLSR: no checkpoint in {}",
        checkpoints.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_keep_groups_together() {
        let mut m = Manifest::new("/tmp");
        for (i, s) in ["a", "a", "b", "c", "b", "d"].iter().enumerate() {
            let mut r = ManifestRow::new(format!("{i}.nii.gz"));
            r.extra.insert("subject".into(), s.to_string());
            m.rows.push(r);
        }
        assert_eq!(fold_of_rows(&m, 2, Some("subject")), vec![0, 0, 1, 0, 1, 1]);
        assert_eq!(fold_of_rows(&m, 2, None), vec![0, 1, 0, 1, 0, 1]);
        assert_eq!(fold_of_rows(&m, 1, Some("subject")), vec![0; 6]);
    }
}
