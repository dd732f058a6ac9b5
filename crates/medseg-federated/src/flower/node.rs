//! The node's loop. A node registers its public key and activates
//! (Flower then samples it), sends heartbeats from a thread of its own,
//! and pulls messages: for each, it pulls the message's objects, checks
//! and inflates them, confirms receipt, trains (`train`) or validates
//! (`evaluate`) with medseg, and pushes a reply with only the arrays the
//! strategy shares. A malformed or unexpected message gets an error reply
//! and leaves the model untouched; when the SuperLink goes away the node
//! retries with exponential back-off, and registers again when the
//! SuperLink no longer knows it (a restart).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::objects::{check_tree, deflate_message, inflate_message, object_id, post_order};
use super::records::{
    arrays_to_weights, config_value, weights_to_arrays, ArrayRecord, ConfigRecord, MetricValue,
    Record, RecordDict,
};
use super::transport::{FleetClient, NodeIdentity, Tls};
use super::{proto, FlowerError, FlowerMessage, NodeConfig};
use crate::{Aggregator, AggregatorRegistry, LocalSite, ProximalTerm, Weights};

/// Flower's error code for an exception in the client's app.
pub const ERROR_CLIENT_APP_RAISED: i64 = 2;
/// Largest total size of one message's objects (bounded memory).
pub const MAX_MESSAGE_BYTES: usize = 4 << 30;

/// How the node connects and when it stops.
#[derive(Clone)]
pub struct NodeOptions {
    /// The SuperLink's Fleet API, `HOST:PORT`.
    pub superlink: String,
    /// Plain HTTP, or HTTPS checked against public or given roots.
    pub tls: Tls,
    /// The node's key pair; `None` generates one and self-registers.
    pub identity: Option<NodeIdentity>,
    /// Stop after answering this many messages (`None`: run until
    /// stopped).
    pub max_messages: Option<usize>,
    /// Give up after the SuperLink has been unreachable this long (`None`:
    /// keep trying).
    pub max_wait: Option<Duration>,
    /// Pause between pulls when there is no message.
    pub poll_interval: Duration,
    /// Longest pause between retries (the back-off doubles up to it).
    pub max_backoff: Duration,
    /// Timeout of one HTTP call.
    pub call_timeout: Duration,
    /// Print one line per message.
    pub progress: bool,
}

impl NodeOptions {
    /// Defaults for `superlink`: HTTPS against the public roots, run until
    /// stopped, keep retrying, poll every second, back-off up to 30 s,
    /// calls time out after 120 s.
    pub fn new(superlink: impl Into<String>) -> Self {
        NodeOptions {
            superlink: superlink.into(),
            tls: Tls::PublicRoots,
            identity: None,
            max_messages: None,
            max_wait: None,
            poll_interval: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            call_timeout: Duration::from_secs(120),
            progress: true,
        }
    }
}

/// What a node did before it stopped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSummary {
    /// Messages answered (with content or with an error).
    pub messages: usize,
    /// `train` messages answered with weights.
    pub trained: usize,
    /// `evaluate` messages answered with metrics.
    pub evaluated: usize,
    /// Messages answered with an error.
    pub errors: usize,
    /// Times the node registered again after losing the SuperLink.
    pub rejoins: usize,
}

/// A medseg site acting as a Flower node.
pub struct Node {
    cfg: NodeConfig,
    site: LocalSite,
    aggregator: Box<dyn Aggregator>,
    opts: NodeOptions,
    log: PathBuf,
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Node {
    /// A node for `site` (built from `cfg`), following `cfg.node.strategy`
    /// of `aggregators` for which arrays stay local.
    ///
    /// # Errors
    /// An unknown strategy or bad parameters; an unwritable output folder.
    pub fn new(
        cfg: NodeConfig,
        site: LocalSite,
        aggregators: &AggregatorRegistry,
        opts: NodeOptions,
    ) -> Result<Self, FlowerError> {
        let params = cfg
            .node
            .strategy_params
            .clone()
            .unwrap_or(serde_json::Value::Null);
        let mut aggregator = aggregators.build(&cfg.node.strategy, &params)?;
        aggregator.prepare(&site.weights()?)?;
        let out = cfg.node.output_dir.clone();
        std::fs::create_dir_all(&out).map_err(|e| FlowerError::Config {
            path: out.clone(),
            msg: format!("cannot create the output folder: {e}"),
        })?;
        let log = out.join("node.csv");
        if !log.exists() {
            std::fs::write(
                &log,
                "unix_time,run,round,type,steps,num_examples,loss,dice,seconds,status\n",
            )
            .map_err(|e| FlowerError::Config {
                path: log.clone(),
                msg: e.to_string(),
            })?;
        }
        Ok(Node {
            cfg,
            site,
            aggregator,
            opts,
            log,
        })
    }

    /// The site.
    pub fn site(&self) -> &LocalSite {
        &self.site
    }

    /// Whether the array `key` stays at the site.
    pub fn is_local(&self, key: &str) -> bool {
        self.aggregator.is_local(key)
    }

    /// The arrays the node shares (its current weights less the local
    /// ones), e.g. as the server's initial arrays.
    ///
    /// # Errors
    /// Arrays that cannot be read from the network.
    pub fn shared_weights(&self) -> Result<Weights, FlowerError> {
        Ok(self.site.weights()?.filtered(|k| !self.is_local(k)))
    }

    fn log_line(&self, line: &str) {
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&self.log) {
            let _ = writeln!(f, "{line}");
        }
    }

    /// Checks that `w` fits the site's network (every array known, same
    /// shapes) before anything is loaded, so a bad message cannot leave
    /// the model half-replaced.
    fn check_fits(&self, w: &Weights) -> Result<(), FlowerError> {
        let mine = self.site.weights()?;
        for (k, a) in w.iter() {
            if self.is_local(k) {
                continue;
            }
            match mine.get(k) {
                None => {
                    return Err(FlowerError::Content(format!(
                        "array `{k}` is not an array of this site's network ({} arrays, e.g. `{}`)",
                        mine.len(),
                        mine.keys().next().unwrap_or_default()
                    )))
                }
                Some(m) if m.shape() != a.shape() => {
                    return Err(FlowerError::Content(format!(
                        "array `{k}` has shape {:?}, this site's network has {:?}",
                        a.shape(),
                        m.shape()
                    )))
                }
                _ => {}
            }
            if a.iter().any(|v| !v.is_finite()) {
                return Err(FlowerError::Content(format!(
                    "array `{k}` holds a non-finite value"
                )));
            }
        }
        Ok(())
    }

    fn received_weights(&self, content: &RecordDict) -> Result<Weights, FlowerError> {
        let arrays: &ArrayRecord = content
            .arrays("arrays")
            .or_else(|| {
                content.items.iter().find_map(|(_, r)| match r {
                    Record::Arrays(a) => Some(a),
                    _ => None,
                })
            })
            .ok_or_else(|| FlowerError::Content("the message carries no ArrayRecord".into()))?;
        let w = arrays_to_weights(arrays)?;
        self.check_fits(&w)?;
        Ok(w)
    }

    /// Answers one message: its reply's content, or an error. The model is
    /// changed only by a well-formed `train` message.
    ///
    /// # Errors
    /// A message without content, an unknown message type, arrays that do
    /// not fit the network, training or validation errors.
    pub fn answer(&mut self, msg: &FlowerMessage) -> Result<RecordDict, FlowerError> {
        let content = msg.content.as_ref().ok_or_else(|| {
            FlowerError::Content("the message carries an error, not content".into())
        })?;
        let empty = ConfigRecord::new();
        let config = content.config("config").unwrap_or(&empty);
        let kind = msg.metadata.message_type.as_str();
        let action = kind.split('.').next().unwrap_or(kind);
        let round = config_value(config, "server-round")
            .and_then(|v| v.as_usize())
            .unwrap_or(0);
        let t0 = Instant::now();
        match action {
            "train" => {
                let global = self.received_weights(content)?;
                let steps = match config_value(config, "local-iterations") {
                    Some(v) => v.as_usize().filter(|&s| s > 0).ok_or_else(|| {
                        FlowerError::Content(format!(
                            "config `local-iterations` must be a positive integer, got {v:?}"
                        ))
                    })?,
                    None => self.cfg.node.local_iterations,
                };
                let mu = match config_value(config, "proximal-mu") {
                    Some(v) => Some(
                        v.as_f64()
                            .filter(|m| m.is_finite() && *m >= 0.0)
                            .ok_or_else(|| {
                                FlowerError::Content(format!(
                                    "config `proximal-mu` must be a number >= 0, got {v:?}"
                                ))
                            })?,
                    ),
                    None => self.aggregator.proximal_mu(),
                };
                self.site
                    .receive(&global, &|k| self.aggregator.is_local(k))?;
                let prox = match mu {
                    Some(mu) if mu > 0.0 => Some(ProximalTerm::for_aggregator(
                        &global,
                        self.aggregator.as_ref(),
                        mu,
                        self.site.trainer.device(),
                    )?),
                    _ => None,
                };
                let update = self.site.train(steps, prox.as_ref())?;
                let shared = update.weights.filtered(|k| !self.aggregator.is_local(k));
                if let Some((k, _)) = shared
                    .iter()
                    .find(|(_, a)| a.iter().any(|v| !v.is_finite()))
                {
                    return Err(FlowerError::Content(format!(
                        "local training diverged: array `{k}` holds a non-finite value; \
                         nothing is sent"
                    )));
                }
                let loss = update.metrics.get("loss").copied().unwrap_or(f64::NAN);
                if self.cfg.node.save_replies {
                    let dir = self.cfg.node.output_dir.join("replies");
                    std::fs::create_dir_all(&dir).map_err(|e| FlowerError::Config {
                        path: dir.clone(),
                        msg: e.to_string(),
                    })?;
                    let mut with_n = shared.clone();
                    with_n.insert(
                        "__num_examples__",
                        ndarray::arr0(update.num_examples as f32).into_dyn(),
                    );
                    with_n.save(
                        &dir.join(format!("{}_{round}_train.safetensors", msg.metadata.run_id)),
                    )?;
                }
                self.log_line(&format!(
                    "{:.3},{},{round},train,{steps},{},{loss},,{:.3},ok",
                    now_secs(),
                    msg.metadata.run_id,
                    update.num_examples,
                    t0.elapsed().as_secs_f64()
                ));
                let mut rd = RecordDict::default();
                rd.insert("arrays", Record::Arrays(weights_to_arrays(&shared)));
                rd.insert(
                    "metrics",
                    Record::Metrics(vec![
                        (
                            "num-examples".into(),
                            MetricValue::Int(update.num_examples as i64),
                        ),
                        ("train_loss".into(), MetricValue::Double(loss)),
                        ("local-iterations".into(), MetricValue::Int(steps as i64)),
                    ]),
                );
                Ok(rd)
            }
            "evaluate" => {
                let global = self.received_weights(content)?;
                if self.site.valid_cases == 0 {
                    return Err(FlowerError::Content(format!(
                        "site `{}` has no validation manifest (site.valid_csv) to evaluate on",
                        self.site.name
                    )));
                }
                // evaluate the global weights with the site's local arrays,
                // then put the site's own weights back
                let before = self.site.weights()?;
                self.site
                    .receive(&global, &|k| self.aggregator.is_local(k))?;
                let dice = self.site.validate();
                self.site.receive(&before, &|_| false)?;
                let dice = dice?.unwrap_or(f64::NAN);
                self.log_line(&format!(
                    "{:.3},{},{round},evaluate,0,{},,{dice},{:.3},ok",
                    now_secs(),
                    msg.metadata.run_id,
                    self.site.valid_cases,
                    t0.elapsed().as_secs_f64()
                ));
                let mut rd = RecordDict::default();
                rd.insert(
                    "metrics",
                    Record::Metrics(vec![
                        (
                            "num-examples".into(),
                            MetricValue::Int(self.site.valid_cases as i64),
                        ),
                        ("dice".into(), MetricValue::Double(dice)),
                    ]),
                );
                Ok(rd)
            }
            other => Err(FlowerError::Content(format!(
                "message type `{other}`: this node answers `train` and `evaluate`"
            ))),
        }
    }

    /// The reply to `msg`: [`Node::answer`]'s content, or an error reply
    /// naming what went wrong. Metadata as Flower's replies have it (source
    /// and destination swapped, same run, group and type, TTL up to the
    /// instruction's expiry).
    pub fn reply(&mut self, msg: &FlowerMessage) -> (FlowerMessage, Result<(), String>) {
        let result = self.answer(msg);
        let now = now_secs();
        let m = &msg.metadata;
        let metadata = proto::Metadata {
            run_id: m.run_id,
            message_id: String::new(),
            src_node_id: m.dst_node_id,
            dst_node_id: m.src_node_id,
            reply_to_message_id: m.message_id.clone(),
            group_id: m.group_id.clone(),
            ttl: (m.created_at + m.ttl - now).max(1e-3),
            message_type: m.message_type.clone(),
            created_at: now,
            src_task_id: m.dst_task_id,
            dst_task_id: m.src_task_id,
        };
        match result {
            Ok(content) => (
                FlowerMessage {
                    metadata,
                    content: Some(content),
                    error: None,
                },
                Ok(()),
            ),
            Err(e) => {
                let reason = format!("medseg node `{}`: {e}", self.site.name);
                self.log_line(&format!(
                    "{:.3},{},,{},,,,,,error: {}",
                    now,
                    m.run_id,
                    m.message_type,
                    reason.replace([',', '\n'], ";")
                ));
                (
                    FlowerMessage {
                        metadata,
                        content: None,
                        error: Some(proto::Error {
                            code: ERROR_CLIENT_APP_RAISED,
                            reason: reason.clone(),
                        }),
                    },
                    Err(reason),
                )
            }
        }
    }

    /// Joins the SuperLink and answers messages until `stop` is set,
    /// `max_messages` are answered, or the SuperLink stays unreachable
    /// longer than `max_wait`; then deactivates (and unregisters a
    /// self-registered node).
    ///
    /// # Errors
    /// The SuperLink refusing the node (not a transient error), or
    /// unreachable past `max_wait`.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<NodeSummary, FlowerError> {
        let self_registered = self.opts.identity.is_none();
        let identity = self
            .opts
            .identity
            .clone()
            .unwrap_or_else(NodeIdentity::generate);
        let client = FleetClient::new(
            &self.opts.superlink,
            identity,
            self.opts.call_timeout,
            &self.opts.tls,
        )?;
        let mut summary = NodeSummary::default();
        let mut node_id = self.join(&client, self_registered, stop)?;
        let hb_stop = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicBool::new(false));
        let hb = spawn_heartbeat(
            client.clone(),
            node_id,
            self.cfg.node.heartbeat_interval,
            hb_stop.clone(),
            lost.clone(),
        );
        let mut hb = Some(hb);
        let mut backoff = Backoff::new(self.opts.max_backoff, self.opts.max_wait);
        while !stop.load(Ordering::Relaxed) {
            if self
                .opts
                .max_messages
                .is_some_and(|m| summary.messages >= m)
            {
                break;
            }
            if lost.swap(false, Ordering::Relaxed) {
                // the heartbeat found the SuperLink without this node
                hb_stop.store(true, Ordering::Relaxed);
                if let Some(h) = hb.take() {
                    let _ = h.join();
                }
                node_id = self.join(&client, self_registered, stop)?;
                summary.rejoins += 1;
                hb_stop.store(false, Ordering::Relaxed);
                hb = Some(spawn_heartbeat(
                    client.clone(),
                    node_id,
                    self.cfg.node.heartbeat_interval,
                    hb_stop.clone(),
                    lost.clone(),
                ));
            }
            match self.step(&client, node_id, &mut summary) {
                Ok(true) => backoff.reset(),
                Ok(false) => {
                    backoff.reset();
                    sleep_unless(stop, self.opts.poll_interval);
                }
                Err(e) if e.is_unknown_node() => {
                    self.note(&format!(
                        "the SuperLink does not know this node ({e}); rejoining"
                    ));
                    lost.store(true, Ordering::Relaxed);
                }
                Err(e) if e.is_transient() => {
                    let wait = backoff.next().ok_or_else(|| FlowerError::Transport {
                        call: "pull-messages".into(),
                        msg: format!("SuperLink unreachable for longer than max_wait: {e}"),
                    })?;
                    self.note(&format!("{e}; retrying in {:.1} s", wait.as_secs_f64()));
                    sleep_unless(stop, wait);
                }
                Err(e) => {
                    // a message that could not be received or answered: it
                    // is dropped (the model untouched), the node goes on
                    self.note(&format!("message dropped: {e}"));
                    summary.errors += 1;
                }
            }
        }
        hb_stop.store(true, Ordering::Relaxed);
        if let Some(h) = hb.take() {
            let _ = h.join();
        }
        let _ = client.deactivate_node(node_id);
        if self_registered {
            let _ = client.unregister_node(node_id);
        }
        Ok(summary)
    }

    fn note(&self, s: &str) {
        if self.opts.progress {
            eprintln!("[{}] {s}", self.site.name);
        }
    }

    /// Registers (when self-registering) and activates, retrying transient
    /// errors with back-off.
    fn join(
        &self,
        client: &FleetClient,
        self_registered: bool,
        stop: &AtomicBool,
    ) -> Result<u64, FlowerError> {
        let mut backoff = Backoff::new(self.opts.max_backoff, self.opts.max_wait);
        loop {
            let attempt = (|| {
                if self_registered {
                    match client.register_node() {
                        Ok(_) => {}
                        // already registered (a rejoin after a lost heartbeat)
                        Err(FlowerError::Status { status: 409, .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                client.activate_node(self.cfg.node.heartbeat_interval)
            })();
            match attempt {
                Ok(id) => {
                    self.note(&format!(
                        "joined the SuperLink at {} as node {id}",
                        self.opts.superlink
                    ));
                    return Ok(id);
                }
                Err(e) if e.is_transient() && !stop.load(Ordering::Relaxed) => {
                    let wait = backoff.next().ok_or_else(|| FlowerError::Transport {
                        call: "activate-node".into(),
                        msg: format!("SuperLink unreachable for longer than max_wait: {e}"),
                    })?;
                    self.note(&format!("{e}; retrying in {:.1} s", wait.as_secs_f64()));
                    sleep_unless(stop, wait);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Pulls one message and answers it; `Ok(false)` when there was none.
    fn step(
        &mut self,
        client: &FleetClient,
        node_id: u64,
        summary: &mut NodeSummary,
    ) -> Result<bool, FlowerError> {
        let resp = client.pull_messages(node_id)?;
        let (Some(msg), Some(tree)) = (
            resp.messages_list.into_iter().next(),
            resp.message_object_trees.into_iter().next(),
        ) else {
            return Ok(false);
        };
        let md = msg
            .metadata
            .ok_or_else(|| FlowerError::Content("a pulled message without metadata".into()))?;
        check_tree(&tree)?;
        if tree.object_id != md.message_id {
            return Err(FlowerError::Content(format!(
                "message {}: its object tree's root is {}",
                md.message_id, tree.object_id
            )));
        }
        let objects = pull_objects(client, node_id, md.run_id, &tree)?;
        let inflated = inflate_message(&md.message_id, &objects)?;
        client.confirm_message_received(node_id, md.run_id, &md.message_id)?;
        drop(objects);
        let t0 = Instant::now();
        let (reply, outcome) = self.reply(&inflated);
        let seconds = t0.elapsed().as_secs_f64();
        match &outcome {
            Ok(()) if inflated.metadata.message_type.starts_with("train") => summary.trained += 1,
            Ok(()) => summary.evaluated += 1,
            Err(_) => summary.errors += 1,
        }
        summary.messages += 1;
        self.note(&match &outcome {
            Ok(()) => format!(
                "run {} answered `{}` in {seconds:.1} s",
                md.run_id, inflated.metadata.message_type
            ),
            Err(e) => format!("run {} answered with an error: {e}", md.run_id),
        });
        push_reply(client, node_id, &reply, seconds)?;
        Ok(true)
    }
}

/// Pulls every object of `tree`, checking each against its ID and the
/// total against [`MAX_MESSAGE_BYTES`].
fn pull_objects(
    client: &FleetClient,
    node_id: u64,
    run_id: u64,
    tree: &proto::ObjectTree,
) -> Result<HashMap<String, Vec<u8>>, FlowerError> {
    let mut objects = HashMap::new();
    let mut total = 0usize;
    for id in post_order(tree) {
        let started = Instant::now();
        let content = loop {
            let r = client.pull_object(node_id, run_id, &id)?;
            if !r.object_found {
                return Err(FlowerError::Content(format!(
                    "object {id} of the message is unknown to the SuperLink"
                )));
            }
            if r.object_available {
                break r.object_content;
            }
            if started.elapsed() > Duration::from_secs(300) {
                return Err(FlowerError::Content(format!(
                    "object {id} not available after 300 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let real = object_id(&content);
        if real != id {
            return Err(FlowerError::Content(format!(
                "pulled object {id} hashes to {real}"
            )));
        }
        total += content.len();
        if total > MAX_MESSAGE_BYTES {
            return Err(FlowerError::Content(format!(
                "the message's objects exceed {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        objects.insert(id, content);
    }
    Ok(objects)
}

/// Pushes `reply`: the message (content left out) with its object tree,
/// then the objects the SuperLink asks for, children first.
fn push_reply(
    client: &FleetClient,
    node_id: u64,
    reply: &FlowerMessage,
    runtime: f64,
) -> Result<(), FlowerError> {
    let d = deflate_message(reply);
    let mut md = reply.metadata.clone();
    md.message_id = d.root.clone();
    let msg = proto::Message {
        metadata: Some(md),
        content: reply.content.as_ref().map(|_| proto::RecordDict::default()),
        error: reply.error.clone(),
    };
    let r = client.push_messages(&proto::PushMessagesRequest {
        node: Some(proto::Node { node_id }),
        messages_list: vec![msg],
        message_object_trees: vec![d.tree.clone()],
        clientapp_runtime_list: vec![runtime],
    })?;
    let wanted: HashSet<String> = r.objects_to_push.into_iter().collect();
    for id in post_order(&d.tree) {
        if wanted.contains(&id) {
            let content = d.objects.get(&id).cloned().unwrap_or_default();
            client.push_object(node_id, reply.metadata.run_id, &r.session_id, &id, content)?;
        }
    }
    Ok(())
}

fn spawn_heartbeat(
    client: FleetClient,
    node_id: u64,
    interval: f64,
    stop: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        // Flower's nodes beat at 0.8 x the promised interval
        let period = Duration::from_secs_f64(interval * 0.8);
        let mut next = Instant::now() + period;
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next {
                match client.heartbeat(node_id, interval) {
                    Ok(true) => {}
                    Ok(false) => lost.store(true, Ordering::Relaxed),
                    Err(e) if e.is_unknown_node() => lost.store(true, Ordering::Relaxed),
                    Err(_) => {} // unreachable now; the pull loop backs off
                }
                next = Instant::now() + period;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
    }
}

/// Exponential back-off from 0.5 s, doubling up to `max`, with a deadline.
struct Backoff {
    next: Duration,
    max: Duration,
    since: Option<Instant>,
    max_wait: Option<Duration>,
}

impl Backoff {
    fn new(max: Duration, max_wait: Option<Duration>) -> Self {
        Backoff {
            next: Duration::from_millis(500),
            max,
            since: None,
            max_wait,
        }
    }
    fn reset(&mut self) {
        self.next = Duration::from_millis(500);
        self.since = None;
    }
    /// The next pause, or `None` past the deadline.
    fn next(&mut self) -> Option<Duration> {
        let since = *self.since.get_or_insert_with(Instant::now);
        if self.max_wait.is_some_and(|w| since.elapsed() > w) {
            return None;
        }
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(2), None);
        let seq: Vec<u128> = (0..5).map(|_| b.next().unwrap().as_millis()).collect();
        assert_eq!(seq, vec![500, 1000, 2000, 2000, 2000]);
        b.reset();
        assert_eq!(b.next().unwrap().as_millis(), 500);
        let mut d = Backoff::new(Duration::from_secs(2), Some(Duration::from_millis(200)));
        assert!(d.next().is_some());
        std::thread::sleep(Duration::from_millis(250));
        assert!(d.next().is_none(), "past the deadline");
    }
}
