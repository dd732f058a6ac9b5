//! Flower's content-addressed objects. A message travels as a tree of
//! objects (message → record dict → records → arrays → array chunks);
//! each object is `"<Type> <child ids, comma-separated> <body length>"`,
//! a NUL byte and the body, and its ID is the SHA-256 of those bytes in
//! hex. Bodies: the message's protobuf without content, JSON maps from
//! names to child IDs for record dicts and array records, JSON metadata
//! for arrays, raw bytes for chunks, protobuf for metric and config
//! records. Deflating here gives the bytes (and so the IDs) Flower's
//! Python objects give; inflating checks every ID, type, child list and
//! length, and bounds what it accepts.

use std::collections::{BTreeMap, HashMap};

use prost::Message as _;
use sha2::{Digest, Sha256};

use super::proto;
use super::records::{
    config_from_proto, config_to_proto, metrics_from_proto, metrics_to_proto, FlowerArray, Record,
    RecordDict,
};
use super::FlowerError;

/// Largest array chunk (Flower's default, 5 MiB).
pub const MAX_CHUNK: usize = 5_242_880;
/// Deepest object tree accepted (a message is 5 levels deep).
pub const MAX_TREE_DEPTH: usize = 8;

/// A Flower message: metadata and either content or an error.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowerMessage {
    /// Routing and timing.
    pub metadata: proto::Metadata,
    /// The records (absent when the message carries an error).
    pub content: Option<RecordDict>,
    /// The error, when the message reports one.
    pub error: Option<proto::Error>,
}

/// A deflated message: its objects by ID and its tree.
#[derive(Debug, Clone, Default)]
pub struct Deflated {
    /// The message's object ID (its message ID).
    pub root: String,
    /// The object tree.
    pub tree: proto::ObjectTree,
    /// Every object's bytes by ID.
    pub objects: HashMap<String, Vec<u8>>,
}

/// The object ID of `content`: SHA-256 in lowercase hex.
pub fn object_id(content: &[u8]) -> String {
    let d = Sha256::digest(content);
    let mut s = String::with_capacity(64);
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn with_head(kind: &str, children: &[String], body: &[u8]) -> Vec<u8> {
    let head = format!("{kind} {} {}", children.join(","), body.len());
    let mut out = Vec::with_capacity(head.len() + 1 + body.len());
    out.extend_from_slice(head.as_bytes());
    out.push(0);
    out.extend_from_slice(body);
    out
}

/// Splits an object into its type, child IDs and body, checking the
/// declared body length.
///
/// # Errors
/// No NUL divider, a head that is not three space-separated fields, a body
/// of another length than declared.
pub fn split_object(content: &[u8]) -> Result<(String, Vec<String>, &[u8]), FlowerError> {
    let nul = content
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| FlowerError::Content("object without a head".into()))?;
    let head = std::str::from_utf8(&content[..nul])
        .map_err(|_| FlowerError::Content("object head is not UTF-8".into()))?;
    let parts: Vec<&str> = head.split(' ').collect();
    if parts.len() != 3 {
        return Err(FlowerError::Content(format!(
            "object head `{head}`: expected `<type> <children> <length>`"
        )));
    }
    let len: usize = parts[2]
        .parse()
        .map_err(|_| FlowerError::Content(format!("object head `{head}`: bad length")))?;
    let body = &content[nul + 1..];
    if body.len() != len {
        return Err(FlowerError::Content(format!(
            "object `{}` declares a body of {len} bytes, has {}",
            parts[0],
            body.len()
        )));
    }
    let children = if parts[1].is_empty() {
        Vec::new()
    } else {
        parts[1].split(',').map(str::to_string).collect()
    };
    Ok((parts[0].to_string(), children, body))
}

// ------------------------------------------------------------------ JSON

/// A string as Python's `json.dumps` writes it (ASCII only).
fn json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `{"name": "id", ...}` as `json.dumps` writes a dict of strings.
fn json_refs(refs: &[(String, String)]) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in refs.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        json_str(k, &mut s);
        s.push_str(": ");
        json_str(v, &mut s);
    }
    s.push('}');
    s
}

fn parse_refs(body: &[u8], what: &str) -> Result<Vec<(String, String)>, FlowerError> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| FlowerError::Content(format!("{what}: body is not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| FlowerError::Content(format!("{what}: body is not a JSON object")))?;
    obj.iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|s| (k.clone(), s.to_string()))
                .ok_or_else(|| FlowerError::Content(format!("{what}: `{k}` is not an object ID")))
        })
        .collect()
}

// --------------------------------------------------------------- deflate

struct Out<'a> {
    objects: &'a mut HashMap<String, Vec<u8>>,
}

impl Out<'_> {
    fn put(&mut self, content: Vec<u8>) -> String {
        let id = object_id(&content);
        self.objects.entry(id.clone()).or_insert(content);
        id
    }
}

/// Unique child trees in first-appearance order (Python's dict of
/// children keyed by ID).
fn unique(children: Vec<proto::ObjectTree>) -> Vec<proto::ObjectTree> {
    let mut seen = std::collections::HashSet::new();
    children
        .into_iter()
        .filter(|t| seen.insert(t.object_id.clone()))
        .collect()
}

fn deflate_array(a: &FlowerArray, out: &mut Out) -> proto::ObjectTree {
    let mut chunk_trees = Vec::new();
    let mut chunk_ids = Vec::new();
    for chunk in a.data.chunks(MAX_CHUNK) {
        let id = out.put(with_head("ArrayChunk", &[], chunk));
        chunk_ids.push(id.clone());
        chunk_trees.push(proto::ObjectTree {
            object_id: id,
            children: vec![],
        });
    }
    let chunk_trees = unique(chunk_trees);
    let uniq: Vec<String> = chunk_trees.iter().map(|t| t.object_id.clone()).collect();
    let idx: Vec<String> = chunk_ids
        .iter()
        .map(|id| uniq.iter().position(|u| u == id).unwrap_or(0).to_string())
        .collect();
    let mut body = String::from("{\"dtype\": ");
    json_str(&a.dtype, &mut body);
    body.push_str(", \"shape\": [");
    body.push_str(
        &a.shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    body.push_str("], \"stype\": ");
    json_str(&a.stype, &mut body);
    body.push_str(", \"arraychunk_ids\": [");
    body.push_str(&idx.join(", "));
    body.push_str("]}");
    let id = out.put(with_head("Array", &uniq, body.as_bytes()));
    proto::ObjectTree {
        object_id: id,
        children: chunk_trees,
    }
}

fn deflate_refs(
    kind: &str,
    named: Vec<(String, proto::ObjectTree)>,
    out: &mut Out,
) -> proto::ObjectTree {
    let refs: Vec<(String, String)> = named
        .iter()
        .map(|(k, t)| (k.clone(), t.object_id.clone()))
        .collect();
    let children = unique(named.into_iter().map(|(_, t)| t).collect());
    let ids: Vec<String> = children.iter().map(|t| t.object_id.clone()).collect();
    let id = out.put(with_head(kind, &ids, json_refs(&refs).as_bytes()));
    proto::ObjectTree {
        object_id: id,
        children,
    }
}

fn deflate_record(r: &Record, out: &mut Out) -> proto::ObjectTree {
    match r {
        Record::Arrays(arrays) => {
            let named = arrays
                .iter()
                .map(|(k, a)| (k.clone(), deflate_array(a, out)))
                .collect();
            deflate_refs("ArrayRecord", named, out)
        }
        Record::Metrics(m) => {
            let body = metrics_to_proto(m).encode_to_vec();
            leaf(out.put(with_head("MetricRecord", &[], &body)))
        }
        Record::Config(c) => {
            let body = config_to_proto(c).encode_to_vec();
            leaf(out.put(with_head("ConfigRecord", &[], &body)))
        }
    }
}

fn leaf(id: String) -> proto::ObjectTree {
    proto::ObjectTree {
        object_id: id,
        children: vec![],
    }
}

/// The object tree of a record dict, its objects added to `objects`.
pub fn deflate_recorddict(
    rd: &RecordDict,
    objects: &mut HashMap<String, Vec<u8>>,
) -> proto::ObjectTree {
    let mut out = Out { objects };
    let named = rd
        .items
        .iter()
        .map(|(k, r)| (k.clone(), deflate_record(r, &mut out)))
        .collect();
    deflate_refs("RecordDict", named, &mut out)
}

/// Deflates a message: its object (metadata without the message ID, and
/// the error if any) above its content's tree. The root's ID is what
/// Flower uses as the message ID.
pub fn deflate_message(msg: &FlowerMessage) -> Deflated {
    let mut objects = HashMap::new();
    let content_tree = msg
        .content
        .as_ref()
        .map(|c| deflate_recorddict(c, &mut objects));
    let mut md = msg.metadata.clone();
    md.message_id.clear();
    let body = proto::Message {
        metadata: Some(md),
        content: None,
        error: msg.error.clone(),
    }
    .encode_to_vec();
    let children: Vec<String> = content_tree.iter().map(|t| t.object_id.clone()).collect();
    let content = with_head("Message", &children, &body);
    let root = object_id(&content);
    objects.insert(root.clone(), content);
    Deflated {
        root: root.clone(),
        tree: proto::ObjectTree {
            object_id: root,
            children: content_tree.into_iter().collect(),
        },
        objects,
    }
}

/// The IDs of a tree in post-order (children before parents), each once.
pub fn post_order(tree: &proto::ObjectTree) -> Vec<String> {
    fn walk(
        t: &proto::ObjectTree,
        out: &mut Vec<String>,
        seen: &mut std::collections::HashSet<String>,
    ) {
        for c in &t.children {
            walk(c, out, seen);
        }
        if seen.insert(t.object_id.clone()) {
            out.push(t.object_id.clone());
        }
    }
    let mut out = Vec::new();
    walk(tree, &mut out, &mut Default::default());
    out
}

/// Checks a tree's depth and that every ID is a SHA-256 in hex.
///
/// # Errors
/// A tree deeper than [`MAX_TREE_DEPTH`], an ID that is not 64 hex digits.
pub fn check_tree(tree: &proto::ObjectTree) -> Result<(), FlowerError> {
    fn walk(t: &proto::ObjectTree, depth: usize) -> Result<(), FlowerError> {
        if depth > MAX_TREE_DEPTH {
            return Err(FlowerError::Content(format!(
                "object tree deeper than {MAX_TREE_DEPTH} levels"
            )));
        }
        if t.object_id.len() != 64 || !t.object_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FlowerError::Content(format!(
                "object ID `{}` is not a SHA-256 in hex",
                t.object_id.chars().take(80).collect::<String>()
            )));
        }
        t.children.iter().try_for_each(|c| walk(c, depth + 1))
    }
    walk(tree, 1)
}

// --------------------------------------------------------------- inflate

struct In<'a> {
    objects: &'a HashMap<String, Vec<u8>>,
}

impl<'a> In<'a> {
    fn get(&self, id: &str, kind: &str) -> Result<(Vec<String>, &'a [u8]), FlowerError> {
        let content = self
            .objects
            .get(id)
            .ok_or_else(|| FlowerError::Content(format!("object {id} ({kind}) is missing")))?;
        let real = object_id(content);
        if real != id {
            return Err(FlowerError::Content(format!(
                "object {id} ({kind}) hashes to {real}"
            )));
        }
        let (t, children, body) = split_object(content)?;
        if t != kind {
            return Err(FlowerError::Content(format!(
                "object {id}: expected a {kind}, found a {t}"
            )));
        }
        Ok((children, body))
    }

    fn refs(&self, id: &str, kind: &str) -> Result<Vec<(String, String)>, FlowerError> {
        let (children, body) = self.get(id, kind)?;
        let refs = ordered(parse_refs(body, kind)?, self.objects.get(id));
        let mut want: Vec<&String> = refs.iter().map(|(_, v)| v).collect();
        want.sort();
        want.dedup();
        let mut have: Vec<&String> = children.iter().collect();
        have.sort();
        have.dedup();
        if want != have {
            return Err(FlowerError::Content(format!(
                "{kind} {id}: its references and its head's children differ"
            )));
        }
        Ok(refs)
    }

    fn array(&self, id: &str) -> Result<FlowerArray, FlowerError> {
        let (children, body) = self.get(id, "Array")?;
        let meta: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| FlowerError::Content(format!("Array {id}: {e}")))?;
        let field = |k: &str| {
            meta.get(k)
                .ok_or_else(|| FlowerError::Content(format!("Array {id}: no `{k}`")))
        };
        let dtype = field("dtype")?.as_str().unwrap_or_default().to_string();
        let stype = field("stype")?.as_str().unwrap_or_default().to_string();
        let shape = field("shape")?
            .as_array()
            .ok_or_else(|| FlowerError::Content(format!("Array {id}: `shape` is not a list")))?
            .iter()
            .map(|d| d.as_i64().filter(|d| *d >= 0))
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| FlowerError::Content(format!("Array {id}: bad `shape`")))?;
        let idx = field("arraychunk_ids")?
            .as_array()
            .ok_or_else(|| FlowerError::Content(format!("Array {id}: bad `arraychunk_ids`")))?;
        let mut data = Vec::new();
        for i in idx {
            let i = i
                .as_u64()
                .map(|i| i as usize)
                .filter(|&i| i < children.len())
                .ok_or_else(|| {
                    FlowerError::Content(format!("Array {id}: chunk index {i} out of range"))
                })?;
            let (grand, chunk) = self.get(&children[i], "ArrayChunk")?;
            if !grand.is_empty() {
                return Err(FlowerError::Content("an ArrayChunk with children".into()));
            }
            data.extend_from_slice(chunk);
        }
        Ok(FlowerArray {
            dtype,
            shape,
            stype,
            data,
        })
    }

    fn record(&self, id: &str) -> Result<Record, FlowerError> {
        let content = self
            .objects
            .get(id)
            .ok_or_else(|| FlowerError::Content(format!("record object {id} is missing")))?;
        let (kind, _, _) = split_object(content)?;
        match kind.as_str() {
            "ArrayRecord" => {
                let refs = self.refs(id, "ArrayRecord")?;
                let arrays = refs
                    .into_iter()
                    .map(|(k, aid)| Ok((k, self.array(&aid)?)))
                    .collect::<Result<_, FlowerError>>()?;
                Ok(Record::Arrays(arrays))
            }
            "MetricRecord" => {
                let (_, body) = self.get(id, "MetricRecord")?;
                let p = proto::MetricRecord::decode(body)
                    .map_err(|e| FlowerError::Content(format!("MetricRecord {id}: {e}")))?;
                Ok(Record::Metrics(metrics_from_proto(p)?))
            }
            "ConfigRecord" => {
                let (_, body) = self.get(id, "ConfigRecord")?;
                let p = proto::ConfigRecord::decode(body)
                    .map_err(|e| FlowerError::Content(format!("ConfigRecord {id}: {e}")))?;
                Ok(Record::Config(config_from_proto(p)?))
            }
            other => Err(FlowerError::Content(format!(
                "object {id}: a {other} where a record was expected"
            ))),
        }
    }
}

/// Rebuilds a record dict from its object ID and the objects.
///
/// # Errors
/// A missing object, an ID that is not its content's hash, a wrong type,
/// references that disagree with the head, an undecodable body.
pub fn inflate_recorddict(
    id: &str,
    objects: &HashMap<String, Vec<u8>>,
) -> Result<RecordDict, FlowerError> {
    let inp = In { objects };
    let refs = inp.refs(id, "RecordDict")?;
    let items = refs
        .into_iter()
        .map(|(k, rid)| Ok((k, inp.record(&rid)?)))
        .collect::<Result<_, FlowerError>>()?;
    Ok(RecordDict { items })
}

/// Puts `refs` in the order their names appear in the object's body
/// (serde_json's maps sort their keys; Flower's records keep their order).
fn ordered(mut refs: Vec<(String, String)>, content: Option<&Vec<u8>>) -> Vec<(String, String)> {
    if let Some(c) = content {
        let text = String::from_utf8_lossy(c);
        let pos: BTreeMap<String, usize> = refs
            .iter()
            .map(|(k, _)| {
                let mut key = String::new();
                json_str(k, &mut key);
                (
                    k.clone(),
                    text.find(&format!("{key}: ")).unwrap_or(usize::MAX),
                )
            })
            .collect();
        refs.sort_by_key(|(k, _)| pos[k]);
    }
    refs
}

/// Rebuilds a message from its root object ID and the objects.
///
/// # Errors
/// As [`inflate_recorddict`]; a message object whose body is not a
/// message, with both or neither of content and error.
pub fn inflate_message(
    root: &str,
    objects: &HashMap<String, Vec<u8>>,
) -> Result<FlowerMessage, FlowerError> {
    let inp = In { objects };
    let (children, body) = inp.get(root, "Message")?;
    let p = proto::Message::decode(body)
        .map_err(|e| FlowerError::Content(format!("Message {root}: {e}")))?;
    let mut metadata = p
        .metadata
        .ok_or_else(|| FlowerError::Content(format!("Message {root}: no metadata")))?;
    metadata.message_id = root.to_string();
    let content = match (&p.error, children.as_slice()) {
        (Some(_), []) => None,
        (None, [c]) => Some(inflate_recorddict(c, objects)?),
        _ => {
            return Err(FlowerError::Content(format!(
                "Message {root}: needs either content (one child) or an error"
            )))
        }
    };
    Ok(FlowerMessage {
        metadata,
        content,
        error: p.error,
    })
}

#[cfg(test)]
mod tests {
    use super::super::records::{ConfigValue, MetricValue};
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    fn sample() -> FlowerMessage {
        let a = ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let z = ArrayD::from_shape_vec(IxDyn(&[3]), vec![0.0; 3]).unwrap();
        FlowerMessage {
            metadata: proto::Metadata {
                run_id: 7,
                src_node_id: 1,
                dst_node_id: 42,
                message_type: "train".into(),
                ttl: 60.0,
                created_at: 1.8e9,
                ..Default::default()
            },
            content: Some(RecordDict {
                items: vec![
                    (
                        "arrays".into(),
                        Record::Arrays(vec![
                            ("w".into(), FlowerArray::from_f32(&a)),
                            ("z1".into(), FlowerArray::from_f32(&z)),
                            ("z2".into(), FlowerArray::from_f32(&z)),
                        ]),
                    ),
                    (
                        "config".into(),
                        Record::Config(vec![
                            ("server-round".into(), ConfigValue::Int(3)),
                            ("name \"é\"".into(), ConfigValue::Str("x".into())),
                        ]),
                    ),
                    (
                        "metrics".into(),
                        Record::Metrics(vec![("num-examples".into(), MetricValue::Int(10))]),
                    ),
                ],
            }),
            error: None,
        }
    }

    #[test]
    fn deflate_then_inflate_gives_the_message_back() {
        let m = sample();
        let d = deflate_message(&m);
        // identical arrays are one object, listed once in the tree
        let ids = post_order(&d.tree);
        assert_eq!(ids.last(), Some(&d.root));
        assert_eq!(ids.len(), d.objects.len());
        let back = inflate_message(&d.root, &d.objects).unwrap();
        let mut want = m.clone();
        want.metadata.message_id = d.root.clone();
        assert_eq!(back, want);
    }

    #[test]
    fn a_tampered_object_is_refused() {
        let d = deflate_message(&sample());
        let mut objects = d.objects.clone();
        let chunk = d.tree.children[0].children[0].children[0].children[0]
            .object_id
            .clone();
        objects.get_mut(&chunk).unwrap().push(0);
        let e = inflate_message(&d.root, &objects).unwrap_err().to_string();
        assert!(e.contains("hashes to"), "{e}");
        let mut objects = d.objects.clone();
        objects.remove(&chunk);
        let e = inflate_message(&d.root, &objects).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn json_strings_escape_as_python_does() {
        let mut s = String::new();
        json_str("a\"b\\c\nd é 😀", &mut s);
        assert_eq!(s, "\"a\\\"b\\\\c\\nd \\u00e9 \\ud83d\\ude00\"");
    }

    #[test]
    fn bad_trees_are_refused() {
        let mut t = proto::ObjectTree {
            object_id: "0".repeat(64),
            children: vec![],
        };
        assert!(check_tree(&t).is_ok());
        for _ in 0..MAX_TREE_DEPTH {
            t = proto::ObjectTree {
                object_id: "a".repeat(64),
                children: vec![t],
            };
        }
        assert!(check_tree(&t).is_err());
        let bad = proto::ObjectTree {
            object_id: "../etc".into(),
            children: vec![],
        };
        assert!(check_tree(&bad).is_err());
    }
}
