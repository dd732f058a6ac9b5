//! The in-process federation on a tiny phantom federation: determinism,
//! drop-outs, what it writes, the SegViz assembly, and clear errors on bad
//! sites.

use medseg_federated::simulation::{final_model, FederationConfig, SiteModel};
use medseg_federated::{AggregatorRegistry, FedError, Simulation, Weights};

mod common;
use common::write_base;
use ndarray::{arr1, ArrayD};
use std::path::Path;

/// Writes a base config and a federation config under `dir` and loads the
/// latter with `set`.
fn federation(dir: &Path, strategy: &str, extra: &str, set: &[&str]) -> FederationConfig {
    write_base(dir);
    let fed = format!(
        r#"
[federation]
base = "base.toml"
strategy = "{strategy}"
rounds = 3
local_iterations = 2
validate_every = 1
seed = 3
output_dir = "{out}"
{extra}

[[sites]]
name = "liver_site"
train_csv = "liver_site/train.csv"
valid_csv = "liver_site/valid.csv"

[[sites]]
name = "spleen_site"
train_csv = "spleen_site/train.csv"
valid_csv = "spleen_site/valid.csv"
"#,
        out = dir.join("out").display()
    );
    std::fs::write(dir.join("fed.toml"), fed).unwrap();
    let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
    FederationConfig::load(&dir.join("fed.toml"), &set).unwrap()
}

fn simulation(cfg: &FederationConfig, site_set: &[String]) -> Result<Simulation, FedError> {
    let cwd = std::env::current_dir().unwrap();
    let site_cfgs = (0..cfg.sites.len())
        .map(|k| cfg.site_config(k, site_set, &cwd))
        .collect::<Result<Vec<_>, _>>()?;
    Simulation::new(
        cfg,
        site_cfgs,
        &medseg_learners::Registries::with_builtins,
        &AggregatorRegistry::with_builtins(),
    )
}

#[test]
fn a_federation_is_deterministic_and_writes_its_logs_and_model() {
    let run = |dir: &Path| {
        let cfg = federation(dir, "FedAvg", "", &[]);
        let mut sim = simulation(&cfg, &[]).unwrap();
        let initial = sim.global().clone();
        let s = sim.run().unwrap();
        (
            initial,
            s,
            Weights::load(&dir.join("out/global.safetensors")).unwrap(),
        )
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (init, summary, global_a) = run(a.path());
    let (_, _, global_b) = run(b.path());
    assert_eq!(global_a, global_b, "same config and seed, other weights");
    assert_ne!(global_a, init, "training changed nothing");
    // the log: a header and one row per round, both sites validated
    let csv = std::fs::read_to_string(&summary.log_csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].contains("valid_dice_liver_site") && lines[0].contains("loss_spleen_site"));
    assert!(
        lines[1].starts_with("1,liver_site;spleen_site,,"),
        "{}",
        lines[1]
    );
    assert!(summary.curves.is_file());
    assert_eq!(summary.last_valid.len(), 2);
    // the model is a medseg-nets checkpoint of the global weights
    let (vm, _net) = medseg_nets::load_network(&summary.model, &candle_core::Device::Cpu).unwrap();
    assert_eq!(Weights::from_varmap(&vm).unwrap(), global_a);
}

#[test]
fn dropped_sites_leave_the_round_to_the_others() {
    let dir = tempfile::tempdir().unwrap();
    // with half the sites asked each round, each round trains one site
    let cfg = federation(
        dir.path(),
        "FedAvg",
        "fraction = 0.5\ndropout = 0.5",
        &["federation.rounds=6"],
    );
    let mut sim = simulation(&cfg, &[]).unwrap();
    let s = sim.run().unwrap();
    let csv = std::fs::read_to_string(&s.log_csv).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 6);
    for r in &rows {
        // one site asked per round: it answered or dropped
        assert_eq!(r[1].is_empty(), !r[2].is_empty(), "{r:?}");
        assert!(!r[1].contains(';') && !r[2].contains(';'), "{r:?}");
    }
    assert!(
        rows.iter().any(|r| r[2].is_empty()),
        "no round answered: {csv}"
    );
    assert!(
        rows.iter().any(|r| !r[2].is_empty()),
        "no drop-out in 6 rounds: {csv}"
    );
    // a site that trained has a loss in its round, a dropped one none
    for r in &rows {
        let trained = r[1];
        for (site, col) in [("liver_site", 4), ("spleen_site", 6)] {
            assert_eq!(trained == site, !r[col].is_empty(), "{r:?}");
        }
    }
    assert!(s.model.is_file());
}

#[test]
fn fedprox_trains_with_its_proximal_term_and_fedbn_exports_averaged_norms() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = federation(dir.path(), "FedProx", "strategy_params = { mu = 0.5 }", &[]);
    let mut sim = simulation(&cfg, &[]).unwrap();
    assert!(sim.run().is_ok());
    let dir = tempfile::tempdir().unwrap();
    let cfg = federation(dir.path(), "FedBN", "", &[]);
    let mut sim = simulation(&cfg, &[]).unwrap();
    let s = sim.run().unwrap();
    assert!(s.export_note.contains("averaged"), "{}", s.export_note);
    let site = |n: &str| {
        let p = dir
            .path()
            .join("out/sites")
            .join(n)
            .join("model.safetensors");
        let (vm, _) = medseg_nets::load_network(&p, &candle_core::Device::Cpu).unwrap();
        Weights::from_varmap(&vm).unwrap()
    };
    let (a, b) = (site("liver_site"), site("spleen_site"));
    let (vm, _) = medseg_nets::load_network(&s.model, &candle_core::Device::Cpu).unwrap();
    let m = Weights::from_varmap(&vm).unwrap();
    let key = "encoder.in_conv.conv_conv.1.running_mean";
    assert_ne!(a.get(key), b.get(key), "batch norms stayed shared");
    // equal example counts: the exported norm is the plain mean
    let mean = (a.get(key).unwrap() + b.get(key).unwrap()).mapv(|v| v / 2.0);
    for (x, y) in m.get(key).unwrap().iter().zip(mean.iter()) {
        assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    }
    // shared arrays are the global ones at every site
    let conv = "encoder.in_conv.conv_conv.0.weight";
    assert_eq!(a.get(conv), m.get(conv));
    assert_eq!(b.get(conv), m.get(conv));
}

#[test]
fn segviz_assembles_each_organ_from_the_site_that_outlined_it() {
    // a 1 x 1 head with 3 classes over 2 features
    let head = |w: [[f32; 2]; 3], b: [f32; 3]| {
        let mut x = Weights::new();
        let wa: Vec<f32> = w.iter().flatten().copied().collect();
        x.insert(
            "out_conv.weight",
            ArrayD::from_shape_vec(vec![3, 2, 1, 1], wa).unwrap(),
        );
        x.insert("out_conv.bias", arr1(&b).into_dyn());
        x.insert("body.weight", ArrayD::from_elem(vec![2, 2, 1, 1], 0.5f32));
        x
    };
    let global = head([[0.0; 2]; 3], [0.0; 3]);
    let sites = vec![
        SiteModel {
            name: "a".into(),
            weights: head([[1.0, 2.0], [4.0, 1.0], [9.0, 9.0]], [0.5, 1.5, 7.0]),
            organs: vec![1],
            examples: 10,
        },
        SiteModel {
            name: "b".into(),
            weights: head([[0.0, 1.0], [8.0, 8.0], [2.0, 5.0]], [1.0, 3.0, 0.0]),
            organs: vec![2],
            examples: 30,
        },
    ];
    let local = |k: &str| k.starts_with("out_conv");
    let (m, note) = final_model(&global, &sites, 3, &local).unwrap();
    assert!(note.contains("assembled"), "{note}");
    let w = m.get("out_conv.weight").unwrap();
    let w: Vec<f32> = w.iter().copied().collect();
    // background row 0; class 1 = a's row 1 - row 0; class 2 = b's row 2 - row 0
    assert_eq!(w, vec![0.0, 0.0, 3.0, -1.0, 2.0, 4.0]);
    let b: Vec<f32> = m.get("out_conv.bias").unwrap().iter().copied().collect();
    assert_eq!(b, vec![0.0, 1.0, -1.0]);
    assert_eq!(m.get("body.weight"), global.get("body.weight"));
    // a class no site outlined is never predicted
    let (m, _) = final_model(&global, &sites[..1], 3, &local).unwrap();
    assert_eq!(m.get("out_conv.bias").unwrap()[[2]], -30.0);
}

#[test]
fn segviz_runs_and_its_site_heads_stay_local() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = federation(dir.path(), "SegViz", "", &[]);
    let mut sim = simulation(&cfg, &[]).unwrap();
    let s = sim.run().unwrap();
    assert!(s.export_note.contains("assembled"), "{}", s.export_note);
    let load = |p: &Path| {
        let (vm, _) = medseg_nets::load_network(p, &candle_core::Device::Cpu).unwrap();
        Weights::from_varmap(&vm).unwrap()
    };
    let a = load(&dir.path().join("out/sites/liver_site/model.safetensors"));
    let b = load(&dir.path().join("out/sites/spleen_site/model.safetensors"));
    let head = "decoder.out_conv.weight";
    assert_ne!(a.get(head), b.get(head));
    let body = "decoder.up1.conv.conv_conv.0.weight";
    assert_eq!(a.get(body), b.get(body));
}

#[test]
fn bad_sites_get_errors_naming_the_site_and_the_key() {
    // a site whose network has other widths
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = federation(dir.path(), "FedAvg", "", &[]);
    cfg.sites[1]
        .set
        .push("network.feature_chns=[4, 8, 8, 16, 32]".into());
    let e = simulation(&cfg, &[]).err().unwrap().to_string();
    assert!(e.contains("spleen_site") && e.contains("shape"), "{e}");

    // a site manifest without annotated_classes
    let data = dir.path().join("data");
    let csv = data.join("liver_site/train.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let col = header
        .iter()
        .position(|h| *h == "annotated_classes")
        .unwrap();
    let no_classes: String = text
        .lines()
        .map(|l| {
            l.split(',')
                .enumerate()
                .filter(|(i, _)| *i != col)
                .map(|(_, c)| c)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&csv, &no_classes).unwrap();
    let cfg = federation(dir.path(), "FedAvg", "", &[]);
    let e = simulation(&cfg, &[]).err().unwrap().to_string();
    assert!(
        e.contains("liver_site") && e.contains("annotated_classes") && e.contains("train.csv"),
        "{e}"
    );
    // ... which a federation of fully labelled sites does not need
    let cfg = federation(
        dir.path(),
        "FedAvg",
        "",
        &["federation.partial_labels=false"],
    );
    assert!(simulation(&cfg, &[]).is_ok());

    // a class named twice in a row
    let twice: String = text
        .lines()
        .enumerate()
        .map(|(row, l)| {
            l.split(',')
                .enumerate()
                .map(|(i, c)| match (row, i == col) {
                    (1.., true) => format!("{c};1"),
                    _ => c.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&csv, &twice).unwrap();
    let cfg = federation(dir.path(), "FedAvg", "", &[]);
    let e = simulation(&cfg, &[]).err().unwrap().to_string();
    assert!(
        e.contains("liver_site") && e.contains("annotated_classes") && e.contains("twice"),
        "{e}"
    );
    std::fs::write(&csv, &text).unwrap();

    // SegViz needs one site per organ
    let mut cfg = federation(dir.path(), "SegViz", "", &[]);
    cfg.sites[1].train_csv = "liver_site/train.csv".into();
    let e = simulation(&cfg, &[]).err().unwrap().to_string();
    assert!(
        e.contains("spleen_site") && e.contains("liver_site") && e.contains("class 1"),
        "{e}"
    );
}

#[test]
fn federation_files_reject_unknown_keys_and_bad_values() {
    let dir = tempfile::tempdir().unwrap();
    federation(dir.path(), "FedAvg", "", &[]);
    let p = dir.path().join("fed.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replace("rounds = 3", "rounds = 3\nrouns = 4")).unwrap();
    let e = FederationConfig::load(&p, &[]).unwrap_err().to_string();
    assert!(e.contains("rouns") && e.contains("fed.toml"), "{e}");
    std::fs::write(&p, &text).unwrap();
    for (set, key) in [
        ("federation.rounds=0", "federation.rounds"),
        ("federation.dropout=1.5", "federation.dropout"),
        ("federation.fraction=0", "federation.fraction"),
        ("training.lr=0.1", "federation.*"),
    ] {
        let e = FederationConfig::load(&p, &[set.to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{set}: {e}");
    }
    std::fs::write(
        &p,
        text.replace("name = \"spleen_site\"", "name = \"liver_site\""),
    )
    .unwrap();
    let e = FederationConfig::load(&p, &[]).unwrap_err().to_string();
    assert!(e.contains("liver_site") && e.contains("twice"), "{e}");
    // an unknown strategy
    std::fs::write(&p, text.replace("\"FedAvg\"", "\"FedAverage\"")).unwrap();
    let cfg = FederationConfig::load(&p, &[]).unwrap();
    let e = simulation(&cfg, &[]).err().unwrap().to_string();
    assert!(e.contains("FedAverage") && e.contains("FedAvg"), "{e}");
}

#[test]
fn one_site_with_a_kept_optimiser_trains_as_the_site_alone() {
    // FedAvg of one site that keeps its optimiser is plain training: the
    // same steps, data order and Adam state as a central run of that site
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = federation(dir.path(), "FedAvg", "keep_optimizer = true", &[]);
    cfg.sites.truncate(1);
    let cwd = std::env::current_dir().unwrap();
    let site_cfg = cfg.site_config(0, &[], &cwd).unwrap();
    let mut central_cfg = site_cfg.clone();
    central_cfg.training.output_dir = dir.path().join("central");
    central_cfg.training.validate_every = 0;
    let mut sim = simulation(&cfg, &[]).unwrap();
    sim.run().unwrap();
    let mut trainer = medseg_learners::TrainerBuilder::new(central_cfg)
        .progress(false)
        .build()
        .unwrap();
    assert_eq!(trainer.run().unwrap().iterations, 6);
    let central = Weights::from_varmap(trainer.varmap()).unwrap();
    let fed = Weights::load(&dir.path().join("out/global.safetensors")).unwrap();
    assert_eq!(central.len(), fed.len());
    for (k, a) in central.iter() {
        let b = fed.get(k).unwrap();
        let d = a
            .iter()
            .zip(b.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(d < 1e-6, "{k}: differs by {d}");
    }
    // with a fresh optimiser each round, Adam restarts: other weights
    let dir2 = tempfile::tempdir().unwrap();
    let mut cfg = federation(dir2.path(), "FedAvg", "", &[]);
    cfg.sites.truncate(1);
    simulation(&cfg, &[]).unwrap().run().unwrap();
    let fresh = Weights::load(&dir2.path().join("out/global.safetensors")).unwrap();
    assert_ne!(fresh, fed);
}

/// Fine-tuning after the rounds: `local` moves only the local arrays
/// (SegViz's heads) and leaves every shared array at the global weights;
/// `all` moves the shared arrays too, differently at each site; a strategy
/// without local arrays refuses `local`.
#[test]
fn finetuning_moves_the_local_arrays_or_every_array() {
    let load = |p: &Path| {
        let (vm, _) = medseg_nets::load_network(p, &candle_core::Device::Cpu).unwrap();
        Weights::from_varmap(&vm).unwrap()
    };
    let head = "decoder.out_conv.weight";
    let body = "decoder.up1.conv.conv_conv.0.weight";
    // the same federation without fine-tuning, for reference
    let dir0 = tempfile::tempdir().unwrap();
    let cfg0 = federation(dir0.path(), "SegViz", "", &[]);
    let s0 = simulation(&cfg0, &[]).unwrap().run().unwrap();
    let global0 = Weights::load(&s0.global).unwrap();
    let a0 = load(&dir0.path().join("out/sites/liver_site/model.safetensors"));

    let dir = tempfile::tempdir().unwrap();
    let cfg = federation(
        dir.path(),
        "SegViz",
        "finetune_iterations = 3\nfinetune_scope = \"local\"",
        &[],
    );
    let s = simulation(&cfg, &[]).unwrap().run().unwrap();
    let global = Weights::load(&s.global).unwrap();
    let a = load(&dir.path().join("out/sites/liver_site/model.safetensors"));
    let b = load(&dir.path().join("out/sites/spleen_site/model.safetensors"));
    assert_eq!(a.get(body), global.get(body), "a shared array moved");
    assert_eq!(b.get(body), global.get(body), "a shared array moved");
    // the base config's rate is constant, so the rounds are those of the
    // run without fine-tuning and the head's change is the fine-tuning's
    assert_eq!(global.get(body), global0.get(body));
    assert_ne!(a.get(head), a0.get(head), "the head did not move");

    let dir = tempfile::tempdir().unwrap();
    let cfg = federation(
        dir.path(),
        "FedAvg",
        "finetune_iterations = 2\nfinetune_scope = \"all\"",
        &[],
    );
    let s = simulation(&cfg, &[]).unwrap().run().unwrap();
    let global = Weights::load(&s.global).unwrap();
    let a = load(&dir.path().join("out/sites/liver_site/model.safetensors"));
    let b = load(&dir.path().join("out/sites/spleen_site/model.safetensors"));
    assert_ne!(a.get(body), global.get(body));
    assert_ne!(a.get(body), b.get(body));

    let dir = tempfile::tempdir().unwrap();
    let cfg = federation(dir.path(), "FedAvg", "finetune_iterations = 2", &[]);
    let e = simulation(&cfg, &[])
        .unwrap()
        .run()
        .unwrap_err()
        .to_string();
    assert!(e.contains("finetune_scope"), "{e}");
    assert!(e.contains("FedAvg"), "{e}");
}
