//! Evaluation reports without file reading: the metric names, case pairing
//! by file name, per-column statistics (mean and population standard
//! deviation of the finite values, as numpy) and per-metric tables in
//! PyMIC's CSV layout (one row per case, one column per class plus
//! `average`, then `mean` and `std` rows).
//!
//! Reading label files and writing the report files is the job of
//! `medseg-infer`'s evaluation driver; this module stays on `std`.

use crate::ClassMetrics;
use std::path::{Path, PathBuf};

/// Every metric name a report can hold, in the order of the per-case JSON.
pub const METRIC_NAMES: [&str; 18] = [
    "dice",
    "iou",
    "precision",
    "recall",
    "specificity",
    "vs",
    "rve",
    "volume_pred",
    "volume_gt",
    "tp",
    "fp",
    "fn",
    "tn",
    "hd",
    "hd95",
    "asd",
    "assd",
    "nsd",
];

/// The metrics that need surface distances.
pub const SURFACE_METRICS: [&str; 5] = ["hd", "hd95", "asd", "assd", "nsd"];

/// The value of metric `name` (one of [`METRIC_NAMES`]) in `m`; NaN for an
/// unknown name. `vs` is the volume similarity, `rve` the relative volume
/// error, `asd` the prediction-to-ground-truth average surface distance,
/// volumes are in mm³ and `tp`... are voxel counts.
pub fn metric_value(m: &ClassMetrics, name: &str) -> f64 {
    match name {
        "dice" => m.dice,
        "iou" => m.iou,
        "precision" => m.precision,
        "recall" => m.recall,
        "specificity" => m.specificity,
        "vs" => m.volume_similarity,
        "rve" => m.relative_volume_error,
        "volume_pred" => m.volume_pred_mm3,
        "volume_gt" => m.volume_gt_mm3,
        "tp" => m.counts.tp as f64,
        "fp" => m.counts.fp as f64,
        "fn" => m.counts.fn_ as f64,
        "tn" => m.counts.tn as f64,
        "hd" => m.hausdorff,
        "hd95" => m.hd95,
        "asd" => m.asd_pred_to_gt,
        "assd" => m.assd,
        "nsd" => m.nsd,
        _ => f64::NAN,
    }
}

/// A prediction paired with its ground truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasePair {
    /// The case name (the prediction's file name).
    pub name: String,
    /// Ground-truth label file.
    pub gt: PathBuf,
    /// Predicted label file.
    pub pred: PathBuf,
}

/// Whether a file name is a label map the evaluation reads: `.nii`,
/// `.nii.gz` or `.png` (any case).
pub fn is_label_file_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.ends_with(".nii") || n.ends_with(".nii.gz") || n.ends_with(".png")
}

/// Pairs ground-truth files (by file name, in `gt_dir`) with the
/// prediction of the same name in `pred_dir`: label files only (see
/// [`is_label_file_name`]), sorted by name. The predictions need not exist.
pub fn pair_by_file_name<I, S>(gt_dir: &Path, pred_dir: &Path, gt_names: I) -> Vec<CasePair>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut names: Vec<String> = gt_names
        .into_iter()
        .map(Into::into)
        .filter(|n| is_label_file_name(n))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| CasePair {
            gt: gt_dir.join(&n),
            pred: pred_dir.join(&n),
            name: n,
        })
        .collect()
}

/// The metrics of one evaluated case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseMetrics {
    /// The case name.
    pub name: String,
    /// The spacing used, in mm, in array axis order.
    pub spacing: Vec<f64>,
    /// One entry per evaluated label, in the order of the labels.
    pub metrics: Vec<ClassMetrics>,
}

/// Mean, population standard deviation and number of the finite values of
/// one column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColumnStats {
    /// Mean of the finite values (NaN without any).
    pub mean: f64,
    /// Population standard deviation (numpy's default) of the finite values
    /// (NaN without any).
    pub std: f64,
    /// Number of finite values.
    pub finite: usize,
}

/// Mean and population standard deviation (numpy's default) of the finite
/// values of `v`; NaN, NaN, 0 when none is finite.
pub fn mean_std(v: &[f64]) -> ColumnStats {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        return ColumnStats {
            mean: f64::NAN,
            std: f64::NAN,
            finite: 0,
        };
    }
    let m = f.iter().sum::<f64>() / f.len() as f64;
    let var = f.iter().map(|x| (x - m).powi(2)).sum::<f64>() / f.len() as f64;
    ColumnStats {
        mean: m,
        std: var.sqrt(),
        finite: f.len(),
    }
}

/// A number as reports write it: `nan`, `inf`, `-inf`, else Rust's shortest
/// round-trip form.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// One metric over all cases, in PyMIC's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricTable {
    /// The metric name.
    pub metric: String,
    /// Column names: the labels, then `average` when there are several.
    pub columns: Vec<String>,
    /// One row per case: its name and one value per column (the average is
    /// the plain mean of the class values, NaN when one of them is).
    pub rows: Vec<(String, Vec<f64>)>,
    /// Statistics per column.
    pub stats: Vec<ColumnStats>,
}

impl MetricTable {
    /// The table of `metric` over `results`, whose `metrics` hold one entry
    /// per label of `labels`.
    pub fn new(metric: &str, results: &[CaseMetrics], labels: &[u16]) -> Self {
        let with_avg = labels.len() > 1;
        let mut columns: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        if with_avg {
            columns.push("average".into());
        }
        let mut cols: Vec<Vec<f64>> = vec![Vec::new(); columns.len()];
        let mut rows = Vec::with_capacity(results.len());
        for r in results {
            let mut vals: Vec<f64> = r.metrics.iter().map(|m| metric_value(m, metric)).collect();
            if with_avg {
                vals.push(vals.iter().sum::<f64>() / vals.len() as f64);
            }
            for (c, v) in vals.iter().enumerate() {
                if let Some(col) = cols.get_mut(c) {
                    col.push(*v);
                }
            }
            rows.push((r.name.clone(), vals));
        }
        MetricTable {
            metric: metric.to_string(),
            columns,
            rows,
            stats: cols.iter().map(|c| mean_std(c)).collect(),
        }
    }

    /// The CSV text: header `image,<labels>[,average]`, one line per case,
    /// then the `mean` and `std` lines; numbers as [`format_value`], fields
    /// quoted only when they hold a comma, a quote or a line break.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let mut line = |cells: &mut dyn Iterator<Item = String>| {
            let cells: Vec<String> = cells.map(|c| csv_field(&c)).collect();
            out.push_str(&cells.join(","));
            out.push('\n');
        };
        line(&mut std::iter::once("image".to_string()).chain(self.columns.iter().cloned()));
        for (name, vals) in &self.rows {
            line(&mut std::iter::once(name.clone()).chain(vals.iter().map(|v| format_value(*v))));
        }
        line(
            &mut std::iter::once("mean".to_string())
                .chain(self.stats.iter().map(|s| format_value(s.mean))),
        );
        line(
            &mut std::iter::once("std".to_string())
                .chain(self.stats.iter().map(|s| format_value(s.std))),
        );
        out
    }

    /// One line for a console: `metric: 1 0.8123±0.0456  2 ...`, the metric
    /// name right-aligned on 12 characters.
    pub fn summary_line(&self) -> String {
        format!(
            "{:>12}: {}",
            self.metric,
            self.columns
                .iter()
                .zip(&self.stats)
                .map(|(n, s)| format!("{n} {:.4}±{:.4}", s.mean, s.std))
                .collect::<Vec<_>>()
                .join("  ")
        )
    }
}

/// A CSV field, quoted (with doubled quotes) when it holds a comma, a
/// quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Counts;

    fn class(class: u16, dice: f64, hd95: f64) -> ClassMetrics {
        ClassMetrics {
            class,
            counts: Counts {
                tp: 3,
                fp: 1,
                fn_: 0,
                tn: 10,
            },
            volume_pred_mm3: 4.0,
            volume_gt_mm3: 3.0,
            dice,
            iou: 0.5,
            precision: 0.75,
            recall: 1.0,
            specificity: 0.9,
            volume_similarity: 0.8,
            relative_volume_error: 0.3,
            hausdorff: 2.0,
            hd95,
            asd_pred_to_gt: 0.5,
            asd_gt_to_pred: 0.25,
            assd: 0.4,
            nsd: 0.7,
        }
    }

    fn case(name: &str, c: Vec<ClassMetrics>) -> CaseMetrics {
        CaseMetrics {
            name: name.into(),
            spacing: vec![1.0, 1.0],
            metrics: c,
        }
    }

    #[test]
    fn statistics_ignore_non_finite_values() {
        let s = mean_std(&[1.0, 3.0, f64::NAN, f64::INFINITY]);
        assert_eq!((s.mean, s.std, s.finite), (2.0, 1.0, 2));
        let s = mean_std(&[f64::NAN]);
        assert!(s.mean.is_nan() && s.std.is_nan() && s.finite == 0);
        assert_eq!(format_value(f64::NEG_INFINITY), "-inf");
        assert_eq!(format_value(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(format_value(1.0), "1");
    }

    #[test]
    fn pymic_layout_with_average_mean_and_std_rows() {
        let results = vec![
            case(
                "a.nii.gz",
                vec![class(1, 1.0, 0.0), class(2, 0.5, f64::INFINITY)],
            ),
            case("b,c.png", vec![class(1, 0.5, 2.0), class(2, 0.25, 1.0)]),
        ];
        let t = MetricTable::new("dice", &results, &[1, 2]);
        assert_eq!(t.columns, ["1", "2", "average"]);
        assert_eq!(
            t.to_csv(),
            "image,1,2,average\na.nii.gz,1,0.5,0.75\n\"b,c.png\",0.5,0.25,0.375\nmean,0.75,0.375,0.5625\nstd,0.25,0.125,0.1875\n"
        );
        assert_eq!(
            t.summary_line(),
            "        dice: 1 0.7500±0.2500  2 0.3750±0.1250  average 0.5625±0.1875"
        );
        let h = MetricTable::new("hd95", &results, &[1, 2]);
        assert_eq!(h.rows[0].1[2], f64::INFINITY);
        assert_eq!(h.stats[1].finite, 1);
        assert!(h.to_csv().contains("a.nii.gz,0,inf,inf\n"));
        // one label: no average column
        let one: Vec<CaseMetrics> = results
            .iter()
            .map(|r| case(&r.name, vec![r.metrics[0].clone()]))
            .collect();
        let t = MetricTable::new("tp", &one, &[1]);
        assert_eq!(
            t.to_csv(),
            "image,1\na.nii.gz,3\n\"b,c.png\",3\nmean,3\nstd,0\n"
        );
    }

    #[test]
    fn metric_names_and_pairing() {
        let m = class(1, 0.9, 1.5);
        for name in METRIC_NAMES {
            assert!(!metric_value(&m, name).is_nan(), "{name}");
        }
        assert!(metric_value(&m, "nope").is_nan());
        assert_eq!(metric_value(&m, "asd"), 0.5);
        let pairs = pair_by_file_name(
            Path::new("gt"),
            Path::new("pred"),
            ["b.nii.gz", "notes.txt", "a.PNG", "c.nii"],
        );
        let names: Vec<&str> = pairs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a.PNG", "b.nii.gz", "c.nii"]);
        assert_eq!(pairs[1].gt, Path::new("gt/b.nii.gz"));
        assert_eq!(pairs[1].pred, Path::new("pred/b.nii.gz"));
    }
}
