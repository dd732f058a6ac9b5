//! `cargo xtask experiment selfsup`: the SAS framework on the cardiac
//! phantom with 10% labels. Arms (every one trained on
//! `train_labelled.csv` with the same budget and seed):
//! `scratch` (crop and flip only), `aug` (+ the strong augmentation of
//! `configs/selfsup/sas.toml`), `stn` (+ an STN), `moco` / `simclr` /
//! `genesis` (from an encoder pre-trained on `train_unlabelled.csv` by
//! `configs/selfsup/<method>.toml`), `sas` (strong augmentation + STN +
//! MoCo encoder). Each run's best checkpoint is tested on `test.csv` and on
//! a "photographed" copy of it made by `medseg-data photograph`
//! (ScreenPhoto preset, `--severity`). Writes `docs/results/selfsup.md`,
//! `selfsup_runs.csv`, `selfsup_dice.png` and `selfsup_overlays.png` (an
//! existing `selfsup.md` is kept: the table then goes to
//! `selfsup_generated.md`).
//!
//! Options: `--iterations N` (fine-tuning, default 600), `--pretrain-iterations N`
//! (default 300), `--seeds 1,2,3`, `--arms a,b` (default all), `--severity S`
//! (default 0.5), `--runs DIR` (default runs/experiment_selfsup),
//! `--out DIR` (default docs/results), `--report-only`.

use crate::experiment::{evaluate_with, mean_std, row_means};
use anyhow::{bail, Context, Result};
use medseg_config::ExperimentConfig;
use medseg_learners::selfsup::Pretrainer;
use medseg_learners::TrainerBuilder;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The arms, in report order.
const ARMS: [&str; 7] = ["scratch", "aug", "stn", "moco", "simclr", "genesis", "sas"];

struct Options {
    iterations: usize,
    pretrain_iterations: usize,
    seeds: Vec<u64>,
    arms: Vec<String>,
    severity: f64,
    runs: PathBuf,
    out: PathBuf,
    report_only: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        iterations: 600,
        pretrain_iterations: 300,
        seeds: vec![1],
        arms: ARMS.iter().map(|s| s.to_string()).collect(),
        severity: 0.5,
        runs: PathBuf::from("runs/experiment_selfsup"),
        out: PathBuf::from("docs/results"),
        report_only: false,
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
            "--pretrain-iterations" => {
                o.pretrain_iterations = val()?.parse().context("--pretrain-iterations")?
            }
            "--seeds" => {
                o.seeds = val()?
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<u64>()
                            .with_context(|| format!("--seeds: {s}"))
                    })
                    .collect::<Result<_>>()?
            }
            "--arms" => {
                o.arms = val()?.split(',').map(str::to_string).collect();
                if let Some(bad) = o.arms.iter().find(|a| !ARMS.contains(&a.as_str())) {
                    bail!("--arms: unknown arm `{bad}` (arms: {})", ARMS.join(", "));
                }
            }
            "--severity" => o.severity = val()?.parse().context("--severity")?,
            "--runs" => o.runs = PathBuf::from(val()?),
            "--out" => o.out = PathBuf::from(val()?),
            "--report-only" => o.report_only = true,
            other => bail!("unknown option {other}"),
        }
    }
    if o.iterations == 0 || o.pretrain_iterations == 0 || o.seeds.is_empty() {
        bail!("--iterations, --pretrain-iterations and --seeds must be non-empty/positive");
    }
    Ok(o)
}

/// Test scores of one run.
#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct RunScores {
    arm: String,
    seed: u64,
    /// Mean Dice over classes, per test subject: clean test split.
    clean: Vec<f64>,
    /// The same on the photographed copy.
    photo: Vec<f64>,
    train_s: f64,
}

impl RunScores {
    fn clean_mean(&self) -> f64 {
        mean_std(&self.clean).0
    }
    fn photo_mean(&self) -> f64 {
        mean_std(&self.photo).0
    }
}

fn load(root: &Path, name: &str) -> Result<ExperimentConfig> {
    let p = root.join("configs/selfsup").join(name);
    let mut cfg =
        ExperimentConfig::load(&p, &[]).with_context(|| format!("loading {}", p.display()))?;
    cfg.resolve_paths(root);
    Ok(cfg)
}

/// The fine-tuning config of `arm` for `seed`, writing to `out`.
fn arm_config(
    root: &Path,
    o: &Options,
    arm: &str,
    seed: u64,
    out: &Path,
) -> Result<ExperimentConfig> {
    let mut cfg = load(root, "sas.toml")?;
    cfg.pretrain = None;
    cfg.training.iterations = o.iterations;
    cfg.training.validate_every = (o.iterations / 6).max(1);
    cfg.training.seed = seed;
    cfg.training.resume = false;
    cfg.training.output_dir = out.to_path_buf();
    let strong = matches!(arm, "aug" | "sas");
    let stn = matches!(arm, "stn" | "sas");
    if !strong {
        // normalisation, crop and flip: the first three of sas.toml's list
        cfg.dataset.train_transforms.truncate(3);
    }
    if let Some(n) = cfg.network.as_object_mut() {
        n.remove("pretrained");
        n.remove("freeze_encoder");
        if !stn {
            n.remove("stn");
        }
    }
    Ok(cfg)
}

/// Pre-trains `method` (config `configs/selfsup/<file>`) for `seed` into
/// `dir`, returning the encoder path (reused when it exists).
fn pretrain(root: &Path, o: &Options, file: &str, seed: u64, dir: &Path) -> Result<PathBuf> {
    let enc = dir.join("pretrain/encoder.safetensors");
    if enc.exists() {
        return Ok(enc);
    }
    let mut cfg = load(root, file)?;
    cfg.training.seed = seed;
    cfg.training.output_dir = dir.to_path_buf();
    if let Some(p) = cfg.pretrain.as_mut() {
        p.iterations = o.pretrain_iterations;
        p.output = None;
    }
    medseg_cli::ensure_data(&cfg)?;
    let r = medseg_cli::registries();
    let s = Pretrainer::new(cfg)
        .networks(r.networks)
        .transforms(r.transforms)
        .run()
        .with_context(|| format!("pre-training {file} seed {seed}"))?;
    eprintln!(
        "         pre-trained {} seed {seed}: loss {:.3} -> {:.3}",
        s.method, s.first_loss, s.final_loss
    );
    Ok(s.encoder_path)
}

/// The photographed copy of the test split (made once per severity).
fn photographed(root: &Path, o: &Options, clean: &ExperimentConfig) -> Result<PathBuf> {
    let dir = o.runs.join(format!("test_photo_s{}", o.severity));
    let test = clean.dataset.test_csv.clone().context("dataset.test_csv")?;
    if dir
        .join(test.file_name().context("test csv name")?)
        .exists()
    {
        return Ok(dir);
    }
    let manifest = medseg_learners::manifest_path(clean, &test);
    let st = std::process::Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "run",
            "--release",
            "-q",
            "-p",
            "medseg-data",
            "--",
            "photograph",
        ])
        .arg("--manifest")
        .arg(&manifest)
        .arg("--out")
        .arg(&dir)
        .args([
            "--severity",
            &o.severity.to_string(),
            "--seed",
            "7",
            "--force",
        ])
        .status()
        .context("running medseg-data photograph")?;
    if !st.success() {
        bail!("medseg-data photograph failed");
    }
    Ok(dir)
}

fn run_one(root: &Path, o: &Options, arm: &str, seed: u64, photo: &Path) -> Result<RunScores> {
    let out = o.runs.join(arm).join(format!("seed{seed}"));
    let mut cfg = arm_config(root, o, arm, seed, &out)?;
    medseg_cli::ensure_data(&cfg)?;
    let t0 = Instant::now();
    let pre = match arm {
        "moco" | "sas" => Some(("moco.toml", "pre_moco")),
        "simclr" => Some(("simclr.toml", "pre_simclr")),
        "genesis" => Some(("genesis.toml", "pre_genesis")),
        _ => None,
    };
    if let Some((file, key)) = pre {
        let enc = pretrain(
            root,
            o,
            file,
            seed,
            &o.runs.join(key).join(format!("seed{seed}")),
        )?;
        cfg.network["pretrained"] = serde_json::json!(enc.display().to_string());
    }
    let ck = out.join("checkpoints");
    if ck.exists() {
        std::fs::remove_dir_all(&ck).with_context(|| format!("clearing {}", ck.display()))?;
    }
    let mut trainer = TrainerBuilder::new(cfg.clone())
        .registries(medseg_cli::registries())
        .build()
        .with_context(|| format!("setting up {arm}"))?;
    trainer.run().with_context(|| format!("training {arm}"))?;
    let train_s = t0.elapsed().as_secs_f64();
    let best = ck.join("best.safetensors");
    let slice_mm = medseg_synth::phantom_config("cardiac2d")?.0.spacing[0];
    let (clean, _) = evaluate_with(&cfg, &best, slice_mm)?;
    let mut pcfg = cfg.clone();
    let test = cfg.dataset.test_csv.clone().context("dataset.test_csv")?;
    pcfg.dataset.root = photo.to_path_buf();
    pcfg.dataset.test_csv = Some(PathBuf::from(test.file_name().context("test csv name")?));
    let (ph, _) = evaluate_with(&pcfg, &best, slice_mm)?;
    Ok(RunScores {
        arm: arm.to_string(),
        seed,
        clean: row_means(&clean),
        photo: row_means(&ph),
        train_s,
    })
}

/// Runs the experiment and writes the report.
pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let root = std::env::current_dir().context("reading the current directory")?;
    let mut results = Vec::new();
    let started = Instant::now();
    let photo = if o.report_only {
        PathBuf::new()
    } else {
        let probe = arm_config(&root, &o, "scratch", 1, &o.runs.join("probe"))?;
        medseg_cli::ensure_data(&probe)?;
        photographed(&root, &o, &probe)?
    };
    for &seed in &o.seeds {
        for arm in &o.arms {
            let path = o
                .runs
                .join(arm)
                .join(format!("seed{seed}"))
                .join("scores.json");
            if o.report_only || path.exists() {
                if let Ok(t) = std::fs::read_to_string(&path) {
                    results.push(serde_json::from_str::<RunScores>(&t)?);
                }
                continue;
            }
            eprintln!(
                "[{:>6.0} s] {arm} seed {seed}",
                started.elapsed().as_secs_f64()
            );
            let s = run_one(&root, &o, arm, seed, &photo)?;
            eprintln!(
                "         {arm} seed {seed}: clean {:.3}, photographed {:.3} ({:.0} s)",
                s.clean_mean(),
                s.photo_mean(),
                s.train_s
            );
            medseg_core::write_atomic(&path, serde_json::to_string_pretty(&s)?.as_bytes())?;
            results.push(s);
        }
    }
    if results.is_empty() {
        bail!("no finished run to report");
    }
    report(&o, &results)?;
    montage_predictions(&root, &o)
}

/// `selfsup_overlays.png`: one test slice showing every structure, clean
/// (top row) and photographed (bottom row): ground truth, then the
/// predictions of `scratch`, `aug` and `sas` (seed 1 checkpoints).
fn montage_predictions(root: &Path, o: &Options) -> Result<()> {
    use crate::experiment_overlay::{image_plane, plane, predict, slice_with_all_structures, tile};
    use medseg_io::{Dataset, LabelledDataset};
    use rand::SeedableRng;
    let cfg = arm_config(root, o, "scratch", 1, &o.runs.join("probe"))?;
    let test = cfg.dataset.test_csv.clone().context("dataset.test_csv")?;
    let clean = slice_with_all_structures(&cfg, &test)?;
    let mut pcfg = cfg.clone();
    pcfg.dataset.root = o.runs.join(format!("test_photo_s{}", o.severity));
    pcfg.dataset.test_csv = Some(PathBuf::from(test.file_name().context("test csv name")?));
    let pds = LabelledDataset::new(medseg_learners::read_manifest(
        &pcfg,
        pcfg.dataset.test_csv.as_ref().expect("set above"),
    )?)?;
    let photo = (0..pds.len())
        .filter_map(|i| pds.get(i).ok())
        .find(|s| s.name == clean.name)
        .with_context(|| format!("{} not in the photographed copy", clean.name))?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let pipe = medseg_learners::test_pipeline(&cfg)?;
    let mut tiles = Vec::new();
    for s in [clean, photo] {
        let img = image_plane(&s);
        tiles.push(tile(
            &img,
            Some(&plane(&s.label.as_ref().context("label")?.data, false)),
        ));
        let t = pipe.apply_in(s.clone(), &mut rng, medseg_transforms::Mode::Inference)?;
        for arm in ["scratch", "aug", "sas"] {
            let ck = o.runs.join(arm).join("seed1/checkpoints/best.safetensors");
            tiles.push(tile(&img, Some(&predict(&cfg, &ck, &t)?)));
        }
    }
    let path = o.out.join("selfsup_overlays.png");
    medseg_viz::save_png(&path, &medseg_viz::montage(&tiles, 4, 4))?;
    eprintln!(
        "wrote {} (rows: clean, photographed; columns: truth, scratch, aug, sas)",
        path.display()
    );
    Ok(())
}

fn report(o: &Options, results: &[RunScores]) -> Result<()> {
    std::fs::create_dir_all(&o.out)?;
    let mut seeds: Vec<u64> = results.iter().map(|r| r.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let get = |arm: &str, seed: u64| results.iter().find(|r| r.arm == arm && r.seed == seed);
    let mut csv = String::from("arm,seed,clean_dice,photo_dice,train_s\n");
    for r in results {
        csv.push_str(&format!(
            "{},{},{:.4},{:.4},{:.1}\n",
            r.arm,
            r.seed,
            r.clean_mean(),
            r.photo_mean(),
            r.train_s
        ));
    }
    medseg_core::write_atomic(&o.out.join("selfsup_runs.csv"), csv.as_bytes())?;
    let mut md = String::from("| arm | seeds | clean test Dice | photographed test Dice | photographed vs scratch (paired) | wins on photographed | clean vs scratch (paired) |\n|---|---|---|---|---|---|---|\n");
    let mut cats = Vec::new();
    let (mut cm, mut cs, mut pm, mut ps) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for arm in ARMS {
        let rs: Vec<&RunScores> = results.iter().filter(|r| r.arm == arm).collect();
        if rs.is_empty() {
            continue;
        }
        let c: Vec<f64> = rs.iter().map(|r| r.clean_mean()).collect();
        let p: Vec<f64> = rs.iter().map(|r| r.photo_mean()).collect();
        let (dp, dc): (Vec<f64>, Vec<f64>) = rs
            .iter()
            .filter_map(|r| {
                get("scratch", r.seed).map(|s| {
                    (
                        r.photo_mean() - s.photo_mean(),
                        r.clean_mean() - s.clean_mean(),
                    )
                })
            })
            .unzip();
        let wins = dp.iter().filter(|d| **d > 0.0).count();
        let (c_m, c_s, _) = mean_std(&c);
        let (p_m, p_s, _) = mean_std(&p);
        let (dp_m, dp_s, _) = mean_std(&dp);
        let (dc_m, dc_s, _) = mean_std(&dc);
        let paired = |m: f64, s: f64| {
            if arm == "scratch" {
                "-".to_string()
            } else {
                format!("{m:+.3} ± {s:.3}")
            }
        };
        md.push_str(&format!(
            "| {arm} | {} | {c_m:.3} ± {c_s:.3} | {p_m:.3} ± {p_s:.3} | {} | {} | {} |\n",
            rs.iter()
                .map(|r| r.seed.to_string())
                .collect::<Vec<_>>()
                .join(","),
            paired(dp_m, dp_s),
            if arm == "scratch" {
                "-".into()
            } else {
                format!("{wins} of {}", dp.len())
            },
            paired(dc_m, dc_s),
        ));
        cats.push(arm.to_string());
        cm.push(c_m);
        cs.push(c_s);
        pm.push(p_m);
        ps.push(p_s);
    }
    medseg_viz::bar_chart(
        &o.out.join("selfsup_dice.png"),
        "Test Dice, 10% labelled: clean vs photographed test split",
        "mean Dice",
        &cats,
        &[
            ("clean".into(), cm, Some(cs)),
            ("photographed".into(), pm, Some(ps)),
        ],
    )?;
    let text = format!(
        "# Self-supervised pre-training and SAS on the cardiac phantom\n\n\
         Made by `cargo xtask experiment selfsup --iterations {} --pretrain-iterations {} --seeds {} --severity {}`.\n\n\
         Mean test Dice (over the 8 test subjects and the 3 classes) per arm, mean ± std over seeds; \
         paired differences are against `scratch` with the same seed.\n\n{md}\n\
         Per run: `selfsup_runs.csv`; chart: `selfsup_dice.png`.\n",
        o.iterations,
        o.pretrain_iterations,
        seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(","),
        o.severity
    );
    // the committed report carries hand-written commentary: a regenerated
    // table goes beside it instead of over it
    let md_path = o.out.join("selfsup.md");
    let md_path = if md_path.exists() {
        o.out.join("selfsup_generated.md")
    } else {
        md_path
    };
    medseg_core::write_atomic(&md_path, text.as_bytes())?;
    println!("{text}");
    Ok(())
}
