//! `cargo xtask experiment federated`: SegViz's setting on the phantom
//! federation (four sites, each outlining one organ with its own scanner;
//! an external fully labelled site for the test).
//!
//! Arms, with the same number of gradient steps per site: the four
//! single-site models (each `rounds x local` steps on its own partial
//! labels), central pooling with naive background and with the marginal +
//! exclusion losses, FedAvg, FedProx, FedBN (four sites x `rounds x
//! local` steps), the SegViz scheme, and the fully labelled central upper
//! bound (central arms: `4 x rounds x local` steps). Every model is tested
//! as it is at the end of training (the sites' validation sets hold
//! partial labels, so no arm selects a checkpoint by them).
//!
//! Options: `--seeds 1,2,3` (default 1), `--only a,b`, `--rounds R`
//! (default 100), `--local L` (default 5), `--runs DIR` (default
//! runs/experiment_federated), `--out DIR` (default docs/results),
//! `--report-only` (rebuild the report from the runs' scores.json),
//! `--evaluate MODEL` (print the external Dice and HD95 of one checkpoint).

use crate::experiment::{column, evaluate_with, fmt_ms, mean_std, row_means};
use anyhow::{bail, Context, Result};
use medseg_config::ExperimentConfig;
use medseg_federated::simulation::{FederationConfig, Simulation};
use medseg_federated::AggregatorRegistry;
use medseg_learners::TrainerBuilder;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How an arm trains.
enum Arm {
    /// A central run of `config` on `train_csv` (and `valid_csv`), with
    /// `sites` x rounds x local steps.
    Central {
        config: &'static str,
        train_csv: &'static str,
        valid_csv: &'static str,
        sites: usize,
    },
    /// A federation config.
    Federated { config: &'static str },
}

const ARMS: [(&str, Arm); 11] = [
    (
        "single-liver",
        Arm::Central {
            config: "central_naive.toml",
            train_csv: "liver_site/train.csv",
            valid_csv: "liver_site/valid.csv",
            sites: 1,
        },
    ),
    (
        "single-spleen",
        Arm::Central {
            config: "central_naive.toml",
            train_csv: "spleen_site/train.csv",
            valid_csv: "spleen_site/valid.csv",
            sites: 1,
        },
    ),
    (
        "single-lkidney",
        Arm::Central {
            config: "central_naive.toml",
            train_csv: "lkidney_site/train.csv",
            valid_csv: "lkidney_site/valid.csv",
            sites: 1,
        },
    ),
    (
        "single-rkidney",
        Arm::Central {
            config: "central_naive.toml",
            train_csv: "rkidney_site/train.csv",
            valid_csv: "rkidney_site/valid.csv",
            sites: 1,
        },
    ),
    (
        "central-naive",
        Arm::Central {
            config: "central_naive.toml",
            train_csv: "pooled_train.csv",
            valid_csv: "pooled_valid.csv",
            sites: 4,
        },
    ),
    (
        "central-marginal",
        Arm::Central {
            config: "central_marginal.toml",
            train_csv: "pooled_train.csv",
            valid_csv: "pooled_valid.csv",
            sites: 4,
        },
    ),
    (
        "FedAvg",
        Arm::Federated {
            config: "fedavg.toml",
        },
    ),
    (
        "FedProx",
        Arm::Federated {
            config: "fedprox.toml",
        },
    ),
    (
        "FedBN",
        Arm::Federated {
            config: "fedbn.toml",
        },
    ),
    (
        "SegViz",
        Arm::Federated {
            config: "segviz.toml",
        },
    ),
    (
        "full",
        Arm::Central {
            config: "central_naive.toml",
            train_csv: "pooled_train_full.csv",
            valid_csv: "pooled_valid.csv",
            sites: 4,
        },
    ),
];

const ORGANS: [&str; 4] = ["liver", "spleen", "left kidney", "right kidney"];

/// Test scores of one run (per external subject, per organ), saved as
/// `scores.json` in the run's folder.
#[derive(serde::Serialize, serde::Deserialize)]
struct Scores {
    name: String,
    seed: u64,
    train_s: f64,
    dice: Vec<Vec<f64>>,
    #[serde(with = "crate::experiment::non_finite_as_null")]
    hd95: Vec<Vec<f64>>,
}

struct Options {
    seeds: Vec<u64>,
    only: Option<Vec<String>>,
    rounds: usize,
    local: usize,
    runs: PathBuf,
    out: PathBuf,
    report_only: bool,
    evaluate: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        seeds: vec![1],
        only: None,
        rounds: 100,
        local: 5,
        runs: PathBuf::from("runs/experiment_federated"),
        out: PathBuf::from("docs/results"),
        report_only: false,
        evaluate: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--seeds" => {
                o.seeds = val()?
                    .split(',')
                    .map(|t| t.trim().parse().with_context(|| format!("--seeds: `{t}`")))
                    .collect::<Result<_>>()?
            }
            "--only" => o.only = Some(val()?.split(',').map(str::to_string).collect()),
            "--rounds" => o.rounds = val()?.parse().context("--rounds")?,
            "--local" => o.local = val()?.parse().context("--local")?,
            "--runs" => o.runs = PathBuf::from(val()?),
            "--out" => o.out = PathBuf::from(val()?),
            "--report-only" => o.report_only = true,
            "--evaluate" => o.evaluate = Some(PathBuf::from(val()?)),
            other => bail!("unknown option {other} (see xtask/src/experiment_federated.rs)"),
        }
    }
    if o.rounds == 0 || o.local == 0 || o.seeds.is_empty() {
        bail!("--rounds, --local and --seeds need positive values");
    }
    if let Some(only) = &o.only {
        for n in only {
            if !ARMS.iter().any(|(a, _)| a == n) {
                let known: Vec<&str> = ARMS.iter().map(|(a, _)| *a).collect();
                bail!("--only: unknown arm `{n}` (arms: {})", known.join(", "));
            }
        }
    }
    Ok(o)
}

/// Runs the experiment (or only its report).
pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let root = std::env::current_dir()?;
    let configs = root.join("configs/federated");
    // test settings (external test manifest, sliding window) of the base config
    let mut test_cfg = ExperimentConfig::load(&configs.join("central_naive.toml"), &[])?;
    test_cfg.resolve_paths(&root);
    medseg_cli::ensure_data(&test_cfg)?;
    let slice_mm = medseg_synth::PhantomConfig::abdomen2d().spacing[0];
    if let Some(model) = &o.evaluate {
        let (dice, hd95) = evaluate_with(&test_cfg, model, slice_mm)?;
        for (k, organ) in ORGANS.iter().enumerate() {
            println!(
                "{organ}: Dice {}, HD95 {} mm",
                fmt_ms(&column(&dice, k), 3),
                fmt_ms(&column(&hd95, k), 2)
            );
        }
        println!("mean Dice {}", fmt_ms(&row_means(&dice), 3));
        return Ok(());
    }
    let started = Instant::now();
    if !o.report_only {
        for &seed in &o.seeds {
            for (name, arm) in &ARMS {
                if o.only
                    .as_ref()
                    .is_some_and(|v| !v.iter().any(|n| n == name))
                {
                    continue;
                }
                let dir = o.runs.join(format!("{name}_seed{seed}"));
                eprintln!(
                    "[{:>6.0} s] {name} seed {seed}",
                    started.elapsed().as_secs_f64()
                );
                let t0 = Instant::now();
                let ckpt = train(arm, &o, seed, &dir, &root, &configs)
                    .with_context(|| format!("{name} seed {seed}"))?;
                let train_s = t0.elapsed().as_secs_f64();
                let (dice, hd95) = evaluate_with(&test_cfg, &ckpt, slice_mm)?;
                eprintln!(
                    "         {name}: {train_s:.0} s; external Dice per organ {}",
                    (0..ORGANS.len())
                        .map(|k| fmt_ms(&column(&dice, k), 3))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let s = Scores {
                    name: name.to_string(),
                    seed,
                    train_s,
                    dice,
                    hd95,
                };
                std::fs::write(dir.join("scores.json"), serde_json::to_string_pretty(&s)?)?;
            }
        }
    }
    let mut results = Vec::new();
    for (name, _) in &ARMS {
        for &seed in &o.seeds {
            let p = o.runs.join(format!("{name}_seed{seed}/scores.json"));
            if let Ok(text) = std::fs::read_to_string(&p) {
                results.push(
                    serde_json::from_str::<Scores>(&text)
                        .with_context(|| format!("reading {}", p.display()))?,
                );
            }
        }
    }
    if results.is_empty() {
        bail!("no finished run under {}", o.runs.display());
    }
    write_report(&o, &results)
}

/// Trains one arm into `dir` and returns the checkpoint to test.
fn train(
    arm: &Arm,
    o: &Options,
    seed: u64,
    dir: &Path,
    root: &Path,
    configs: &Path,
) -> Result<PathBuf> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    match arm {
        Arm::Central {
            config,
            train_csv,
            valid_csv,
            sites,
        } => {
            let steps = sites * o.rounds * o.local;
            let mut cfg = ExperimentConfig::load(&configs.join(config), &[])?;
            cfg.dataset.train_csv = PathBuf::from(train_csv);
            cfg.dataset.valid_csv = Some(PathBuf::from(valid_csv));
            cfg.training.iterations = steps;
            cfg.training.validate_every = steps / 4;
            cfg.training.seed = seed;
            cfg.training.resume = false;
            cfg.training.output_dir = dir.to_path_buf();
            cfg.resolve_paths(root);
            let mut trainer = TrainerBuilder::new(cfg)
                .registries(medseg_cli::registries())
                .progress(false)
                .build()?;
            trainer.run()?;
            Ok(dir.join("checkpoints/latest.safetensors"))
        }
        Arm::Federated { config } => {
            let set = vec![
                format!("federation.rounds={}", o.rounds),
                format!("federation.local_iterations={}", o.local),
                format!("federation.seed={seed}"),
                format!("federation.output_dir=\"{}\"", dir.display()),
            ];
            let cfg = FederationConfig::load(&configs.join(config), &set)?;
            let site_cfgs = (0..cfg.sites.len())
                .map(|k| cfg.site_config(k, &[], root).map_err(anyhow::Error::from))
                .collect::<Result<Vec<_>>>()?;
            let mut sim = Simulation::new(
                &cfg,
                site_cfgs,
                &medseg_cli::registries,
                &AggregatorRegistry::with_builtins(),
            )?;
            let summary = sim.run()?;
            Ok(summary.model)
        }
    }
}

fn write_report(o: &Options, results: &[Scores]) -> Result<()> {
    std::fs::create_dir_all(&o.out)?;
    let names: Vec<&str> = ARMS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| results.iter().any(|r| r.name == *n))
        .collect();
    let seeds: Vec<u64> = {
        let mut v: Vec<u64> = results.iter().map(|r| r.seed).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let seed_list = seeds
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let runs_of = |n: &str| -> Vec<&Scores> { results.iter().filter(|r| r.name == n).collect() };
    let pooled = |n: &str, hd: bool| -> Vec<Vec<f64>> {
        runs_of(n)
            .iter()
            .flat_map(|r| if hd { r.hd95.clone() } else { r.dice.clone() })
            .collect()
    };
    let mean_of = |r: &Scores| mean_std(&row_means(&r.dice)).0;
    let mut md = String::new();
    md.push_str("# Federated learning with partial labels on the phantom federation\n\n");
    md.push_str(&format!(
        "Command: `cargo xtask experiment federated --rounds {} --local {} --seeds {seed_list}` \
         (release build, `RAYON_NUM_THREADS=1`). The tables below are written by that command; \
         the commentary at the end is the authors'.\n\n",
        o.rounds, o.local
    ));
    md.push_str(&format!(
        "Data (`configs/federated/`, generated on first use as `federation2d`): the 2D abdomen \
         phantom (slices of 128 x 128 at 2.5 mm, 8 slices 15 mm apart per subject) split over four \
         sites of 10 subjects each (liver_site, spleen_site, lkidney_site, rkidney_site); each site \
         outlined one organ (every other organ is background in its labels, and its manifests say \
         so in `annotated_classes`) and renders intensities its own way (contrast 0.75-1.3 about \
         40 HU, offsets of -20 to +40 HU, added noise of 0-18 HU); 3 subjects per site for \
         validation, 7 for training (56 slices). The external test site: 10 other subjects, fully \
         labelled, with a fifth appearance. Per-case intensity normalisation, 64 x 64 random crops, \
         no flips (they would swap the kidneys).\n\n\
         Budget: a 2D UNet (feature_chns [8, 16, 32, 64, 128]), Adam (lr 0.002, poly decay over \
         the whole run), batch 4. Federated arms: {r} rounds of {l} local steps at each of the 4 \
         sites ({s} steps per site; every site takes part in every round and keeps its Adam state \
         from round to round, `keep_optimizer = true`). \
         Single-site arms: {s} steps on the site's own data. Central arms: {c} steps (the \
         federation's total). Losses: CE + Dice (naive: every unlabelled organ is background) or \
         the marginal + exclusion losses (0.5 each) driven by `annotated_classes`; FedAvg, FedProx \
         (mu 0.01) and FedBN train with the latter, SegViz with CE + Dice and a local head per site \
         (`decoder.out_conv`), assembled into one multi-organ layer at the end. Test: the model at \
         the end of training, sliding-window inference on the external site, slices stacked per \
         subject, Dice and HD95 (MedPy's pooled definition, mm) per organ; seeds {seed_list} (the \
         seed draws the initial weights and the data order; the data are fixed).\n\n",
        r = o.rounds,
        l = o.local,
        s = o.rounds * o.local,
        c = 4 * o.rounds * o.local
    ));
    md.push_str("## Mean external Dice per seed\n\nMean over the external subjects and the four organs; the difference to central pooling with the marginal + exclusion losses is paired by seed.\n\n| arm | ");
    for s in &seeds {
        md.push_str(&format!("seed {s} | "));
    }
    md.push_str("mean ± std | vs central-marginal (paired) |\n|---|");
    for _ in 0..seeds.len() + 2 {
        md.push_str("---|");
    }
    md.push('\n');
    let reference = runs_of("central-marginal");
    for n in &names {
        md.push_str(&format!("| {n} | "));
        let runs = runs_of(n);
        for s in &seeds {
            match runs.iter().find(|r| r.seed == *s) {
                Some(r) => md.push_str(&format!("{:.3} | ", mean_of(r))),
                None => md.push_str("- | "),
            }
        }
        let means: Vec<f64> = runs.iter().map(|r| mean_of(r)).collect();
        md.push_str(&format!("{} | ", fmt_ms(&means, 3)));
        let d: Vec<f64> = runs
            .iter()
            .filter_map(|r| {
                reference
                    .iter()
                    .find(|x| x.seed == r.seed)
                    .map(|x| mean_of(r) - mean_of(x))
            })
            .collect();
        if *n == "central-marginal" || d.is_empty() {
            md.push_str("- |\n");
        } else {
            let (m, sd, _) = mean_std(&d);
            md.push_str(&format!("{m:+.3} ± {sd:.3} ({} seeds) |\n", d.len()));
        }
    }
    for (title, hd, digits) in [
        ("Dice per organ", false, 3),
        ("HD95 per organ (mm)", true, 2),
    ] {
        md.push_str(&format!(
            "\n## {title} on the external site (pooled over seeds)\n\nMean ± population std over the (seed, external subject) pairs.\n\n| arm | "
        ));
        for c in ORGANS {
            md.push_str(&format!("{c} | "));
        }
        md.push_str(if hd {
            "\n|---|"
        } else {
            "mean | train time |\n|---|"
        });
        for _ in 0..ORGANS.len() + if hd { 0 } else { 2 } {
            md.push_str("---|");
        }
        md.push('\n');
        for n in &names {
            let rows = pooled(n, hd);
            md.push_str(&format!("| {n} | "));
            for k in 0..ORGANS.len() {
                md.push_str(&format!("{} | ", fmt_ms(&column(&rows, k), digits)));
            }
            if !hd {
                let runs = runs_of(n);
                md.push_str(&format!(
                    "{} | {:.0} s |",
                    fmt_ms(&row_means(&rows), 3),
                    runs.iter().map(|r| r.train_s).sum::<f64>() / runs.len() as f64
                ));
            }
            md.push('\n');
        }
    }
    md.push_str("\n![Dice per organ](federated_dice.png)\n\n![Validation Dice per round](federated_rounds.png)\n\n");
    md.push_str("## Commentary\n\nCOMMENTARY_PLACEHOLDER\n");
    let path = o.out.join("federated.md");
    medseg_core::write_atomic(&path, md.as_bytes())?;

    let cats: Vec<String> = ORGANS.iter().map(|s| s.to_string()).collect();
    let series: Vec<medseg_viz::BarSeries> = names
        .iter()
        .map(|n| {
            let rows = pooled(n, false);
            let (m, s): (Vec<f64>, Vec<f64>) = (0..ORGANS.len())
                .map(|k| {
                    let (m, s, _) = mean_std(&column(&rows, k));
                    (m, s)
                })
                .unzip();
            (n.to_string(), m, Some(s))
        })
        .collect();
    let png = o.out.join("federated_dice.png");
    medseg_viz::bar_chart(
        &png,
        &format!("External Dice per organ, seeds {seed_list}"),
        "Dice",
        &cats,
        &series,
    )?;
    // curves: mean over sites of the validation Dice on their own organ,
    // per round, first seed, per federated arm
    let mut curves = Vec::new();
    for (n, arm) in &ARMS {
        if !matches!(arm, Arm::Federated { .. }) {
            continue;
        }
        let csv = o.runs.join(format!("{n}_seed{}/rounds.csv", seeds[0]));
        let Ok(text) = std::fs::read_to_string(&csv) else {
            continue;
        };
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
        let cols: Vec<usize> = (0..header.len())
            .filter(|&i| header[i].starts_with("valid_dice_"))
            .collect();
        let points: Vec<(f64, f64)> = lines
            .filter_map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                let v: Vec<f64> = cols
                    .iter()
                    .filter_map(|&i| f.get(i)?.parse::<f64>().ok())
                    .collect();
                let round: f64 = f.first()?.parse().ok()?;
                (!v.is_empty()).then(|| (round, v.iter().sum::<f64>() / v.len() as f64))
            })
            .collect();
        curves.push(medseg_viz::Series {
            name: n.to_string(),
            points,
        });
    }
    let rounds_png = o.out.join("federated_rounds.png");
    medseg_viz::line_chart(
        &rounds_png,
        &format!(
            "Mean over sites of the validation Dice on their own organ (seed {})",
            seeds[0]
        ),
        "round",
        "Dice",
        &curves,
    )?;
    println!(
        "wrote {}, {} and {}",
        path.display(),
        png.display(),
        rounds_png.display()
    );
    Ok(())
}
