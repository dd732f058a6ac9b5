//! A training run killed at any moment leaves a loadable `latest`
//! checkpoint set, and `resume` continues it to the uninterrupted run's
//! result: the same loss curve from the checkpoint on, the same final
//! weights. Kills are real SIGKILLs of the training process at a random
//! moment, and aborts injected between the files of one checkpoint set
//! (`TEST_MEDSEG_ABORT_AFTER_CHECKPOINT_FILE`, test only).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_medseg-supervised");
const ITERATIONS: usize = 30;

fn quickstart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/supervised/quickstart.toml")
}

/// The quickstart, small: 8 phantom subjects, 32 x 32 crops, a narrow UNet
/// (with its dropout), 30 iterations, validation and `latest` every 10.
fn args(data: &Path, out: &Path, resume: bool) -> Vec<String> {
    let mut a = vec!["train".to_string(), quickstart().display().to_string()];
    for s in [
        format!("dataset.root={:?}", data.display().to_string()),
        "dataset.generate.subjects=8".into(),
        "dataset.train_batch_size=2".into(),
        r#"dataset.train_transforms=[{name="NormalizeWithMeanStd"},{name="RandomCrop",size=[32,32]},{name="RandomFlip",axes=[1,2],p=0.5}]"#.into(),
        "network.feature_chns=[4,8,8,16,16]".into(),
        format!("training.iterations={ITERATIONS}"),
        "training.validate_every=10".into(),
        format!("training.output_dir={:?}", out.display().to_string()),
        format!("training.resume={resume}"),
    ] {
        a.push("--set".into());
        a.push(s);
    }
    a
}

fn train(
    data: &Path,
    out: &Path,
    resume: bool,
    abort_after: Option<usize>,
) -> std::process::Output {
    let mut c = Command::new(BIN);
    c.args(args(data, out, resume));
    if let Some(n) = abort_after {
        c.env("TEST_MEDSEG_ABORT_AFTER_CHECKPOINT_FILE", n.to_string());
    }
    c.output().expect("running medseg-supervised")
}

/// (iteration, loss) rows of `train_log.csv`.
fn losses(out: &Path) -> Vec<(usize, f64)> {
    let text = std::fs::read_to_string(out.join("train_log.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect()
}

/// The iteration `latest.json` records.
fn latest_iteration(out: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(out.join("checkpoints/latest.json")).ok()?;
    let v: serde_json_lite::Value = serde_json_lite::parse(&text)?;
    v.iteration
}

/// Just enough JSON reading for `"iteration": N`.
mod serde_json_lite {
    pub struct Value {
        pub iteration: Option<usize>,
    }
    pub fn parse(text: &str) -> Option<Value> {
        let i = text.find("\"iteration\"")?;
        let rest = &text[i + "\"iteration\"".len()..];
        let rest = rest.trim_start().strip_prefix(':')?.trim_start();
        let n: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        Some(Value {
            iteration: n.parse().ok(),
        })
    }
}

fn weights(out: &Path) -> Vec<(String, Vec<f32>)> {
    let t = candle_core::safetensors::load(
        out.join("checkpoints/latest.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut v: Vec<(String, Vec<f32>)> = t
        .into_iter()
        .map(|(k, t)| {
            let x = t
                .to_dtype(candle_core::DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (k, x)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn assert_same_run(reference: &Path, resumed: &Path, what: &str) {
    let (a, b) = (losses(reference), losses(resumed));
    assert_eq!(
        a.iter().map(|r| r.0).collect::<Vec<_>>(),
        b.iter().map(|r| r.0).collect::<Vec<_>>(),
        "{what}: the logged iterations differ (duplicated or missing rows)"
    );
    for ((it, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            (x - y).abs() <= 1e-5 * x.abs().max(1.0),
            "{what}: loss at iteration {it}: {y} vs uninterrupted {x}"
        );
    }
    let (wa, wb) = (weights(reference), weights(resumed));
    assert_eq!(wa.len(), wb.len());
    for ((k, x), (_, y)) in wa.iter().zip(&wb) {
        let d = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(d <= 1e-4, "{what}: final {k} differs by {d}");
    }
    assert_eq!(latest_iteration(resumed), Some(ITERATIONS));
}

#[test]
fn killed_runs_resume_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // the uninterrupted run
    let a = dir.path().join("a");
    let o = train(&data, &a, false, None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(losses(&a).len(), ITERATIONS);

    // resuming with nothing to resume from is an error, not a fresh start
    let none = dir.path().join("none");
    let o = train(&data, &none, true, None);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("no `latest` checkpoint"), "{e}");
    assert!(!none.join("train_log.csv").exists());

    // a real SIGKILL once the first `latest` exists, mid-interval
    let b = dir.path().join("b");
    let mut child = Command::new(BIN)
        .args(args(&data, &b, false))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let logged = std::fs::read_to_string(b.join("train_log.csv"))
            .map(|t| t.lines().count().saturating_sub(1))
            .unwrap_or(0);
        if logged >= 14 || t0.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run ended before the kill");
    {
        let at = latest_iteration(&b).expect("a loadable latest after the kill");
        assert!((10..ITERATIONS).contains(&at), "latest at {at}");
        let o = train(&data, &b, true, None);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_same_run(&a, &b, "SIGKILL");
    }

    // aborts between the files of a checkpoint set. File operations at the
    // first validation (iteration 10): `best` 1-5 (2 staged, the commit
    // record, 2 moves), `latest` 6-12 (3 staged, commit, 3 moves); the
    // second checkpoint's start at 13 or later: every abort below leaves
    // the first `latest` (or the second) whole
    for n in [13, 15, 16, 18, 19, 21, 23] {
        let c = dir.path().join(format!("abort{n}"));
        let o = train(&data, &c, false, Some(n));
        assert!(!o.status.success(), "abort after file {n} did not happen");
        let at = latest_iteration(&c).expect("a loadable latest after the abort");
        assert!(at >= 10, "abort {n}: latest at {at}");
        let o = train(&data, &c, true, None);
        assert!(
            o.status.success(),
            "abort {n}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_same_run(&a, &c, &format!("abort after file {n}"));
        let left: Vec<_> = std::fs::read_dir(c.join("checkpoints"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "abort {n}: left behind {left:?}");
    }
}

/// Two processes training into one folder: the second fails at once,
/// naming the folder and the first's pid, and writes nothing; the first
/// finishes undisturbed.
#[test]
fn a_second_run_into_the_same_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    // generate the data first, so that both runs start training at once
    let o = train(&data, &dir.path().join("warm"), false, None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // the first run is long enough (1200 steps, several seconds) to still
    // hold the folder when the second has started, even on a loaded machine
    // (300 steps were once over before the second process got going)
    let mut first_args = args(&data, &out, false);
    first_args.extend(["--set".to_string(), "training.iterations=1200".to_string()]);
    let mut first = Command::new(BIN)
        .args(first_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !out.join(".medseg.lock").exists() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let second = train(&data, &out, false, None);
    let first_status = first.wait().unwrap();
    assert!(first_status.success());
    assert!(!second.status.success(), "the second run was not refused");
    let e = String::from_utf8_lossy(&second.stderr);
    assert!(e.contains(&format!("pid {}", first.id())), "{e}");
    assert!(e.contains("is writing into this folder"), "{e}");
    // the folder holds the first run, whole
    assert_eq!(losses(&out).len(), 1200);
    assert_eq!(latest_iteration(&out), Some(1200));
    assert!(!out.join(".medseg.lock").exists());
}
