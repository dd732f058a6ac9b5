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
//! Without `--labels` or `--num-classes`, every non-zero label present in
//! the ground truth is evaluated: the union over all cases (after
//! `--remap`), so that every case has the same columns and a label missing
//! from one case's ground truth still counts that case's false positives.
//! The app prints which labels it found. (For binary masks this is label 1,
//! what MedPy users expect.)
//!
//! Writes into `--out`: `eval_<metric>.csv` per metric in PyMIC's layout (one
//! row per case, one column per class plus `average`, then `mean` and `std`
//! rows), `summary.json`, and `boxplot_dice.png` / `boxplot_hd95.png`.
//!
//! Pairing, evaluation and the report live in `medseg_infer` (evaluation
//! driver) and `medseg_metrics::report` (tables, statistics, CSV); this file
//! parses arguments.

use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use medseg_infer::{
    cases_from_folders, cases_from_manifest, evaluate_pairs, labels_in_ground_truth,
    needs_surface_distances, write_evaluation_report, CaseFailure, EvalSettings,
};
use medseg_metrics::{
    AssdDefinition, Connectivity, EmptyPolicies, EmptyPolicy, Hd95Definition, MetricOptions,
    METRIC_NAMES,
};
use std::path::PathBuf;

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
    /// Labels to evaluate, e.g. `1,2,3`. Without it (and without
    /// --num-classes): every non-zero label present in the ground truth of any
    /// case (after --remap), printed before evaluating.
    #[arg(long, value_delimiter = ',')]
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
        surface_distances: needs_surface_distances(&a.metrics),
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

fn main() -> Result<()> {
    // large tensor buffers: keep freed memory in the heap (docs/performance.md)
    medseg_core::runtime::tune_allocator();
    let args = Args::parse();
    for m in &args.metrics {
        if !METRIC_NAMES.contains(&m.as_str()) {
            bail!(
                "--metrics: unknown metric {m:?} (known: {})",
                METRIC_NAMES.join(", ")
            );
        }
    }
    let opts = options(&args)?;
    let remap = args.remap.as_deref().map(parse_remap).transpose()?;
    let cases = match (&args.manifest, &args.gt_dir, &args.pred_dir) {
        (Some(m), _, _) => cases_from_manifest(m, args.root.as_deref())
            .with_context(|| format!("reading the manifest {}", m.display()))?,
        (None, Some(g), Some(p)) => cases_from_folders(g, p)?,
        _ => bail!("give either --manifest or both --gt-dir and --pred-dir"),
    };
    let labels: Vec<u16> = match (args.num_classes, args.labels.is_empty()) {
        (Some(n), _) => (1..n).collect(),
        (None, false) => args.labels.clone(),
        (None, true) => {
            let found = labels_in_ground_truth(&cases, remap.as_deref());
            if found.is_empty() {
                bail!(
                    "the ground truth of the {} cases holds no non-zero label: give --labels",
                    cases.len()
                );
            }
            let list: Vec<String> = found.iter().map(u16::to_string).collect();
            println!(
                "no --labels or --num-classes: evaluating the labels present in the ground truth of {} cases: {}",
                cases.len(),
                list.join(",")
            );
            found
        }
    };
    if labels.is_empty() {
        bail!("no labels to evaluate (--labels or --num-classes > 1)");
    }
    let settings = EvalSettings {
        options: opts,
        remap,
        spacing: args.spacing.clone(),
        labels,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    let bar = ProgressBar::new(cases.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} cases {elapsed_precise} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let outcomes = evaluate_pairs(&cases, &settings, &|| bar.inc(1));
    bar.finish_and_clear();

    let mut results = Vec::new();
    let mut failures = Vec::new();
    for (case, o) in cases.iter().zip(outcomes) {
        match o {
            Ok(r) => results.push(r),
            Err(e) if args.keep_going => {
                eprintln!("error (kept going): {e}");
                failures.push(CaseFailure {
                    case: case.name.clone(),
                    error: e.to_string(),
                });
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(
                    "evaluation stopped (use --keep-going to record failures and continue)",
                ))
            }
        }
    }
    if results.is_empty() {
        bail!("no case could be evaluated ({} failures)", failures.len());
    }
    let tables = write_evaluation_report(
        &args.out,
        &args.metrics,
        &settings.labels,
        &settings.options,
        &results,
        &failures,
    )?;
    for t in &tables {
        println!("{}", t.summary_line());
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
