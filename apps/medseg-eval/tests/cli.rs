//! End-to-end runs of the medseg-eval binary on small label files.

use medseg_core::{Geometry, LabelMap};
use ndarray::{s, Array3, ArrayD};
use std::path::Path;
use std::process::Command;

fn write(path: &Path, data: Array3<u16>, spacing: [f64; 3]) {
    let d = data.insert_axis(ndarray::Axis(0)).into_dyn();
    let l = LabelMap::new(d, Geometry::with_spacing(spacing)).unwrap();
    medseg_io::write_label(path, &l).unwrap();
}

fn cube(shape: (usize, usize, usize), lo: usize, hi: usize, label: u16) -> Array3<u16> {
    let mut a = Array3::<u16>::zeros(shape);
    a.slice_mut(s![lo..hi, lo..hi, lo..hi]).fill(label);
    a
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_medseg-eval"))
        .args(args)
        .output()
        .unwrap()
}

fn read_csv(path: &Path) -> Vec<Vec<String>> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .unwrap();
    r.records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

#[test]
fn folders_give_pymic_layout_with_mean_and_std() {
    let dir = tempfile::tempdir().unwrap();
    let (gt, pred, out) = (
        dir.path().join("gt"),
        dir.path().join("pred"),
        dir.path().join("out"),
    );
    std::fs::create_dir_all(&gt).unwrap();
    std::fs::create_dir_all(&pred).unwrap();
    let sp = [2.0, 1.0, 1.0];
    // case a: identical cubes (Dice 1); case b: prediction 4^3 inside a 6^3 cube
    write(&gt.join("a.nii.gz"), cube((8, 8, 8), 1, 7, 1), sp);
    write(&pred.join("a.nii.gz"), cube((8, 8, 8), 1, 7, 1), sp);
    write(&gt.join("b.nii.gz"), cube((8, 8, 8), 1, 7, 1), sp);
    write(&pred.join("b.nii.gz"), cube((8, 8, 8), 2, 6, 1), sp);
    let o = run(&[
        "--gt-dir",
        gt.to_str().unwrap(),
        "--pred-dir",
        pred.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--labels",
        "1",
        "--metrics",
        "dice,hd95,assd",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = read_csv(&out.join("eval_dice.csv"));
    assert_eq!(rows[0], vec!["image", "1"]);
    assert_eq!(rows[1][0], "a.nii.gz");
    assert_eq!(rows[1][1].parse::<f64>().unwrap(), 1.0);
    let dice_b = 2.0 * 64.0 / (64.0 + 216.0);
    assert!((rows[2][1].parse::<f64>().unwrap() - dice_b).abs() < 1e-12);
    assert_eq!(rows[3][0], "mean");
    assert!((rows[3][1].parse::<f64>().unwrap() - (1.0 + dice_b) / 2.0).abs() < 1e-12);
    assert_eq!(rows[4][0], "std");
    assert!((rows[4][1].parse::<f64>().unwrap() - (1.0 - dice_b) / 2.0).abs() < 1e-12);
    // identical masks: HD95 0
    let hd = read_csv(&out.join("eval_hd95.csv"));
    assert_eq!(hd[1][1].parse::<f64>().unwrap(), 0.0);
    assert!(hd[2][1].parse::<f64>().unwrap() > 0.0);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["cases"], 2);
    assert_eq!(
        summary["per_case"][0]["spacing"],
        serde_json::json!([2.0, 1.0, 1.0])
    );
    assert!(out.join("boxplot_dice.png").exists() && out.join("boxplot_hd95.png").exists());
}

#[test]
fn remap_spacing_override_and_average_column() {
    let dir = tempfile::tempdir().unwrap();
    let (gt, pred, out) = (
        dir.path().join("gt"),
        dir.path().join("pred"),
        dir.path().join("out"),
    );
    std::fs::create_dir_all(&gt).unwrap();
    std::fs::create_dir_all(&pred).unwrap();
    let mut g = cube((6, 6, 6), 0, 3, 1);
    g.slice_mut(s![3..6, 3..6, 3..6]).fill(2);
    // the prediction uses label 7 for class 2
    let mut p = cube((6, 6, 6), 0, 3, 1);
    p.slice_mut(s![3..6, 3..6, 3..6]).fill(7);
    write(&gt.join("c.nii"), g, [1.0; 3]);
    write(&pred.join("c.nii"), p, [1.0; 3]);
    let o = run(&[
        "--gt-dir",
        gt.to_str().unwrap(),
        "--pred-dir",
        pred.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--labels",
        "1,2",
        "--remap",
        "7:2",
        "--spacing",
        "3,1,1",
        "--metrics",
        "dice,volume_gt",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = read_csv(&out.join("eval_dice.csv"));
    assert_eq!(rows[0], vec!["image", "1", "2", "average"]);
    assert_eq!(rows[1][1..], ["1", "1", "1"]);
    let vol = read_csv(&out.join("eval_volume_gt.csv"));
    assert_eq!(vol[1][1].parse::<f64>().unwrap(), 27.0 * 3.0);
}

#[test]
fn bad_cases_are_named_and_keep_going_records_them() {
    let dir = tempfile::tempdir().unwrap();
    let (gt, pred, out) = (
        dir.path().join("gt"),
        dir.path().join("pred"),
        dir.path().join("out"),
    );
    std::fs::create_dir_all(&gt).unwrap();
    std::fs::create_dir_all(&pred).unwrap();
    write(&gt.join("good.nii.gz"), cube((6, 6, 6), 1, 4, 1), [1.0; 3]);
    write(
        &pred.join("good.nii.gz"),
        cube((6, 6, 6), 1, 4, 1),
        [1.0; 3],
    );
    write(&gt.join("shape.nii.gz"), cube((6, 6, 6), 1, 4, 1), [1.0; 3]);
    write(
        &pred.join("shape.nii.gz"),
        cube((6, 6, 7), 1, 4, 1),
        [1.0; 3],
    );
    write(
        &gt.join("spacing.nii.gz"),
        cube((6, 6, 6), 1, 4, 1),
        [1.0; 3],
    );
    write(
        &pred.join("spacing.nii.gz"),
        cube((6, 6, 6), 1, 4, 1),
        [2.0, 1.0, 1.0],
    );
    write(
        &gt.join("missing.nii.gz"),
        cube((6, 6, 6), 1, 4, 1),
        [1.0; 3],
    );
    let base = [
        "--gt-dir",
        gt.to_str().unwrap(),
        "--pred-dir",
        pred.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--labels",
        "1",
    ];
    let o = run(&base);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("missing.nii.gz") && err.contains("missing prediction"),
        "{err}"
    );

    let mut kg = base.to_vec();
    kg.push("--keep-going");
    let o = run(&kg);
    assert!(!o.status.success(), "failures give a non-zero exit status");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["cases"], 1);
    let failed: Vec<String> = summary["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{} {}", f["case"], f["error"]))
        .collect();
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(failed
        .iter()
        .any(|f| f.contains("shape.nii.gz") && f.contains("shape mismatch")));
    assert!(failed
        .iter()
        .any(|f| f.contains("spacing.nii.gz") && f.contains("spacing mismatch")));
    assert!(failed
        .iter()
        .any(|f| f.contains("missing.nii.gz") && f.contains("missing prediction")));
    let rows = read_csv(&out.join("eval_dice.csv"));
    assert_eq!(rows.len(), 4); // header, good, mean, std
}

#[test]
fn manifest_input_and_2d_png() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = ArrayD::<u16>::zeros(ndarray::IxDyn(&[1, 10, 12]));
    g.slice_mut(s![.., 2..6, 2..8]).fill(1);
    let mut p = g.clone();
    p.slice_mut(s![.., 2..6, 7..8]).fill(0);
    for (name, a) in [("g.png", g), ("p.png", p)] {
        medseg_io::write_label(
            &dir.path().join(name),
            &LabelMap::new(a, Geometry::identity()).unwrap(),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("m.csv"), "prediction,label\np.png,g.png\n").unwrap();
    let out = dir.path().join("out");
    let o = run(&[
        "--manifest",
        dir.path().join("m.csv").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--labels",
        "1",
        "--metrics",
        "dice,hd",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = read_csv(&out.join("eval_dice.csv"));
    assert!((rows[1][1].parse::<f64>().unwrap() - 40.0 / 44.0).abs() < 1e-12);
    assert_eq!(
        read_csv(&out.join("eval_hd.csv"))[1][1]
            .parse::<f64>()
            .unwrap(),
        1.0
    );
}

#[test]
fn without_labels_every_label_of_the_ground_truth_is_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let (gt, pred, out) = (
        dir.path().join("gt"),
        dir.path().join("pred"),
        dir.path().join("out"),
    );
    std::fs::create_dir_all(&gt).unwrap();
    std::fs::create_dir_all(&pred).unwrap();
    // case a: label 1 only; case b: labels 1 and 3; the predictions also
    // hold label 5, which no ground truth has
    write(&gt.join("a.nii.gz"), cube((6, 6, 6), 1, 4, 1), [1.0; 3]);
    let mut pa = cube((6, 6, 6), 1, 4, 1);
    pa[[5, 5, 5]] = 3;
    pa[[0, 5, 5]] = 5;
    write(&pred.join("a.nii.gz"), pa, [1.0; 3]);
    let mut gb = cube((6, 6, 6), 0, 2, 1);
    gb.slice_mut(s![3..5, 3..5, 3..5]).fill(3);
    write(&gt.join("b.nii.gz"), gb.clone(), [1.0; 3]);
    write(&pred.join("b.nii.gz"), gb, [1.0; 3]);
    let args = [
        "--gt-dir",
        gt.to_str().unwrap(),
        "--pred-dir",
        pred.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--metrics",
        "dice,fp",
    ];
    let o = run(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("labels present in the ground truth of 2 cases: 1,3"),
        "{stdout}"
    );
    let rows = read_csv(&out.join("eval_dice.csv"));
    assert_eq!(rows[0], vec!["image", "1", "3", "average"]);
    // label 3 is absent from a's ground truth but a predicts one voxel of it
    let fp = read_csv(&out.join("eval_fp.csv"));
    assert_eq!(fp[1][0], "a.nii.gz");
    assert_eq!(fp[1][2].parse::<f64>().unwrap(), 1.0);
    assert_eq!(rows[1][2].parse::<f64>().unwrap(), 0.0);
    assert_eq!(rows[2][1..3], ["1", "1"]);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["labels"], serde_json::json!([1, 3]));

    // --remap applies first; an empty ground truth is an error naming the fix
    let o = run(&[args.as_slice(), &["--remap", "3:0"]].concat());
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("ground truth of 2 cases: 1\n"));
    let o = run(&[args.as_slice(), &["--remap", "3:0,1:0"]].concat());
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("holds no non-zero label: give --labels"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
