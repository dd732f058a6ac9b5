//! `medseg-federated`: federated training across sites that each labelled
//! different classes, simulated in one process from a config file, or with
//! each site a node of a real Flower federation.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use medseg_federated::flower::{Node, NodeConfig, NodeIdentity, NodeOptions, Tls};
use medseg_federated::simulation::{split_overrides, FederationConfig, Simulation};
use medseg_federated::{AggregatorRegistry, LocalSite};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Federated training for medseg.
///
/// A federation config (`configs/federated/`) names a base learner config,
/// the sites (each with its own manifests and overrides), the aggregation
/// strategy (FedAvg, FedProx, FedBN, FedAdam, FedYogi, SegViz) and the
/// rounds. Sites with partial labels say which classes each case annotates
/// (`annotated_classes`); the marginal and exclusion losses use them. With
/// `node`, a site joins a Flower federation (flwr 1.42; docs/federation.md).
#[derive(Parser)]
#[command(name = "medseg-federated", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a federation in this process: each round a seeded sample of
    /// sites (`fraction`, `min_sites`) trains `local_iterations` steps from
    /// the global weights, some drop out (`dropout`), the strategy
    /// aggregates the rest. Writes rounds.csv, rounds.png,
    /// global.safetensors and model.safetensors (one multi-organ network,
    /// for medseg-infer) to federation.output_dir. The phantom federation
    /// is generated first when the base config's `[dataset.generate]` asks
    /// for it.
    Simulate {
        /// Federation config (TOML).
        config: PathBuf,
        /// Override a key (repeatable): `federation.*` keys change the
        /// federation file (e.g. `federation.rounds=5`), any other key
        /// every site's learner config (e.g. `training.lr=0.001`).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Print nothing per round.
        #[arg(long)]
        quiet: bool,
        /// Device of every site: `cpu`, `cuda` or `cuda:N`.
        #[arg(long)]
        device: Option<String>,
    },
    /// Join a Flower federation as a node: register with the SuperLink,
    /// answer its `train` and `evaluate` messages with medseg, keep the
    /// site-local arrays (FedBN's norms, SegViz's heads) at the site.
    /// Speaks the Fleet API of flwr 1.42 (protobuf over HTTPS, or HTTP
    /// with `--insecure`).
    Node {
        /// The SuperLink's Fleet API, HOST:PORT (flwr 1.42 serves it on
        /// the SuperLink's HTTP port, 8000 by default).
        #[arg(long)]
        superlink: String,
        /// Plain HTTP, for a SuperLink started with `--insecure`.
        #[arg(long, conflicts_with = "root_certificates")]
        insecure: bool,
        /// PEM file of the CA certificates that signed the SuperLink's
        /// certificate (default: the public roots).
        #[arg(long)]
        root_certificates: Option<PathBuf>,
        /// The node config (TOML: `[node]` and `[site]`, see
        /// federation/sites/).
        #[arg(long)]
        config: PathBuf,
        /// Override a key (repeatable): `node.*` or `site.*` keys change
        /// the node file, any other key the site's learner config.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// PKCS#8 PEM private key (P-256) of a node registered with the
        /// SuperLink beforehand (`flwr supernode register`, for a
        /// SuperLink with `--enable-supernode-auth`); without it the node
        /// makes a key and registers itself.
        #[arg(long)]
        auth_key: Option<PathBuf>,
        /// Stop after answering this many messages.
        #[arg(long)]
        max_messages: Option<usize>,
        /// Give up when the SuperLink stays unreachable this many seconds.
        #[arg(long)]
        max_wait: Option<f64>,
        /// Device: `cpu`, `cuda` or `cuda:N`.
        #[arg(long)]
        device: Option<String>,
        /// Print nothing per message.
        #[arg(long)]
        quiet: bool,
    },
    /// Write the arrays a node shares, as the ServerApp's initial arrays
    /// (safetensors): the site's network at its seed, local arrays left
    /// out.
    Init {
        /// The node config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Where to write the arrays.
        #[arg(long)]
        out: PathBuf,
        /// Override a key (repeatable), as for `node`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

/// The site of a node config, ready to train.
fn build_node(
    config: &Path,
    set: &[String],
    device: Option<&str>,
    opts: NodeOptions,
) -> Result<Node> {
    let (node_set, site_set): (Vec<String>, Vec<String>) = set.iter().cloned().partition(|o| {
        let k = o.trim_start();
        k.starts_with("node.") || k.starts_with("site.")
    });
    let cfg = NodeConfig::load(config, &node_set)
        .with_context(|| format!("loading {}", config.display()))?;
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let mut c = cfg.site_config(&site_set, &cwd)?;
    if let Some(d) = device {
        c.training.device = d.to_string();
    }
    medseg_cli::ensure_data(&c)?;
    let site = LocalSite::new(
        &cfg.site.name,
        c,
        &cfg.node.learner,
        cfg.node.keep_optimizer,
        cfg.node.partial_labels,
        medseg_cli::registries(),
    )?;
    Ok(Node::new(
        cfg,
        site,
        &AggregatorRegistry::with_builtins(),
        opts,
    )?)
}

fn main() -> Result<()> {
    // large tensor buffers: keep freed memory in the heap (docs/performance.md)
    medseg_core::runtime::tune_allocator();
    match Cli::parse().command {
        Command::Simulate {
            config,
            set,
            quiet,
            device,
        } => {
            let (fed_set, site_set) = split_overrides(&set);
            let cfg = FederationConfig::load(&config, &fed_set)
                .with_context(|| format!("loading {}", config.display()))?;
            let cwd = std::env::current_dir().context("reading the current directory")?;
            let mut site_cfgs = Vec::new();
            for k in 0..cfg.sites.len() {
                let mut c = cfg.site_config(k, &site_set, &cwd)?;
                if let Some(d) = &device {
                    c.training.device = d.clone();
                }
                medseg_cli::ensure_data(&c)?;
                site_cfgs.push(c);
            }
            let mut sim = Simulation::new(
                &cfg,
                site_cfgs,
                &medseg_cli::registries,
                &AggregatorRegistry::with_builtins(),
            )
            .with_context(|| format!("setting up the federation of {}", config.display()))?;
            sim.progress = !quiet;
            let summary = sim.run()?;
            println!("{}: {summary}", cfg.federation.strategy);
            println!("final model: {}", summary.export_note);
            Ok(())
        }
        Command::Node {
            superlink,
            insecure,
            root_certificates,
            config,
            set,
            auth_key,
            max_messages,
            max_wait,
            device,
            quiet,
        } => {
            let mut opts = NodeOptions::new(superlink);
            opts.tls = match (insecure, root_certificates) {
                (true, _) => Tls::Insecure,
                (false, Some(p)) => Tls::RootCertificates(p),
                (false, None) => Tls::PublicRoots,
            };
            opts.identity = auth_key
                .as_deref()
                .map(NodeIdentity::from_pem_file)
                .transpose()?;
            opts.max_messages = max_messages;
            opts.max_wait = max_wait.map(Duration::from_secs_f64);
            opts.progress = !quiet;
            let mut node = build_node(&config, &set, device.as_deref(), opts)?;
            static STOP: AtomicBool = AtomicBool::new(false);
            ctrlc_stop(&STOP);
            let s = node.run(&STOP)?;
            println!(
                "{}: {} messages ({} train, {} evaluate, {} errors), {} rejoins",
                node.site().name,
                s.messages,
                s.trained,
                s.evaluated,
                s.errors,
                s.rejoins
            );
            Ok(())
        }
        Command::Init { config, out, set } => {
            let node = build_node(&config, &set, None, NodeOptions::new(""))?;
            let w = node.shared_weights()?;
            w.save(&out)?;
            println!(
                "{} shared arrays ({} values) -> {}",
                w.len(),
                w.num_values(),
                out.display()
            );
            Ok(())
        }
    }
}

/// Sets `stop` on SIGINT or SIGTERM, so that the node deactivates before
/// it exits.
fn ctrlc_stop(stop: &'static AtomicBool) {
    #[cfg(unix)]
    {
        extern "C" fn on_signal(_: i32) {
            STOP_FLAG.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        static STOP_FLAG: AtomicBool = AtomicBool::new(false);
        extern "C" {
            fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
        }
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            signal(2, on_signal);
            signal(15, on_signal);
        }
        std::thread::spawn(move || loop {
            if STOP_FLAG.load(std::sync::atomic::Ordering::SeqCst) {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        });
    }
}
