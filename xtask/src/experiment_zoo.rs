//! `cargo xtask experiment zoo`: every 2D network of `configs/zoo/` trained
//! on the cardiac phantom with the same budget (the quickstart's recipe:
//! data, augmentation, loss, optimiser, learning rate, iterations; the test
//! in `crates/medseg-learners/tests/zoo_configs.rs` holds the files to it),
//! then tested; beside it the network's size (trainable parameters,
//! multiply-adds of one 96x96 image) and its train-step and inference time
//! on this machine next to PyTorch's for the same network
//! (`tools/torch_zoo_bench.py`, which builds the reference models of the
//! fixture scripts: PyMIC, segmentation_models_pytorch, MONAI, or the
//! transcription a parity test checks).
//!
//! Writes `docs/results/zoo.md` (or `zoo_generated.md` beside an existing
//! one), `zoo.csv` (one row per network), `zoo_runs.csv` (one row per run)
//! and `zoo_dice_vs_params.png`.
//!
//! Options: `--iterations N` (default 300), `--seeds 1,2` (default 1),
//! `--only stem,stem` (file stems of `configs/zoo/`), `--timing-iters N`
//! (default 5; median after 2 warm-up steps, batch 4), `--threads N`
//! (timing, default 2), `--no-timing`, `--no-python`, `--retime`,
//! `--report-only`, `--runs DIR` (default runs/experiment_zoo: training
//! outputs), `--out DIR` (default docs/results). With `--only`, networks run
//! in the order given.
//!
//! Each finished run's test scores and each network's size and timings are
//! kept beside the report, in `<out>/zoo_cache/<stem>/seed<s>.json` and
//! `<out>/zoo_cache/<stem>/profile.json` (a few hundred bytes each, meant
//! to be committed), and reused: the experiment can be run a few networks
//! at a time, on different days, and the report always covers everything
//! cached. Delete a file (or pass `--retime`) to redo it.

use crate::bench_unet::{run_child, Case, ChildOut};
use crate::experiment::{evaluate_with, mean_std, row_means};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use medseg_config::ExperimentConfig;
use medseg_learners::{build_net, network_config, TrainerBuilder};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

struct Options {
    iterations: usize,
    seeds: Vec<u64>,
    only: Option<Vec<String>>,
    timing_iters: usize,
    threads: usize,
    timing: bool,
    python: bool,
    retime: bool,
    report_only: bool,
    runs: PathBuf,
    out: PathBuf,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        iterations: 300,
        seeds: vec![1],
        only: None,
        timing_iters: 5,
        threads: 2,
        timing: true,
        python: true,
        retime: false,
        report_only: false,
        runs: PathBuf::from("runs/experiment_zoo"),
        out: PathBuf::from("docs/results"),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--iterations" => o.iterations = val()?.parse().context("--iterations")?,
            "--seeds" => {
                o.seeds = val()?
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<u64>()
                            .with_context(|| format!("--seeds: `{s}` is not an integer"))
                    })
                    .collect::<Result<_>>()?
            }
            "--only" => o.only = Some(val()?.split(',').map(str::to_string).collect()),
            "--timing-iters" => o.timing_iters = val()?.parse().context("--timing-iters")?,
            "--threads" => o.threads = val()?.parse().context("--threads")?,
            "--no-timing" => o.timing = false,
            "--no-python" => o.python = false,
            "--retime" => o.retime = true,
            "--report-only" => o.report_only = true,
            "--runs" => o.runs = PathBuf::from(val()?),
            "--out" => o.out = PathBuf::from(val()?),
            other => bail!("experiment zoo: unknown option {other}"),
        }
    }
    if o.iterations == 0 || o.seeds.is_empty() || o.timing_iters == 0 || o.threads == 0 {
        bail!("--iterations, --seeds, --timing-iters and --threads must be positive/non-empty");
    }
    Ok(o)
}

/// One network of the zoo: its config file and what it is.
struct Entry {
    stem: String,
    path: PathBuf,
    cfg: ExperimentConfig,
    /// The side of the (padded) square crops the network trains on.
    side: usize,
}

impl Entry {
    fn name(&self) -> String {
        self.cfg.network["name"]
            .as_str()
            .unwrap_or(&self.stem)
            .to_string()
    }
}

fn entries(root: &Path, o: &Options) -> Result<Vec<Entry>> {
    let dir = root.join("configs/zoo");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    let mut v = Vec::new();
    for path in paths {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .context("config file name")?
            .to_string();
        if o.only.as_ref().is_some_and(|only| !only.contains(&stem)) {
            continue;
        }
        let mut cfg = ExperimentConfig::load(&path, &[])
            .with_context(|| format!("loading {}", path.display()))?;
        cfg.resolve_paths(root);
        let side = cfg
            .dataset
            .train_transforms
            .iter()
            .find(|t| t["name"] == "Pad")
            .and_then(|t| t["size"][0].as_u64())
            .map_or(96, |s| s as usize);
        v.push(Entry {
            stem,
            path,
            cfg,
            side,
        });
    }
    if let Some(only) = &o.only {
        for s in only {
            if !v.iter().any(|e| &e.stem == s) {
                bail!("--only: no configs/zoo/{s}.toml");
            }
        }
        v.sort_by_key(|e| only.iter().position(|s| s == &e.stem));
    }
    Ok(v)
}

/// Test scores and cost of one run.
#[derive(Serialize, Deserialize, Clone)]
struct RunScores {
    stem: String,
    network: String,
    seed: u64,
    iterations: usize,
    /// Mean Dice over the foreground classes, per test subject.
    dice: Vec<f64>,
    /// Mean HD95 (mm) over the foreground classes, per test subject; NaN
    /// (written as `null`) where the network predicted none of a structure.
    #[serde(deserialize_with = "nan_from_null")]
    hd95: Vec<f64>,
    train_s: f64,
}

/// Reads a list of numbers in which `null` stands for NaN (serde_json writes
/// a NaN as `null`), so that a cached run with an undefined HD95 reads back.
fn nan_from_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let v: Vec<Option<f64>> = Deserialize::deserialize(d)?;
    Ok(v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
}

/// Size and speed of one network.
#[derive(Serialize, Deserialize, Clone, Default)]
struct Profile {
    params: usize,
    /// Multiply-adds of one eval forward pass of one crop.
    macs: u64,
    side: usize,
    medseg_train_ms: Option<f64>,
    medseg_infer_ms: Option<f64>,
    medseg_peak_mib: Option<f64>,
    torch_params: Option<usize>,
    torch_train_ms: Option<f64>,
    torch_infer_ms: Option<f64>,
    torch_peak_mib: Option<f64>,
    /// What the PyTorch side built (its reference), or why none.
    torch_reference: Option<String>,
    threads: usize,
    iters: usize,
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    medseg_core::write_atomic(path, serde_json::to_string_pretty(v)?.as_bytes())?;
    Ok(())
}

fn read_json<T: for<'a> Deserialize<'a>>(path: &Path) -> Option<T> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn train_and_test(o: &Options, e: &Entry, seed: u64) -> Result<RunScores> {
    let out = o.runs.join(&e.stem).join(format!("seed{seed}"));
    let mut cfg = e.cfg.clone();
    cfg.training.iterations = o.iterations;
    cfg.training.validate_every = (o.iterations / 6).max(1);
    cfg.training.seed = seed;
    cfg.training.resume = false;
    cfg.training.output_dir = out.clone();
    medseg_cli::ensure_data(&cfg)?;
    let ck = out.join("checkpoints");
    if ck.exists() {
        std::fs::remove_dir_all(&ck).with_context(|| format!("clearing {}", ck.display()))?;
    }
    let t0 = Instant::now();
    let mut trainer = TrainerBuilder::new(cfg.clone())
        .registries(medseg_cli::registries())
        .build()
        .with_context(|| format!("setting up {}", e.stem))?;
    trainer
        .run()
        .with_context(|| format!("training {}", e.stem))?;
    let train_s = t0.elapsed().as_secs_f64();
    let slice_mm = medseg_synth::phantom_config("cardiac2d")?.0.spacing[0];
    let (dice, hd95) = evaluate_with(&cfg, &ck.join("best.safetensors"), slice_mm)?;
    Ok(RunScores {
        stem: e.stem.clone(),
        network: e.name(),
        seed,
        iterations: o.iterations,
        dice: row_means(&dice),
        hd95: row_means(&hd95),
        train_s,
    })
}

/// Parameters and multiply-adds (one crop), then the timed children.
fn profile(o: &Options, root: &Path, e: &Entry, py: Option<&Path>) -> Result<Profile> {
    let net_cfg = network_config(&e.cfg);
    let (_vm, net) = build_net(&net_cfg, &Device::Cpu)?;
    let s = medseg_nets::summarize(net.as_ref(), &[1, 1, e.side, e.side], &Device::Cpu)?;
    let mut p = Profile {
        params: s.total_params,
        macs: s.total_macs,
        side: e.side,
        threads: o.threads,
        iters: o.timing_iters,
        ..Profile::default()
    };
    drop(net);
    if !o.timing {
        return Ok(p);
    }
    let work = o.runs.join(&e.stem).join("timing");
    std::fs::create_dir_all(&work)?;
    let exe = std::env::current_exe()?;
    for mode in ["train", "infer"] {
        let case = Case {
            label: e.name(),
            config: e.path.clone(),
            network: net_cfg.clone(),
            shape: vec![4, 1, e.side, e.side],
            mode: mode.to_string(),
            device: "cpu".into(),
            iters: o.timing_iters,
            warmup: 2,
            threads: o.threads,
            malloc_tuned: true,
        };
        let spec = work.join(format!("{mode}.json"));
        std::fs::write(&spec, serde_json::to_vec_pretty(&case)?)?;
        let mut cmd = Command::new(&exe);
        cmd.args(["bench", "unet-child"]).arg(&spec);
        let time = |c: &ChildOut| c.times.first().map(|t| t.1);
        let mib = |c: &ChildOut| c.vmhwm_kb.map(|k| k as f64 / 1024.0);
        if let Some(c) = run_child(&mut cmd, "medseg")? {
            match mode {
                "train" => p.medseg_train_ms = time(&c),
                _ => p.medseg_infer_ms = time(&c),
            }
            p.medseg_peak_mib = fmax(p.medseg_peak_mib, mib(&c));
        }
        if let Some(py) = py {
            let mut cmd = Command::new(py);
            cmd.arg(root.join("tools/torch_zoo_bench.py"))
                .arg("--spec")
                .arg(&spec);
            let out = cmd.output().context("running tools/torch_zoo_bench.py")?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            for line in text.lines() {
                if let Some(r) = line.strip_prefix("REFERENCE ") {
                    p.torch_reference = Some(r.trim().to_string());
                }
                if let Some(r) = line.strip_prefix("NO_REFERENCE ") {
                    p.torch_reference = Some(format!("none: {}", r.trim()));
                }
            }
            if out.status.success() {
                let c = crate::bench_unet::parse_child(&text, "torch");
                match mode {
                    "train" => p.torch_train_ms = time(&c),
                    _ => p.torch_infer_ms = time(&c),
                }
                p.torch_params = c.params.or(p.torch_params);
                p.torch_peak_mib = fmax(p.torch_peak_mib, mib(&c));
            } else if p.torch_reference.is_none() {
                eprintln!(
                    "notice: the PyTorch side of {} failed:\n{}",
                    e.stem,
                    String::from_utf8_lossy(&out.stderr)
                );
                p.torch_reference = Some("none: the PyTorch run failed".into());
            }
        }
    }
    Ok(p)
}

/// Runs the experiment and writes the report.
pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let root = crate::python::workspace_root();
    let list = entries(&root, &o)?;
    if list.is_empty() {
        bail!("no network in configs/zoo");
    }
    let started = Instant::now();
    let py = if o.python && o.timing && !o.report_only {
        crate::python::ensure_venv(&["torch", "safetensors", "einops", "monai"])?
    } else {
        None
    };
    let mut runs = Vec::new();
    let mut profiles = Vec::new();
    let cache = o.out.join("zoo_cache");
    for e in &list {
        for &seed in &o.seeds {
            let path = cache.join(&e.stem).join(format!("seed{seed}.json"));
            if let Some(s) = read_json::<RunScores>(&path) {
                if s.iterations == o.iterations {
                    runs.push(s);
                    continue;
                }
            }
            if o.report_only {
                continue;
            }
            eprintln!(
                "[{:>6.0} s] {} seed {seed}",
                started.elapsed().as_secs_f64(),
                e.stem
            );
            let s = train_and_test(&o, e, seed)?;
            eprintln!(
                "         {}: Dice {:.3} ({:.0} s)",
                e.stem,
                mean_std(&s.dice).0,
                s.train_s
            );
            write_json(&path, &s)?;
            runs.push(s);
        }
        let path = cache.join(&e.stem).join("profile.json");
        let cached = read_json::<Profile>(&path)
            .filter(|p| !o.retime && (p.medseg_train_ms.is_some() || !o.timing));
        let p = match cached {
            Some(p) => p,
            None if o.report_only => continue,
            None => {
                eprintln!("         timing {}", e.stem);
                let p = profile(&o, &root, e, py.as_deref())?;
                write_json(&path, &p)?;
                p
            }
        };
        profiles.push((e.stem.clone(), e.name(), p));
    }
    report(&o, &runs, &profiles, list.len())
}

/// The larger of two optional values.
fn fmax(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

fn human(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2} G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else {
        format!("{:.1} K", n / 1e3)
    }
}

fn report(
    o: &Options,
    runs: &[RunScores],
    profiles: &[(String, String, Profile)],
    total: usize,
) -> Result<()> {
    std::fs::create_dir_all(&o.out)?;
    let mut csv = String::from("config,network,seed,iterations,dice,hd95_mm,train_s\n");
    for r in runs {
        csv.push_str(&format!(
            "{},{},{},{},{:.4},{:.3},{:.1}\n",
            r.stem,
            r.network,
            r.seed,
            r.iterations,
            mean_std(&r.dice).0,
            mean_std(&r.hd95).0,
            r.train_s
        ));
    }
    medseg_core::write_atomic(&o.out.join("zoo_runs.csv"), csv.as_bytes())?;
    let mut order: Vec<&(String, String, Profile)> = profiles.iter().collect();
    order.sort_by_key(|(_, _, p)| p.params);
    let mut table = String::from(
        "| network | parameters | mult-adds (96x96) | train step medseg (ms) | PyTorch (ms) | ratio | inference medseg (ms) | PyTorch (ms) | ratio | test Dice | HD95 (mm) | seeds |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut csv = String::from("config,network,params,macs,side,medseg_train_ms,torch_train_ms,medseg_infer_ms,torch_infer_ms,medseg_peak_mib,torch_peak_mib,torch_params,dice_mean,dice_std,hd95_mean,seeds,torch_reference\n");
    let mut points = Vec::new();
    let mut refs = String::new();
    for (stem, name, p) in order {
        let rs: Vec<&RunScores> = runs.iter().filter(|r| &r.stem == stem).collect();
        let per_seed: Vec<f64> = rs.iter().map(|r| mean_std(&r.dice).0).collect();
        let hd: Vec<f64> = rs.iter().map(|r| mean_std(&r.hd95).0).collect();
        let (dm, ds, n) = mean_std(&per_seed);
        let (hm, _, _) = mean_std(&hd);
        let dice = if n == 0 {
            "-".to_string()
        } else if n == 1 {
            format!("{dm:.3}")
        } else {
            format!("{dm:.3} ± {ds:.3}")
        };
        let crop = if p.side == 96 {
            String::new()
        } else {
            format!(" ({}x{} padded)", p.side, p.side)
        };
        table.push_str(&format!(
            "| {name} | {} | {}{crop} | {} | {} | {} | {} | {} | {} | {dice} | {} | {n} |\n",
            human(p.params as f64),
            human(p.macs as f64),
            opt(p.medseg_train_ms, 0),
            opt(p.torch_train_ms, 0),
            ratio(p.medseg_train_ms, p.torch_train_ms),
            opt(p.medseg_infer_ms, 1),
            opt(p.torch_infer_ms, 1),
            ratio(p.medseg_infer_ms, p.torch_infer_ms),
            if n == 0 || !hm.is_finite() {
                "-".into()
            } else {
                format!("{hm:.1}")
            },
        ));
        csv.push_str(&format!(
            "{stem},{name},{},{},{},{},{},{},{},{},{},{},{:.4},{:.4},{:.3},{n},\"{}\"\n",
            p.params,
            p.macs,
            p.side,
            opt(p.medseg_train_ms, 2),
            opt(p.torch_train_ms, 2),
            opt(p.medseg_infer_ms, 2),
            opt(p.torch_infer_ms, 2),
            opt(p.medseg_peak_mib, 0),
            opt(p.torch_peak_mib, 0),
            p.torch_params.map_or("-".into(), |v| v.to_string()),
            dm,
            ds,
            hm,
            p.torch_reference.clone().unwrap_or_default()
        ));
        if let Some(r) = &p.torch_reference {
            let check = match p.torch_params {
                Some(t) if t == p.params => " (same parameter count)".to_string(),
                Some(t) => format!(" (parameter count {t}, medseg {})", p.params),
                None => String::new(),
            };
            refs.push_str(&format!("- {name}: {r}{check}\n"));
        }
        if n > 0 {
            points.push(medseg_viz::LabelledPoint {
                label: name.clone(),
                x: p.params as f64,
                y: dm,
                error: (n > 1).then_some(ds),
            });
        }
    }
    medseg_core::write_atomic(&o.out.join("zoo.csv"), csv.as_bytes())?;
    medseg_viz::scatter_chart(
        &o.out.join("zoo_dice_vs_params.png"),
        "Zoo: test Dice against size (cardiac phantom)",
        "trainable parameters (log scale)",
        "mean test Dice",
        &points,
        true,
    )?;
    let seeds: Vec<String> = o.seeds.iter().map(|s| s.to_string()).collect();
    let trained = profiles
        .iter()
        .filter(|(stem, _, _)| runs.iter().any(|r| &r.stem == stem))
        .count();
    let timed = profiles
        .iter()
        .filter(|(_, _, p)| p.medseg_train_ms.is_some())
        .count();
    let coverage = format!(
        "Coverage: {trained} of {total} networks trained and tested, {timed} timed \
         (`-`: not yet run; the cache in `zoo_cache/` lets the experiment go on where it stopped).\n\n"
    );
    let threads = profiles.first().map_or(o.threads, |p| p.2.threads);
    let iters = profiles.first().map_or(o.timing_iters, |p| p.2.iters);
    let text = format!(
        "# Network zoo on the cardiac phantom\n\n\
         Made by `cargo xtask experiment zoo --iterations {} --seeds {}`.\n\n{coverage}\
         Every network of `configs/zoo/` trained with the same budget: the quickstart's recipe \
         (96x96 crops, batch 4, Dice + CE, Adam 2e-3 with poly decay, {} iterations), best \
         validation checkpoint tested on the 8 test subjects (mean Dice and HD95 over the 3 \
         structures, then over subjects; ± is the std over seeds). Parameters are trainable \
         scalars; multiply-adds are those of one eval forward pass of one crop. Times: median \
         of {iters} steps after 2 warm-up, batch 4 crops, {threads} threads, medseg and PyTorch \
         (NCHW, the same network, Dice + CE and Adam) each in a process of its own, on this machine.\n\n\
         {table}\n\
         Per network: `zoo.csv`; per run: `zoo_runs.csv`; chart: `zoo_dice_vs_params.png`.\n\n\
         PyTorch side (`tools/torch_zoo_bench.py`):\n\n{refs}",
        o.iterations,
        seeds.join(","),
        o.iterations,
    );
    let md = o.out.join("zoo.md");
    let md = if md.exists() {
        o.out.join("zoo_generated.md")
    } else {
        md
    };
    medseg_core::write_atomic(&md, text.as_bytes())?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_without_any_hd95_reads_back_from_the_cache() {
        let dir = std::env::temp_dir().join(format!("zoo-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("seed1.json");
        let run = RunScores {
            stem: "setr".into(),
            network: "SETR".into(),
            seed: 1,
            iterations: 300,
            dice: vec![0.06, 0.05],
            hd95: vec![f64::NAN, 4.5],
            train_s: 735.0,
        };
        write_json(&path, &run).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("null"));
        let back: RunScores = read_json(&path).expect("the cached run reads back");
        assert!(back.hd95[0].is_nan());
        assert_eq!(back.hd95[1], 4.5);
        assert_eq!(back.dice, run.dice);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
