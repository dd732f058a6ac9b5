//! Evaluation of predicted label files against ground truth: pairing the
//! files (two folders, or a manifest), evaluating each pair with
//! `medseg-metrics`, and writing the report (`eval_<metric>.csv` in PyMIC's
//! layout, `summary.json`, box plots). The `medseg-eval` app is argument
//! parsing around these; trainers and other tools call them directly.

use crate::{InferError, Result};
use medseg_metrics::report::{CaseMetrics, CasePair, MetricTable, METRIC_NAMES, SURFACE_METRICS};
use medseg_metrics::{evaluate_case, metric_value, pair_by_file_name, MetricOptions};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The cases of two folders: every label file (`.nii`, `.nii.gz`, `.png`)
/// of `gt_dir`, sorted by name, paired with the file of the same name in
/// `pred_dir` (which need not exist: [`evaluate_pair`] reports it).
///
/// # Errors
/// [`InferError::Job`] when `gt_dir` cannot be read or holds no label file.
pub fn cases_from_folders(gt_dir: &Path, pred_dir: &Path) -> Result<Vec<CasePair>> {
    let names: Vec<String> = std::fs::read_dir(gt_dir)
        .map_err(|e| {
            InferError::Job(format!(
                "reading the ground-truth folder {}: {e}",
                gt_dir.display()
            ))
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let cases = pair_by_file_name(gt_dir, pred_dir, names);
    if cases.is_empty() {
        return Err(InferError::Job(format!(
            "no .nii, .nii.gz or .png files in the ground-truth folder {}",
            gt_dir.display()
        )));
    }
    Ok(cases)
}

/// The cases of a manifest: ground truth in the `label` column, prediction
/// in the `prediction` column or, without one, the first image column;
/// paths relative to `root` (default: the manifest's folder). Each case is
/// named by its prediction's file name. Files need not exist yet.
///
/// # Errors
/// The manifest's read errors; [`InferError::Job`] naming the row without a
/// ground truth or a prediction.
pub fn cases_from_manifest(path: &Path, root: Option<&Path>) -> Result<Vec<CasePair>> {
    let m = medseg_io::Manifest::read_unchecked(path, root)?;
    m.rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let gt = row.label.as_ref().ok_or_else(|| {
                InferError::Job(format!(
                    "manifest {} row {}: no `label` (ground truth) cell",
                    path.display(),
                    i + 1
                ))
            })?;
            let pred = match row.extra.get("prediction").filter(|p| !p.is_empty()) {
                Some(p) => PathBuf::from(p),
                None => row.images.first().cloned().ok_or_else(|| {
                    InferError::Job(format!(
                        "manifest {} row {}: no `prediction` or image cell",
                        path.display(),
                        i + 1
                    ))
                })?,
            };
            let name = pred
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("row{}", i + 1));
            Ok(CasePair {
                name,
                gt: m.resolve(gt),
                pred: m.resolve(&pred),
            })
        })
        .collect()
}

/// How cases are evaluated.
#[derive(Debug, Clone, Default)]
pub struct EvalSettings {
    /// Label values to evaluate, one-vs-rest.
    pub labels: Vec<u16>,
    /// A table mapping every label value (index) to a new one, applied to
    /// prediction and ground truth before evaluating (65536 entries).
    pub remap: Option<Vec<u16>>,
    /// Spacing in mm in array axis order overriding the files' (empty: the
    /// ground truth's, which must agree with the prediction's).
    pub spacing: Vec<f64>,
    /// Metric definitions and policies.
    pub options: MetricOptions,
}

/// The non-zero labels present in the ground truth of `cases` (the union
/// over all cases, after `remap`), sorted: what `medseg-eval` evaluates
/// when no labels are given. Reads every ground-truth file once (in
/// parallel); a missing or unreadable file is skipped here and reported by
/// [`evaluate_pair`].
pub fn labels_in_ground_truth(cases: &[CasePair], remap: Option<&[u16]>) -> Vec<u16> {
    let seen = cases
        .par_iter()
        .filter_map(|c| medseg_io::read_label(&c.gt).ok())
        .map(|l| {
            let mut seen = vec![false; 1 << 16];
            for &v in l.data.iter() {
                let v = remap.and_then(|t| t.get(v as usize).copied()).unwrap_or(v);
                seen[v as usize] = true;
            }
            seen
        })
        .reduce(
            || vec![false; 1 << 16],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x |= y);
                a
            },
        );
    (1..=u16::MAX).filter(|&c| seen[c as usize]).collect()
}

/// Reads and evaluates one case.
///
/// # Errors
/// [`InferError::Evaluation`] naming the case: a missing or unreadable
/// file, shapes or spacings that disagree, a spacing override of the wrong
/// length, or a metric error.
pub fn evaluate_pair(case: &CasePair, settings: &EvalSettings) -> Result<CaseMetrics> {
    let fail = |message: String| InferError::Evaluation {
        case: case.name.clone(),
        message,
    };
    if !case.pred.exists() {
        return Err(fail(format!("missing prediction {}", case.pred.display())));
    }
    if !case.gt.exists() {
        return Err(fail(format!("missing ground truth {}", case.gt.display())));
    }
    let gt = medseg_io::read_label(&case.gt).map_err(|e| {
        fail(format!(
            "reading the ground truth {}: {e}",
            case.gt.display()
        ))
    })?;
    let pred = medseg_io::read_label(&case.pred).map_err(|e| {
        fail(format!(
            "reading the prediction {}: {e}",
            case.pred.display()
        ))
    })?;
    if gt.spatial_shape() != pred.spatial_shape() {
        return Err(fail(format!(
            "shape mismatch: prediction {:?} vs ground truth {:?}",
            pred.spatial_shape(),
            gt.spatial_shape()
        )));
    }
    let nd = gt.spatial_ndim();
    let spacing: Vec<f64> = if settings.spacing.is_empty() {
        let sg = &gt.geometry.spacing[3 - nd..];
        let sp = &pred.geometry.spacing[3 - nd..];
        if sg
            .iter()
            .zip(sp)
            .any(|(a, b)| (a - b).abs() > 1e-4 * a.abs().max(b.abs()))
        {
            return Err(fail(format!(
                "spacing mismatch: prediction {sp:?} vs ground truth {sg:?} (use --spacing to override)"
            )));
        }
        sg.to_vec()
    } else {
        if settings.spacing.len() != nd {
            return Err(fail(format!(
                "--spacing has {} values but the images have {nd} spatial axes",
                settings.spacing.len()
            )));
        }
        settings.spacing.clone()
    };
    let spatial = |d: ndarray::ArrayD<u16>| {
        let d = d.index_axis_move(ndarray::Axis(0), 0);
        match settings.remap.as_deref() {
            Some(t) => d.mapv(|v| t.get(v as usize).copied().unwrap_or(v)),
            None => d,
        }
    };
    let (g, p) = (spatial(gt.data), spatial(pred.data));
    let metrics = evaluate_case(
        p.view(),
        g.view(),
        &spacing,
        &settings.labels,
        &settings.options,
    )
    .map_err(|e| fail(format!("computing metrics: {e}")))?;
    Ok(CaseMetrics {
        name: case.name.clone(),
        spacing,
        metrics,
    })
}

/// Evaluates `cases` in parallel, calling `on_case` after each; the
/// outcomes come back in the order of `cases`.
pub fn evaluate_pairs(
    cases: &[CasePair],
    settings: &EvalSettings,
    on_case: &(dyn Fn() + Sync),
) -> Vec<Result<CaseMetrics>> {
    cases
        .par_iter()
        .map(|c| {
            let r = evaluate_pair(c, settings);
            on_case();
            r
        })
        .collect()
}

/// A case that could not be evaluated, as the report records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFailure {
    /// The case name.
    pub case: String,
    /// The error message.
    pub error: String,
}

/// Whether any of `metrics` needs surface distances
/// ([`MetricOptions::surface_distances`]).
pub fn needs_surface_distances(metrics: &[String]) -> bool {
    metrics
        .iter()
        .any(|m| SURFACE_METRICS.contains(&m.as_str()))
}

fn json_num(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!(v)
    } else {
        serde_json::json!(medseg_metrics::report::format_value(v))
    }
}

/// The report's `summary.json` content: case count, failures, labels,
/// options, per-metric mean/std/finite count per column of `tables`, and
/// every metric of every class of every case.
pub fn summary_json(
    tables: &[MetricTable],
    labels: &[u16],
    options: &MetricOptions,
    results: &[CaseMetrics],
    failures: &[CaseFailure],
) -> serde_json::Value {
    let mut summary_metrics = BTreeMap::new();
    for t in tables {
        let mut per_class = BTreeMap::new();
        for (n, s) in t.columns.iter().zip(&t.stats) {
            per_class.insert(
                n.clone(),
                serde_json::json!({"mean": json_num(s.mean), "std": json_num(s.std), "finite_cases": s.finite}),
            );
        }
        summary_metrics.insert(t.metric.clone(), per_class);
    }
    let case_json: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            let classes: Vec<serde_json::Value> = r
                .metrics
                .iter()
                .map(|m| {
                    let mut o = serde_json::Map::new();
                    o.insert("class".into(), serde_json::json!(m.class));
                    for metric in METRIC_NAMES {
                        o.insert(metric.into(), json_num(metric_value(m, metric)));
                    }
                    serde_json::Value::Object(o)
                })
                .collect();
            serde_json::json!({"case": r.name, "spacing": r.spacing, "classes": classes})
        })
        .collect();
    let failed: Vec<serde_json::Value> = failures
        .iter()
        .map(|f| serde_json::json!({"case": f.case, "error": f.error}))
        .collect();
    serde_json::json!({
        "cases": results.len(),
        "failed": failed,
        "labels": labels,
        "options": options,
        "note": "mean and std (population, as numpy) are over the finite values of each column",
        "metrics": summary_metrics,
        "per_case": case_json,
    })
}

/// Writes the evaluation report into the folder `out` (created):
/// `eval_<metric>.csv` for each of `metrics` ([`MetricTable::to_csv`]),
/// `summary.json` ([`summary_json`]) and `boxplot_dice.png` /
/// `boxplot_hd95.png` (classes with finite values only; skipped when there
/// are none). Returns the tables, in the order of `metrics`.
///
/// # Errors
/// [`InferError::Invalid`] (key `metrics`) for an unknown metric name;
/// [`InferError::Core`] naming a file that cannot be written.
pub fn write_evaluation_report(
    out: &Path,
    metrics: &[String],
    labels: &[u16],
    options: &MetricOptions,
    results: &[CaseMetrics],
    failures: &[CaseFailure],
) -> Result<Vec<MetricTable>> {
    if let Some(m) = metrics.iter().find(|m| !METRIC_NAMES.contains(&m.as_str())) {
        return Err(InferError::Invalid {
            key: "metrics".into(),
            message: format!("unknown metric {m:?} (known: {})", METRIC_NAMES.join(", ")),
        });
    }
    std::fs::create_dir_all(out).map_err(|e| medseg_core::Error::io(out, e))?;
    let mut tables = Vec::with_capacity(metrics.len());
    for metric in metrics {
        let t = MetricTable::new(metric, results, labels);
        medseg_core::write_atomic(
            &out.join(format!("eval_{metric}.csv")),
            t.to_csv().as_bytes(),
        )?;
        tables.push(t);
    }
    let summary = summary_json(&tables, labels, options, results, failures);
    let text = serde_json::to_string_pretty(&summary)
        .map_err(|e| medseg_core::Error::Other(format!("serialising summary.json: {e}")))?;
    medseg_core::write_atomic(&out.join("summary.json"), text.as_bytes())?;
    for (metric, ylabel) in [("dice", "Dice"), ("hd95", "HD95 (mm)")] {
        let groups: Vec<(String, Vec<f64>)> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let v = results
                    .iter()
                    .filter_map(|r| r.metrics.get(i))
                    .map(|m| metric_value(m, metric))
                    .filter(|x| x.is_finite())
                    .collect();
                (format!("class {l}"), v)
            })
            .collect();
        if groups.iter().all(|g| g.1.is_empty()) {
            continue;
        }
        medseg_viz::box_plot(
            &out.join(format!("boxplot_{metric}.png")),
            &format!("{ylabel} per class ({} cases)", results.len()),
            ylabel,
            &groups,
        )?;
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;
    use medseg_core::{Geometry, LabelMap};
    use ndarray::{s, Array2};

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("medseg_infer_{name}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn square(path: &Path, lo: usize, hi: usize, spacing: f64) {
        let mut a = Array2::<u16>::zeros((12, 12));
        a.slice_mut(s![lo..hi, lo..hi]).fill(1);
        let l = LabelMap::new(
            a.insert_axis(ndarray::Axis(0)).into_dyn(),
            Geometry::with_spacing([1.0, spacing, spacing]),
        )
        .unwrap();
        medseg_io::write_label(path, &l).unwrap();
    }

    #[test]
    fn folders_manifest_evaluation_and_report() {
        let d = temp_dir("evaluation");
        let (gt, pred, out) = (d.join("gt"), d.join("pred"), d.join("out"));
        std::fs::create_dir_all(&gt).unwrap();
        std::fs::create_dir_all(&pred).unwrap();
        square(&gt.join("a.nii.gz"), 2, 8, 1.0);
        square(&pred.join("a.nii.gz"), 2, 8, 1.0);
        square(&gt.join("b.nii.gz"), 2, 8, 1.0);
        square(&pred.join("b.nii.gz"), 3, 7, 1.0);
        square(&gt.join("c.nii.gz"), 2, 8, 1.0);
        square(&pred.join("c.nii.gz"), 2, 8, 2.0);
        square(&gt.join("d.nii.gz"), 2, 8, 1.0);
        std::fs::write(gt.join("readme.txt"), "not a label").unwrap();
        let cases = cases_from_folders(&gt, &pred).unwrap();
        let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a.nii.gz", "b.nii.gz", "c.nii.gz", "d.nii.gz"]);
        let settings = EvalSettings {
            labels: vec![1],
            options: MetricOptions {
                surface_distances: needs_surface_distances(&["hd95".into()]),
                ..Default::default()
            },
            ..Default::default()
        };
        let outcomes = evaluate_pairs(&cases, &settings, &|| {});
        let a = outcomes[0].as_ref().unwrap();
        assert_eq!(a.metrics[0].dice, 1.0);
        assert_eq!(a.spacing, vec![1.0, 1.0]);
        let b = outcomes[1].as_ref().unwrap();
        assert!((b.metrics[0].dice - 2.0 * 16.0 / 52.0).abs() < 1e-12);
        let c = outcomes[2].as_ref().unwrap_err().to_string();
        assert!(c.starts_with("case c.nii.gz: spacing mismatch"), "{c}");
        let dmsg = outcomes[3].as_ref().unwrap_err().to_string();
        assert_eq!(
            dmsg,
            format!(
                "case d.nii.gz: missing prediction {}",
                pred.join("d.nii.gz").display()
            )
        );
        // an overriding spacing of the right length settles the mismatch
        let forced = EvalSettings {
            spacing: vec![0.5, 0.5],
            ..settings.clone()
        };
        assert_eq!(
            evaluate_pair(&cases[2], &forced).unwrap().spacing,
            vec![0.5, 0.5]
        );
        let wrong = EvalSettings {
            spacing: vec![0.5],
            ..settings.clone()
        };
        assert!(evaluate_pair(&cases[2], &wrong).is_err());
        // the report
        let results: Vec<CaseMetrics> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok())
            .cloned()
            .collect();
        let failures = vec![CaseFailure {
            case: "d.nii.gz".into(),
            error: dmsg,
        }];
        let metrics = vec!["dice".to_string(), "hd95".to_string()];
        let tables =
            write_evaluation_report(&out, &metrics, &[1], &settings.options, &results, &failures)
                .unwrap();
        assert_eq!(tables.len(), 2);
        let csv = std::fs::read_to_string(out.join("eval_dice.csv")).unwrap();
        assert!(
            csv.starts_with("image,1\na.nii.gz,1\nb.nii.gz,0.6153846153846154\nmean,"),
            "{csv}"
        );
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(summary["cases"], 2);
        assert_eq!(summary["failed"][0]["case"], "d.nii.gz");
        assert_eq!(summary["metrics"]["dice"]["1"]["finite_cases"], 2);
        assert!(out.join("boxplot_dice.png").is_file());
        assert!(write_evaluation_report(
            &out,
            &["dise".into()],
            &[1],
            &settings.options,
            &results,
            &[]
        )
        .unwrap_err()
        .to_string()
        .contains("unknown metric \"dise\""));
        // a manifest pairing the same files
        std::fs::write(
            d.join("pairs.csv"),
            "image,label,prediction\nimg.nii.gz,gt/b.nii.gz,pred/b.nii.gz\nimg.nii.gz,gt/a.nii.gz,\n",
        )
        .unwrap();
        let m = cases_from_manifest(&d.join("pairs.csv"), None).unwrap();
        assert_eq!(m[0].name, "b.nii.gz");
        assert_eq!(m[0].pred, d.join("pred/b.nii.gz"));
        assert_eq!(m[1].pred, d.join("img.nii.gz"));
        std::fs::write(d.join("bad.csv"), "image\nx.nii.gz\n").unwrap();
        assert!(cases_from_manifest(&d.join("bad.csv"), None)
            .unwrap_err()
            .to_string()
            .contains("row 1: no `label`"));
        // labels of the ground truth: the union over the cases (1 in each
        // square), after remapping, missing files skipped
        let mut three = Array2::<u16>::zeros((12, 12));
        three[[0, 0]] = 3;
        three[[5, 5]] = 1;
        let l = LabelMap::new(
            three.insert_axis(ndarray::Axis(0)).into_dyn(),
            Geometry::with_spacing([1.0; 3]),
        )
        .unwrap();
        medseg_io::write_label(&gt.join("e.nii.gz"), &l).unwrap();
        let mut with_e = cases.clone();
        with_e.push(CasePair {
            name: "e.nii.gz".into(),
            gt: gt.join("e.nii.gz"),
            pred: pred.join("e.nii.gz"),
        });
        with_e.push(CasePair {
            name: "gone".into(),
            gt: gt.join("gone.nii.gz"),
            pred: pred.join("gone.nii.gz"),
        });
        assert_eq!(labels_in_ground_truth(&cases, None), vec![1]);
        assert_eq!(labels_in_ground_truth(&with_e, None), vec![1, 3]);
        let mut table: Vec<u16> = (0..=u16::MAX).collect();
        table[3] = 0;
        table[1] = 7;
        assert_eq!(labels_in_ground_truth(&with_e, Some(&table)), vec![7]);
        assert!(cases_from_folders(&d.join("nope"), &pred).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
