//! The Flower node's answers, without a network: a `train` message trains
//! and answers with the shared arrays and the example count; malformed or
//! unexpected messages get an error reply naming what is wrong and leave
//! the model as it was; `evaluate` leaves the site's weights in place; bad
//! node configs name the key.
#![cfg(feature = "flower")]

mod common;

use common::write_base;
use medseg_federated::flower::records::weights_to_arrays;
use medseg_federated::flower::{
    proto, ArrayRecord, ConfigValue, FlowerArray, FlowerMessage, MetricValue, Node, NodeConfig,
    NodeOptions, Record, RecordDict,
};
use medseg_federated::{AggregatorRegistry, LocalSite, Weights};
use std::path::Path;

fn node(dir: &Path, strategy: &str) -> Node {
    write_base(dir);
    let toml = format!(
        r#"
[node]
base = "base.toml"
strategy = "{strategy}"
local_iterations = 3
rounds = 5
seed = 2
output_dir = "{out}"

[site]
name = "liver_site"
train_csv = "liver_site/train.csv"
valid_csv = "liver_site/valid.csv"
"#,
        out = dir.join("out").display()
    );
    std::fs::write(dir.join("node.toml"), toml).unwrap();
    let cfg = NodeConfig::load(&dir.join("node.toml"), &[]).unwrap();
    let cwd = std::env::current_dir().unwrap();
    let exp = cfg.site_config(&[], &cwd).unwrap();
    let site = LocalSite::new(
        &cfg.site.name,
        exp,
        &cfg.node.learner,
        cfg.node.keep_optimizer,
        cfg.node.partial_labels,
        medseg_learners::Registries::with_builtins(),
    )
    .unwrap();
    Node::new(
        cfg,
        site,
        &AggregatorRegistry::with_builtins(),
        NodeOptions::new("127.0.0.1:1"),
    )
    .unwrap()
}

fn message(
    kind: &str,
    arrays: Vec<(String, FlowerArray)>,
    config: Vec<(&str, ConfigValue)>,
) -> FlowerMessage {
    let mut content = RecordDict::default();
    content.insert("arrays", Record::Arrays(arrays));
    content.insert(
        "config",
        Record::Config(
            config
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        ),
    );
    FlowerMessage {
        metadata: proto::Metadata {
            run_id: 5,
            message_id: "ab".repeat(32),
            src_node_id: 1,
            dst_node_id: 77,
            group_id: "1".into(),
            ttl: 3600.0,
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
                - 10.0,
            message_type: kind.into(),
            src_task_id: Some(9),
            ..Default::default()
        },
        content: Some(content),
        error: None,
    }
}

#[test]
fn a_train_message_trains_and_answers_with_the_shared_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = node(dir.path(), "FedBN");
    let before = n.site().weights().unwrap();
    let shared = n.shared_weights().unwrap();
    assert!(shared.len() < before.len(), "FedBN keeps the norms local");
    let msg = message(
        "train",
        weights_to_arrays(&shared),
        vec![
            ("server-round", ConfigValue::Int(1)),
            ("local-iterations", ConfigValue::Int(2)),
        ],
    );
    let (reply, outcome) = n.reply(&msg);
    outcome.unwrap();
    // a reply as Flower's: swapped nodes, same run, group and type
    assert_eq!(reply.metadata.src_node_id, 77);
    assert_eq!(reply.metadata.dst_node_id, 1);
    assert_eq!(reply.metadata.reply_to_message_id, msg.metadata.message_id);
    assert_eq!(reply.metadata.dst_task_id, Some(9));
    // the reply expires when the instruction does
    let expiry = msg.metadata.created_at + msg.metadata.ttl;
    assert!((reply.metadata.created_at + reply.metadata.ttl - expiry).abs() < 1e-3);
    let content = reply.content.unwrap();
    let arrays = content.arrays("arrays").unwrap();
    let keys: Vec<&str> = arrays.iter().map(|(k, _)| k.as_str()).collect();
    let want: Vec<&str> = shared.keys().collect();
    assert_eq!(keys, want, "only the shared arrays travel");
    let Some(Record::Metrics(m)) = content.get("metrics") else {
        panic!()
    };
    assert_eq!(
        m[0],
        (
            "num-examples".to_string(),
            MetricValue::Int(n.site().session.num_examples() as i64)
        )
    );
    assert!(m.contains(&("local-iterations".into(), MetricValue::Int(2))));
    assert_eq!(n.site().session.iteration(), 2);
    let after = n.site().weights().unwrap();
    assert_ne!(before, after, "training changed the weights");
    // the arrays sent are the site's weights after training
    let sent: Weights = medseg_federated::flower::records::arrays_to_weights(arrays).unwrap();
    assert_eq!(sent, after.filtered(|k| !n.is_local(k)));
}

#[test]
fn malformed_messages_get_an_error_and_leave_the_model_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = node(dir.path(), "FedAvg");
    let before = n.site().weights().unwrap();
    let good = weights_to_arrays(&before);
    let a0 = before.iter().next().map(|(_, a)| a.clone()).unwrap();
    let with = |f: &dyn Fn(&mut ArrayRecord)| {
        let mut a = good.clone();
        f(&mut a);
        a
    };
    let cases: Vec<(FlowerMessage, &str)> = vec![
        (
            message(
                "train",
                with(&|a| a[0].1 = FlowerArray::from_f32(&ndarray::ArrayD::zeros(vec![2, 2]))),
                vec![],
            ),
            "has shape",
        ),
        (
            message(
                "train",
                with(&|a| a.push(("decoder.extra.weight".into(), good[0].1.clone()))),
                vec![],
            ),
            "decoder.extra.weight",
        ),
        (
            message(
                "train",
                with(&|a| {
                    let mut x = a0.clone();
                    x.iter_mut().for_each(|v| *v = f32::NAN);
                    a[0].1 = FlowerArray::from_f32(&x)
                }),
                vec![],
            ),
            "non-finite",
        ),
        (
            message(
                "train",
                good.clone(),
                vec![("local-iterations", ConfigValue::Str("ten".into()))],
            ),
            "local-iterations",
        ),
        (
            message(
                "train",
                good.clone(),
                vec![("proximal-mu", ConfigValue::Double(-1.0))],
            ),
            "proximal-mu",
        ),
        (message("query", good.clone(), vec![]), "`query`"),
        (
            message("train", with(&|a| a[0].1.data.truncate(20)), vec![]),
            "not a readable .npy",
        ),
    ];
    for (msg, needle) in cases {
        let (reply, outcome) = n.reply(&msg);
        let err = outcome.unwrap_err();
        assert!(err.contains(needle), "`{needle}` not in: {err}");
        assert!(reply.content.is_none());
        let e = reply.error.unwrap();
        assert_eq!(e.code, 2);
        assert!(e.reason.contains("liver_site"), "{}", e.reason);
        assert_eq!(n.site().weights().unwrap(), before, "after `{needle}`");
    }
    // no ArrayRecord at all
    let mut m = message("train", vec![], vec![]);
    m.content.as_mut().unwrap().items.remove(0);
    assert!(n.reply(&m).1.unwrap_err().contains("no ArrayRecord"));
    assert_eq!(n.site().session.iteration(), 0);
}

#[test]
fn evaluate_scores_the_global_arrays_and_keeps_the_sites_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = node(dir.path(), "FedAvg");
    let before = n.site().weights().unwrap();
    let mut zeros = before.clone();
    let keys: Vec<String> = zeros.keys().map(str::to_string).collect();
    for k in keys {
        zeros.get_mut(&k).unwrap().fill(0.0);
    }
    let msg = message("evaluate", weights_to_arrays(&zeros), vec![]);
    let (reply, outcome) = n.reply(&msg);
    outcome.unwrap();
    let content = reply.content.unwrap();
    let Some(Record::Metrics(m)) = content.get("metrics") else {
        panic!()
    };
    assert_eq!(
        m[0],
        (
            "num-examples".into(),
            MetricValue::Int(n.site().valid_cases as i64)
        )
    );
    // an all-zero network predicts background everywhere: Dice 0
    assert_eq!(m[1], ("dice".into(), MetricValue::Double(0.0)));
    assert_eq!(n.site().weights().unwrap(), before);
}

#[test]
fn bad_node_configs_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let _ = node(dir.path(), "FedAvg");
    let p = dir.path().join("node.toml");
    let e = NodeConfig::load(&p, &["node.heartbeat_interval=5".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("node.heartbeat_interval"), "{e}");
    let e = NodeConfig::load(&p, &["node.colour=1".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("colour"), "{e}");
    let e = NodeConfig::load(&p, &["node.local_iterations=0".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("node.local_iterations"), "{e}");
    let e = NodeConfig::load(&p, &["training.lr=1".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("node.*") && e.contains("site.*"), "{e}");
}
