//! medseg-eval: evaluate predicted label maps against ground truth.
//!
//! Cases come from two folders matched by file name (`--gt-dir`,
//! `--pred-dir`) or from a manifest CSV (`--manifest`) whose `label` column
//! is the ground truth and whose `prediction` column (or, without one, its
//! first image column) is the prediction. NIfTI and PNG label maps are read
//! with medseg-io; spacing comes from the ground-truth file unless
//! `--spacing` overrides it. Metrics come from medseg-metrics (MedPy / MONAI
//! conventions, chosen by options).
//!
//! Writes into `--out`: `eval_<metric>.csv` per metric in PyMIC's layout (one
//! row per case, one column per class plus `average`, then `mean` and `std`
//! rows), `summary.json`, and `boxplot_dice.png` / `boxplot_hd95.png`.

use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use medseg_metrics::{
    evaluate_case, AssdDefinition, ClassMetrics, Connectivity, EmptyPolicies, EmptyPolicy,
    Hd95Definition, MetricOptions,
};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const METRICS: [&str; 18] = [
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

#[derive(Parser, Debug)]
#[command(
    name = "medseg-eval",
    version,
    about = "Evaluate segmentations against ground truth (Dice, HD95, ASSD, NSD... matching MedPy and MONAI)."
)]
struct Args {
    /// Folder of ground-truth label maps (.nii, .nii.gz, .png); every file is a case.
    #[arg(long, requires = "pred_dir", conflicts_with = "manifest")]
    gt_dir: Option<PathBuf>,
    /// Folder of predictions, matched to the ground truth by file name.
    #[arg(long, requires = "gt_dir")]
    pred_dir: Option<PathBuf>,
    /// Manifest CSV: ground truth in `label`, prediction in `prediction` (or the first image column).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Folder that manifest paths are relative to (default: the manifest's folder).
    #[arg(long, requires = "manifest")]
    root: Option<PathBuf>,
    /// Output folder (created if needed).
    #[arg(long)]
    out: PathBuf,
    /// Labels to evaluate, e.g. `1,2,3`.
    #[arg(long, value_delimiter = ',', required_unless_present = "num_classes")]
    labels: Vec<u16>,
    /// Evaluate labels 1..N-1 (PyMIC's `class_number`).
    #[arg(long, conflicts_with = "labels")]
    num_classes: Option<u16>,
    /// Remap label values in both prediction and ground truth first, e.g. `4:1,5:2`.
    #[arg(long)]
    remap: Option<String>,
    /// Spacing in mm in array axis order ((D,)H,W), overriding the files'.
    #[arg(long, value_delimiter = ',')]
    spacing: Vec<f64>,
    /// Metrics to write, comma separated, from: dice iou precision recall specificity vs rve
    /// volume_pred volume_gt tp fp fn tn hd hd95 asd assd nsd.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "dice,iou,precision,recall,rve,hd,hd95,assd,nsd"
    )]
    metrics: Vec<String>,
    /// HD95 definition: `pooled` (MedPy) or `max-of-directed` (MONAI).
    #[arg(long, default_value = "pooled")]
    hd95: String,
    /// Percentile of the "hd95" metric.
    #[arg(long, default_value_t = 95.0)]
    percentile: f64,
    /// ASSD definition: `pooled-mean` (MedPy, MONAI) or `mean-of-directed-means`.
    #[arg(long, default_value = "pooled-mean")]
    assd: String,
    /// Surface connectivity: `face` (MedPy default, MONAI) or `full`.
    #[arg(long, default_value = "face")]
    connectivity: String,
    /// Tolerance of the normalised surface Dice, in mm.
    #[arg(long, default_value_t = 1.0)]
    nsd_tolerance: f64,
    /// Distance metrics when exactly one mask is empty: nan, inf, zero or a number (PyMIC: 50 for HD95).
    #[arg(long, default_value = "inf")]
    one_empty: String,
    /// Distance metrics when both masks are empty: nan, inf, zero or a number.
    #[arg(long, default_value = "nan")]
    both_empty: String,
    /// Overlap ratios with a zero denominator (e.g. Dice of two empty masks).
    #[arg(long, default_value = "nan")]
    zero_division: String,
    /// Record failing cases in summary.json and go on instead of stopping.
    #[arg(long)]
    keep_going: bool,
}

struct Case {
    name: String,
    gt: PathBuf,
    pred: PathBuf,
}

struct CaseResult {
    name: String,
    spacing: Vec<f64>,
    metrics: Vec<ClassMetrics>,
}

fn parse_policy(s: &str, flag: &str) -> Result<EmptyPolicy> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "nan" => EmptyPolicy::Nan,
        "inf" => EmptyPolicy::Inf,
        "zero" | "0" => EmptyPolicy::Zero,
        other => EmptyPolicy::Cap(
            other
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .with_context(|| format!("--{flag} {s:?}: expected nan, inf, zero or a number"))?,
        ),
    })
}

fn options(a: &Args) -> Result<MetricOptions> {
    let hd95 = match a.hd95.as_str() {
        "pooled" => Hd95Definition::Pooled,
        "max-of-directed" => Hd95Definition::MaxOfDirected,
        o => bail!("--hd95 {o:?}: expected pooled or max-of-directed"),
    };
    let assd = match a.assd.as_str() {
        "pooled-mean" => AssdDefinition::PooledMean,
        "mean-of-directed-means" => AssdDefinition::MeanOfDirectedMeans,
        o => bail!("--assd {o:?}: expected pooled-mean or mean-of-directed-means"),
    };
    let connectivity = match a.connectivity.as_str() {
        "face" => Connectivity::Face,
        "full" => Connectivity::Full,
        o => bail!("--connectivity {o:?}: expected face or full"),
    };
    let opts = MetricOptions {
        connectivity,
        hd95,
        percentile: a.percentile,
        assd,
        nsd_tolerance_mm: a.nsd_tolerance,
        distance_empty: EmptyPolicies {
            one_empty: parse_policy(&a.one_empty, "one-empty")?,
            both_empty: parse_policy(&a.both_empty, "both-empty")?,
        },
        overlap_zero_division: parse_policy(&a.zero_division, "zero-division")?,
        surface_distances: a
            .metrics
            .iter()
            .any(|m| ["hd", "hd95", "asd", "assd", "nsd"].contains(&m.as_str())),
        ..MetricOptions::default()
    };
    opts.validate().context("metric options")?;
    Ok(opts)
}

fn parse_remap(s: &str) -> Result<Vec<u16>> {
    let mut table: Vec<u16> = (0..=u16::MAX).collect();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (from, to) = pair
            .split_once(':')
            .with_context(|| format!("--remap entry {pair:?}: expected FROM:TO"))?;
        let from: u16 = from
            .trim()
            .parse()
            .with_context(|| format!("--remap entry {pair:?}: {from:?} is not a label"))?;
        let to: u16 = to
            .trim()
            .parse()
            .with_context(|| format!("--remap entry {pair:?}: {to:?} is not a label"))?;
        table[from as usize] = to;
    }
    Ok(table)
}

fn metric_value(m: &ClassMetrics, name: &str) -> f64 {
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

fn is_label_file(p: &Path) -> bool {
    let n = p
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    n.ends_with(".nii") || n.ends_with(".nii.gz") || n.ends_with(".png")
}

fn cases_from_folders(gt_dir: &Path, pred_dir: &Path) -> Result<Vec<Case>> {
    let mut names: Vec<String> = std::fs::read_dir(gt_dir)
        .with_context(|| format!("reading the ground-truth folder {}", gt_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_label_file(p))
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    if names.is_empty() {
        bail!(
            "no .nii, .nii.gz or .png files in the ground-truth folder {}",
            gt_dir.display()
        );
    }
    Ok(names
        .into_iter()
        .map(|n| Case {
            gt: gt_dir.join(&n),
            pred: pred_dir.join(&n),
            name: n,
        })
        .collect())
}

fn cases_from_manifest(path: &Path, root: Option<&Path>) -> Result<Vec<Case>> {
    let m = medseg_io::Manifest::read_unchecked(path, root)
        .with_context(|| format!("reading the manifest {}", path.display()))?;
    m.rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let gt = row.label.as_ref().with_context(|| {
                format!(
                    "manifest {} row {}: no `label` (ground truth) cell",
                    path.display(),
                    i + 1
                )
            })?;
            let pred = match row.extra.get("prediction").filter(|p| !p.is_empty()) {
                Some(p) => PathBuf::from(p),
                None => row.images.first().cloned().with_context(|| {
                    format!(
                        "manifest {} row {}: no `prediction` or image cell",
                        path.display(),
                        i + 1
                    )
                })?,
            };
            let name = pred
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("row{}", i + 1));
            Ok(Case {
                name,
                gt: m.resolve(gt),
                pred: m.resolve(&pred),
            })
        })
        .collect()
}

fn evaluate_one(
    case: &Case,
    remap: Option<&[u16]>,
    spacing_override: &[f64],
    labels: &[u16],
    opts: &MetricOptions,
) -> Result<CaseResult> {
    if !case.pred.exists() {
        bail!(
            "case {}: missing prediction {}",
            case.name,
            case.pred.display()
        );
    }
    if !case.gt.exists() {
        bail!(
            "case {}: missing ground truth {}",
            case.name,
            case.gt.display()
        );
    }
    let gt = medseg_io::read_label(&case.gt).with_context(|| {
        format!(
            "case {}: reading the ground truth {}",
            case.name,
            case.gt.display()
        )
    })?;
    let pred = medseg_io::read_label(&case.pred).with_context(|| {
        format!(
            "case {}: reading the prediction {}",
            case.name,
            case.pred.display()
        )
    })?;
    if gt.spatial_shape() != pred.spatial_shape() {
        bail!(
            "case {}: shape mismatch: prediction {:?} vs ground truth {:?}",
            case.name,
            pred.spatial_shape(),
            gt.spatial_shape()
        );
    }
    let nd = gt.spatial_ndim();
    let spacing: Vec<f64> = if spacing_override.is_empty() {
        let sg = &gt.geometry.spacing[3 - nd..];
        let sp = &pred.geometry.spacing[3 - nd..];
        if sg
            .iter()
            .zip(sp)
            .any(|(a, b)| (a - b).abs() > 1e-4 * a.abs().max(b.abs()))
        {
            bail!(
                "case {}: spacing mismatch: prediction {sp:?} vs ground truth {sg:?} (use --spacing to override)",
                case.name
            );
        }
        sg.to_vec()
    } else {
        if spacing_override.len() != nd {
            bail!(
                "case {}: --spacing has {} values but the images have {nd} spatial axes",
                case.name,
                spacing_override.len()
            );
        }
        spacing_override.to_vec()
    };
    let spatial = |d: ndarray::ArrayD<u16>| {
        let d = d.index_axis_move(ndarray::Axis(0), 0);
        match remap {
            Some(t) => d.mapv(|v| t[v as usize]),
            None => d,
        }
    };
    let (g, p) = (spatial(gt.data), spatial(pred.data));
    let metrics = evaluate_case(p.view(), g.view(), &spacing, labels, opts)
        .with_context(|| format!("case {}: computing metrics", case.name))?;
    Ok(CaseResult {
        name: case.name.clone(),
        spacing,
        metrics,
    })
}

/// Mean and population standard deviation (numpy's default) of the finite values.
fn mean_std(v: &[f64]) -> (f64, f64, usize) {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        return (f64::NAN, f64::NAN, 0);
    }
    let m = f.iter().sum::<f64>() / f.len() as f64;
    let var = f.iter().map(|x| (x - m).powi(2)).sum::<f64>() / f.len() as f64;
    (m, var.sqrt(), f.len())
}

fn fmt(v: f64) -> String {
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

/// Writes `bytes` atomically with [`medseg_core::write_atomic`].
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(medseg_core::write_atomic(path, bytes)?)
}

/// Mean, standard deviation and number of finite values of one column.
type ColumnStats = (f64, f64, usize);

/// One metric's table in PyMIC's layout.
fn metric_csv(
    metric: &str,
    results: &[CaseResult],
    labels: &[u16],
) -> Result<(Vec<u8>, Vec<ColumnStats>)> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut head = vec!["image".to_string()];
    head.extend(labels.iter().map(|l| l.to_string()));
    let with_avg = labels.len() > 1;
    if with_avg {
        head.push("average".into());
    }
    w.write_record(&head)?;
    let ncol = labels.len() + with_avg as usize;
    let mut cols: Vec<Vec<f64>> = vec![Vec::new(); ncol];
    for r in results {
        let mut vals: Vec<f64> = r.metrics.iter().map(|m| metric_value(m, metric)).collect();
        if with_avg {
            vals.push(vals.iter().sum::<f64>() / vals.len() as f64);
        }
        let mut rec = vec![r.name.clone()];
        for (c, v) in vals.iter().enumerate() {
            cols[c].push(*v);
            rec.push(fmt(*v));
        }
        w.write_record(&rec)?;
    }
    let stats: Vec<ColumnStats> = cols.iter().map(|c| mean_std(c)).collect();
    let mut mean = vec!["mean".to_string()];
    let mut std = vec!["std".to_string()];
    for s in &stats {
        mean.push(fmt(s.0));
        std.push(fmt(s.1));
    }
    w.write_record(&mean)?;
    w.write_record(&std)?;
    Ok((w.into_inner().context("finishing the CSV")?, stats))
}

fn json_num(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!(v)
    } else {
        serde_json::json!(fmt(v))
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let labels: Vec<u16> = match args.num_classes {
        Some(n) => (1..n).collect(),
        None => args.labels.clone(),
    };
    if labels.is_empty() {
        bail!("no labels to evaluate (--labels or --num-classes > 1)");
    }
    for m in &args.metrics {
        if !METRICS.contains(&m.as_str()) {
            bail!(
                "--metrics: unknown metric {m:?} (known: {})",
                METRICS.join(", ")
            );
        }
    }
    let opts = options(&args)?;
    let remap = args.remap.as_deref().map(parse_remap).transpose()?;
    let cases = match (&args.manifest, &args.gt_dir, &args.pred_dir) {
        (Some(m), _, _) => cases_from_manifest(m, args.root.as_deref())?,
        (None, Some(g), Some(p)) => cases_from_folders(g, p)?,
        _ => bail!("give either --manifest or both --gt-dir and --pred-dir"),
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    let bar = ProgressBar::new(cases.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} cases {elapsed_precise} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let outcomes: Vec<Result<CaseResult>> = cases
        .par_iter()
        .map(|c| {
            let r = evaluate_one(c, remap.as_deref(), &args.spacing, &labels, &opts);
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();

    let mut results = Vec::new();
    let mut failures = Vec::new();
    for (case, o) in cases.iter().zip(outcomes) {
        match o {
            Ok(r) => results.push(r),
            Err(e) if args.keep_going => {
                eprintln!("error (kept going): {e:#}");
                failures.push(serde_json::json!({"case": case.name, "error": format!("{e:#}")}));
            }
            Err(e) => {
                return Err(e.context(
                    "evaluation stopped (use --keep-going to record failures and continue)",
                ))
            }
        }
    }
    if results.is_empty() {
        bail!("no case could be evaluated ({} failures)", failures.len());
    }

    let mut summary_metrics = BTreeMap::new();
    for metric in &args.metrics {
        let (bytes, stats) = metric_csv(metric, &results, &labels)?;
        write_atomic(&args.out.join(format!("eval_{metric}.csv")), &bytes)?;
        let mut per_class = BTreeMap::new();
        let mut names: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        if labels.len() > 1 {
            names.push("average".into());
        }
        for (n, s) in names.iter().zip(&stats) {
            per_class.insert(n.clone(), serde_json::json!({"mean": json_num(s.0), "std": json_num(s.1), "finite_cases": s.2}));
        }
        summary_metrics.insert(metric.clone(), per_class);
        println!(
            "{metric:>12}: {}",
            names
                .iter()
                .zip(&stats)
                .map(|(n, s)| format!("{n} {:.4}±{:.4}", s.0, s.1))
                .collect::<Vec<_>>()
                .join("  ")
        );
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
                    for metric in METRICS {
                        o.insert(metric.into(), json_num(metric_value(m, metric)));
                    }
                    serde_json::Value::Object(o)
                })
                .collect();
            serde_json::json!({"case": r.name, "spacing": r.spacing, "classes": classes})
        })
        .collect();
    let summary = serde_json::json!({
        "cases": results.len(),
        "failed": failures,
        "labels": labels,
        "options": opts,
        "note": "mean and std (population, as numpy) are over the finite values of each column",
        "metrics": summary_metrics,
        "per_case": case_json,
    });
    write_atomic(
        &args.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;

    for (metric, ylabel) in [("dice", "Dice"), ("hd95", "HD95 (mm)")] {
        let groups: Vec<(String, Vec<f64>)> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let v = results
                    .iter()
                    .map(|r| metric_value(&r.metrics[i], metric))
                    .filter(|x| x.is_finite())
                    .collect();
                (format!("class {l}"), v)
            })
            .collect();
        if groups.iter().all(|g| g.1.is_empty()) {
            continue;
        }
        let path = args.out.join(format!("boxplot_{metric}.png"));
        medseg_viz::box_plot(
            &path,
            &format!("{ylabel} per class ({} cases)", results.len()),
            ylabel,
            &groups,
        )
        .with_context(|| format!("drawing {}", path.display()))?;
    }
    println!(
        "evaluated {} cases ({} failed); results in {}",
        results.len(),
        failures.len(),
        args.out.display()
    );
    if !failures.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
