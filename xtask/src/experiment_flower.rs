//! `cargo xtask experiment flower`: a real Flower federation of medseg
//! nodes on this machine (the release binary, the pinned flwr in
//! `target/flower-venv`), round by round, and the fault drills.
//!
//! Runs `tools/flower/e2e.py` for the demo (all four phantom sites,
//! Flower's FedAvg, `--rounds` rounds of `--local` steps, every site
//! validating the global arrays after each round) and, with `--faults`,
//! for a node killed after the first round and a SuperLink restarted
//! after it. Writes `docs/results/flower_rounds.csv` and `.png` (the
//! validation Dice of the global model at each site, per round) and
//! `docs/results/flower_runs.json` (every run's report).

use anyhow::{bail, Context, Result};
use medseg_viz::Series;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

use crate::python::workspace_root;

fn e2e(root: &Path, py: &Path, bin: &Path, args: &[String]) -> Result<Value> {
    eprintln!("e2e.py {}", args.join(" "));
    let out = Command::new(py)
        .arg(root.join("tools/flower/e2e.py"))
        .arg("--node-bin")
        .arg(bin)
        .args(args)
        .current_dir(root)
        .output()
        .context("running tools/flower/e2e.py")?;
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).with_context(|| {
        format!(
            "e2e.py printed no report:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Site name of each node ID in a report.
fn sites_by_node(report: &Value) -> Vec<(String, String)> {
    let mut v = Vec::new();
    if let Some(ids) = report["node_ids"].as_object() {
        for (site, list) in ids {
            for id in list.as_array().into_iter().flatten() {
                v.push((id.as_str().unwrap_or_default().to_string(), site.clone()));
            }
        }
    }
    v
}

/// Runs the demo (and the fault drills with `--faults`).
///
/// # Errors
/// The build, the venv set-up or a run failing.
pub fn run(args: &[String]) -> Result<()> {
    let mut rounds = 10usize;
    let mut local = 20usize;
    let mut faults = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => rounds = it.next().context("--rounds N")?.parse()?,
            "--local" => local = it.next().context("--local N")?.parse()?,
            "--faults" => faults = true,
            other => bail!("unknown option {other}; use --rounds N --local N --faults"),
        }
    }
    let root = workspace_root();
    let st = Command::new("cargo")
        .args(["build", "--release", "-p", "medseg-federated-app"])
        .current_dir(&root)
        .status()?;
    if !st.success() {
        bail!("building medseg-federated failed");
    }
    let setup = Command::new("bash")
        .arg(root.join("tools/flower/setup_venv.sh"))
        .current_dir(&root)
        .output()?;
    if !setup.status.success() {
        bail!(
            "tools/flower/setup_venv.sh failed:\n{}",
            String::from_utf8_lossy(&setup.stderr)
        );
    }
    let py = root
        .join(String::from_utf8_lossy(&setup.stdout).trim())
        .join("bin/python");
    let bin = root.join("target/release/medseg-federated");
    let work = root.join("target/flower-experiment");
    let _ = std::fs::remove_dir_all(&work);
    let sites = "liver_site,spleen_site,lkidney_site,rkidney_site".to_string();
    let demo = e2e(
        &root,
        &py,
        &bin,
        &[
            "--sites".into(),
            sites.clone(),
            "--rounds".into(),
            rounds.to_string(),
            "--local".into(),
            local.to_string(),
            "--subset".into(),
            "0".into(),
            "--work".into(),
            work.join("demo").display().to_string(),
            "--timeout".into(),
            "3000".into(),
        ],
    )?;
    // without --faults, the drills of an earlier run are kept
    let results = root.join("docs/results");
    let mut runs = std::fs::read_to_string(results.join("flower_runs.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    runs["demo"] = demo;
    runs["demo_command"] =
        format!("cargo xtask experiment flower --rounds {rounds} --local {local}").into();
    if faults {
        for fault in ["kill-node", "restart-superlink"] {
            let r = e2e(
                &root,
                &py,
                &bin,
                &[
                    "--sites".into(),
                    "liver_site,spleen_site,rkidney_site".into(),
                    "--rounds".into(),
                    "3".into(),
                    "--local".into(),
                    "20".into(),
                    "--subset".into(),
                    "0".into(),
                    "--fault".into(),
                    fault.into(),
                    "--work".into(),
                    work.join(fault).display().to_string(),
                    "--timeout".into(),
                    "900".into(),
                ],
            )?;
            runs[fault] = r;
        }
    }
    std::fs::create_dir_all(&results)?;
    std::fs::write(
        results.join("flower_runs.json"),
        serde_json::to_string_pretty(&runs)? + "\n",
    )?;
    // round-by-round Dice per site (round 0: the initial arrays)
    let demo = &runs["demo"];
    let names = sites_by_node(demo);
    let mut csv = String::from("round,site,valid_dice\n");
    let mut series: Vec<Series> = Vec::new();
    let per_round = std::iter::once((
        0usize,
        &demo["initial_dice_per_node"],
        &demo["initial_dice"],
    ))
    .chain(demo["rounds"].as_array().into_iter().flatten().map(|r| {
        (
            r["round"].as_u64().unwrap_or(0) as usize,
            &r["dice_per_node"],
            &r["dice"],
        )
    }))
    .collect::<Vec<_>>();
    for (node, site) in &names {
        let pts: Vec<(f64, f64)> = per_round
            .iter()
            .filter_map(|(r, per, _)| per[node.as_str()].as_f64().map(|d| (*r as f64, d)))
            .collect();
        for (r, d) in &pts {
            csv.push_str(&format!("{r},{site},{d:.6}\n"));
        }
        series.push(Series {
            name: format!("{site} (its organ)"),
            points: pts,
        });
    }
    let mean: Vec<(f64, f64)> = per_round
        .iter()
        .filter_map(|(r, _, d)| d.as_f64().map(|d| (*r as f64, d)))
        .collect();
    for (r, d) in &mean {
        csv.push_str(&format!("{r},weighted mean,{d:.6}\n"));
    }
    series.push(Series {
        name: "mean, weighted by validation cases".into(),
        points: mean,
    });
    std::fs::write(results.join("flower_rounds.csv"), csv)?;
    medseg_viz::line_chart(
        &results.join("flower_rounds.png"),
        "Flower FedAvg over four medseg nodes (phantom federation)",
        "round (0: initial arrays)",
        "validation Dice of the global model",
        &series,
    )?;
    println!(
        "wrote docs/results/flower_runs.json, flower_rounds.csv, flower_rounds.png ({} s for the demo)",
        demo["seconds"]
    );
    Ok(())
}
