//! Flower's own bytes: messages built and serialised by the pinned flwr
//! release (`tools/flower/make_fixtures.py`) are read here with medseg's
//! generated types and object code, and medseg's deflation of what it read
//! gives back Flower's exact objects (so the IDs agree). A drift in the
//! protocol or the object format fails these tests.
#![cfg(feature = "flower")]

use std::collections::HashMap;

use base64_022::Engine as _;
use medseg_federated::flower::objects::{check_tree, post_order};
use medseg_federated::flower::{
    deflate_message, inflate_message, proto, ConfigValue, MetricValue, Record, FLOWER_VERSION,
};
use prost::Message as _;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let p = format!(
        "{}/tests/fixtures/flower/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn b64(s: &Value) -> Vec<u8> {
    base64_022::engine::general_purpose::STANDARD
        .decode(s.as_str().unwrap())
        .unwrap()
}

fn objects(v: &Value) -> HashMap<String, Vec<u8>> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, c)| (k.clone(), b64(c)))
        .collect()
}

fn config_value(v: &Value) -> ConfigValue {
    let (k, x) = v.as_object().unwrap().iter().next().unwrap();
    match k.as_str() {
        "bool" => ConfigValue::Bool(x.as_bool().unwrap()),
        "int" => {
            let s = x.as_str().unwrap();
            match s.parse::<i64>() {
                Ok(i) => ConfigValue::Int(i),
                Err(_) => ConfigValue::UInt(s.parse().unwrap()),
            }
        }
        "float" => ConfigValue::Double(x.as_f64().unwrap()),
        "str" => ConfigValue::Str(x.as_str().unwrap().into()),
        "bytes" => ConfigValue::Bytes(b64(x)),
        "list" => {
            let items: Vec<ConfigValue> = x.as_array().unwrap().iter().map(config_value).collect();
            match items.first() {
                Some(ConfigValue::Int(_)) => ConfigValue::IntList(
                    items
                        .iter()
                        .map(|i| match i {
                            ConfigValue::Int(i) => *i,
                            _ => unreachable!(),
                        })
                        .collect(),
                ),
                Some(ConfigValue::Double(_)) => {
                    ConfigValue::DoubleList(items.iter().map(|i| i.as_f64().unwrap()).collect())
                }
                Some(ConfigValue::Str(_)) => ConfigValue::StrList(
                    items
                        .iter()
                        .map(|i| match i {
                            ConfigValue::Str(s) => s.clone(),
                            _ => unreachable!(),
                        })
                        .collect(),
                ),
                other => panic!("list fixture {other:?}"),
            }
        }
        other => panic!("fixture kind {other}"),
    }
}

fn check_message(fx: &Value) {
    assert_eq!(
        fx["flwr_version"], FLOWER_VERSION,
        "fixture of another release"
    );
    let root = fx["root"].as_str().unwrap();
    let objs = objects(&fx["objects"]);
    let ex = &fx["expected"];

    // the SuperLink's answer to PullMessages, decoded with medseg's types
    let resp =
        proto::PullMessagesResponse::decode(b64(&fx["pull_messages_response"]).as_slice()).unwrap();
    let md = resp.messages_list[0].metadata.clone().unwrap();
    assert_eq!(md.message_id, root);
    assert_eq!(md.run_id, 99);
    assert_eq!(md.dst_node_id, 1234);
    assert_eq!(md.src_task_id, Some(17));
    assert_eq!(md.dst_task_id, None);
    let tree = &resp.message_object_trees[0];
    check_tree(tree).unwrap();
    assert_eq!(tree.object_id, root);
    let mut ids = post_order(tree);
    ids.sort();
    let mut have: Vec<String> = objs.keys().cloned().collect();
    have.sort();
    assert_eq!(ids, have, "the tree lists exactly the message's objects");

    // the objects, inflated
    let m = inflate_message(root, &objs).unwrap();
    assert_eq!(m.metadata.message_type, "train");
    assert_eq!(m.metadata.group_id, "3");
    assert_eq!(m.metadata.created_at, ex["created_at"].as_f64().unwrap());
    assert_eq!(m.metadata.ttl, ex["ttl"].as_f64().unwrap());
    let content = m.content.as_ref().unwrap();
    let order: Vec<&str> = content.items.iter().map(|(k, _)| k.as_str()).collect();
    let want: Vec<&str> = ex["record_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(order, want);
    let arrays = content.arrays("arrays").unwrap();
    let names: Vec<&str> = arrays.iter().map(|(k, _)| k.as_str()).collect();
    let want: Vec<&str> = ex["array_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(names, want, "array order is kept");
    for (k, a) in arrays {
        let e = &ex["arrays"][k];
        assert_eq!(a.dtype, e["dtype"].as_str().unwrap(), "{k}");
        let shape: Vec<i64> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_i64().unwrap())
            .collect();
        assert_eq!(a.shape, shape, "{k}");
        let v = a.to_f32(k).unwrap();
        let want: Vec<f32> = e["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(v.iter().copied().collect::<Vec<f32>>(), want, "{k}");
    }
    let config = content.config("config").unwrap();
    let want = ex["config"].as_object().unwrap();
    assert_eq!(config.len(), want.len());
    let keys: Vec<&str> = config.iter().map(|(k, _)| k.as_str()).collect();
    let order: Vec<&str> = ex["config_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(keys, order, "config order is kept");
    for (k, v) in config {
        assert_eq!(v, &config_value(&want[k]), "config `{k}`");
    }
    assert!(matches!(
        config.iter().find(|(k, _)| k == "big").unwrap().1,
        ConfigValue::UInt(9_223_372_036_854_775_813)
    ));
    let Some(Record::Metrics(metrics)) = content.get("metrics") else {
        panic!("no metrics")
    };
    assert_eq!(
        metrics,
        &vec![
            ("num-examples".to_string(), MetricValue::Int(56)),
            ("loss".to_string(), MetricValue::Double(0.25)),
            ("hist".to_string(), MetricValue::DoubleList(vec![1.0, 2.0])),
        ]
    );
}

#[test]
fn a_train_message_serialised_by_flower_reads_back() {
    check_message(&fixture("train_message.json"));
}

#[test]
fn chunked_arrays_with_repeated_chunks_read_back() {
    let fx = fixture("train_message_chunked.json");
    // 64-byte chunks: arrays come in several chunks, the zero ones repeated
    let objs = objects(&fx["objects"]);
    let chunks = objs
        .values()
        .filter(|c| c.starts_with(b"ArrayChunk "))
        .count();
    assert!(chunks > 10, "{chunks} chunks");
    check_message(&fx);
}

#[test]
fn deflating_what_was_read_gives_flowers_objects_back() {
    let fx = fixture("train_message.json");
    let root = fx["root"].as_str().unwrap();
    let objs = objects(&fx["objects"]);
    let m = inflate_message(root, &objs).unwrap();
    let d = deflate_message(&m);
    assert_eq!(d.root, root, "same message ID as Flower's");
    assert_eq!(d.objects.len(), objs.len());
    for (id, c) in &objs {
        assert_eq!(d.objects.get(id), Some(c), "object {id}");
    }
}

#[test]
fn an_error_reply_reads_and_deflates_as_flowers() {
    let fx = fixture("train_message.json");
    let e = &fx["error_message"];
    let root = e["root"].as_str().unwrap();
    let objs = objects(&e["objects"]);
    let m = inflate_message(root, &objs).unwrap();
    assert!(m.content.is_none());
    let err = m.error.clone().unwrap();
    assert_eq!(err.code, 2);
    assert_eq!(err.reason, "boom at site");
    assert_eq!(m.metadata.reply_to_message_id, fx["root"].as_str().unwrap());
    assert_eq!(m.metadata.dst_task_id, Some(17));
    assert_eq!(deflate_message(&m).root, root);
}

#[test]
fn an_array_of_medseg_has_numpys_bytes() {
    // the fixture's float32 weight, rebuilt from its values by medseg, has
    // the same object (so the same .npy bytes) as NumPy's
    let fx = fixture("train_message.json");
    let objs = objects(&fx["objects"]);
    let m = inflate_message(fx["root"].as_str().unwrap(), &objs).unwrap();
    let arrays = m.content.as_ref().unwrap().arrays("arrays").unwrap();
    for (k, a) in arrays.iter().filter(|(_, a)| a.dtype == "float32") {
        let rebuilt = medseg_federated::flower::FlowerArray::from_f32(&a.to_f32(k).unwrap());
        assert_eq!(&rebuilt, a, "{k}");
    }
}
