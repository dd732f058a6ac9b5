//! A real Flower federation on 127.0.0.1: the pinned flwr release (made
//! into `target/flower-venv` by `tools/flower/setup_venv.sh`) runs
//! `flower-superlink --insecure` on a free port and the ServerApp of
//! `federation/` with Flower's FedAvg; two `medseg-federated node`s (this
//! package's binary) train the liver and right-kidney sites of the phantom
//! federation for two rounds. `tools/flower/e2e.py` drives it, stops every
//! process, and reports in JSON what is checked here.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

#[test]
fn two_medseg_nodes_federate_through_a_real_superlink() {
    let root = repo();
    let setup = Command::new("bash")
        .arg(root.join("tools/flower/setup_venv.sh"))
        .current_dir(&root)
        .output()
        .expect("running tools/flower/setup_venv.sh");
    assert!(
        setup.status.success(),
        "setting up the Flower venv failed:\n{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let venv = root.join(String::from_utf8_lossy(&setup.stdout).trim());
    let out = Command::new(venv.join("bin/python"))
        .arg(root.join("tools/flower/e2e.py"))
        .args(["--node-bin", env!("CARGO_BIN_EXE_medseg-federated")])
        .args(["--rounds", "2", "--local", "40"])
        .current_dir(&root)
        .output()
        .expect("running tools/flower/e2e.py");
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "e2e.py printed no JSON ({e}):\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(report["ok"], true, "federation failed:\n{text}");
    assert_eq!(report["flwr_run_exit"], 0, "{text}");
    let rounds = report["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{text}");
    for r in rounds {
        // both nodes answered, no failure
        assert_eq!(r["replies"], 2, "{text}");
        assert_eq!(r["failures"], 0, "{text}");
        // the server's aggregate is the example-weighted mean of the replies
        // (to float32 rounding), not their plain mean
        assert_eq!(r["equals_weighted_mean"], true, "{text}");
        assert_eq!(r["equals_plain_mean"], false, "{text}");
        // and each reply arrived as its node sent it, bit for bit
        assert_eq!(r["replies_identical_to_node_side"], 2, "{text}");
        // the sites have different numbers of examples (the second trains
        // on 40 of its rows)
        let mut n: Vec<i64> = r["num_examples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        n.sort_unstable();
        assert!(n[0] == 40 && n[1] > 40, "{n:?}\n{text}");
    }
    // the nodes' validation Dice of the global model: the initial arrays
    // (round 0) against the arrays after the last round
    let d0 = report["initial_dice"].as_f64().unwrap();
    let d2 = rounds[1]["dice"].as_f64().unwrap();
    assert!(
        d2 > d0 + 0.1,
        "the global model's validation Dice did not rise: {d0} -> {d2}\n{text}"
    );
}
