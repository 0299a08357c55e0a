//! The `vigil` command.

use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use tracing::{info, warn};
use vigil::config::{Config, LogFormat};
use vigil::core::Runtime;
use vigil::tools::bench::{self, detect::CoreBench};

/// The allocator: a server allocating per frame and per event spent a fifth of its CPU in
/// the system's `malloc` and `free` (docs/decisions.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Supervision runtime for fleets of agents"
)]
struct Cli {
    /// Configuration file (every key has a default).
    #[arg(long, global = true, env = "VIGIL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the supervision runtime (the default). Stops, draining and writing a last
    /// checkpoint, on Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Benchmark scenarios. Without one, runs every scenario in turn (each in a process of
    /// its own): `vigil bench --quick` is the CI's run, with small sizes.
    Bench {
        /// Small sizes, for CI (with no scenario named).
        #[arg(long)]
        quick: bool,
        /// Where every scenario's JSON goes (with no scenario named).
        #[arg(long)]
        json_dir: Option<PathBuf>,
        #[command(subcommand)]
        scenario: Option<BenchCmd>,
    },
    /// A crash-test workload: agents on the configured store, then a storm of transitions;
    /// prints every delivered event as a JSON line.
    #[command(hide = true)]
    Storm(vigil::tools::storm::StormArgs),
    /// A fleet of simulated agents over TCP, with failure injection (also a load generator).
    Simulate(vigil::tools::simulate::SimulateArgs),
    /// Operate on agents over the admin role: list, get, events, evict, status, maintenance,
    /// health, stats.
    Agents(vigil::cli::agents::AgentsArgs),
    /// The outbound channels (admin role): list, dead-letters, replay.
    Sinks(vigil::cli::sinks::SinksArgs),
    /// A kind's heartbeat policy (admin role): set.
    Policy(vigil::cli::policy::PolicyArgs),
    /// Follow the fleet's events live (role monitor); resumes without gaps after a
    /// disconnection.
    Watch(vigil::cli::watch::WatchArgs),
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Shell completions for `vigil`, on stdout (e.g. `vigil completions bash >
    /// /usr/share/bash-completion/completions/vigil`).
    Completions {
        /// The shell: bash, zsh, fish (or elvish, powershell).
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The manual page (roff), on stdout (`vigil man | man -l -`); with `--dir`, one page
    /// per command written there (vigil.1, vigil-serve.1, ...).
    Man {
        /// Write every command's page into this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Flags of `vigil serve`, over the configuration (`[server]`, `[store]` and `[log]`).
#[derive(clap::Args, Default)]
struct ServeArgs {
    /// The agents' TCP listener (`[server] agent_listen`).
    #[arg(long, value_name = "ADDR")]
    agent_listen: Option<std::net::SocketAddr>,
    /// The HTTP listener (`[server] http_listen`).
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<std::net::SocketAddr>,
    /// The store (`[store] url`): surrealkv://PATH, mem://, ws://host:port.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// The shape of the log on stderr (`[log] format`).
    #[arg(long, value_name = "FORMAT", value_enum)]
    log_format: Option<LogFormat>,
}

impl ServeArgs {
    /// The flags over the loaded configuration, validated again (a flag may open a listener
    /// beyond loopback).
    fn apply(self, mut config: Config) -> anyhow::Result<Config> {
        if let Some(f) = self.log_format {
            config.log.format = f;
        }
        if let Some(a) = self.agent_listen {
            config.server.agent_listen = a;
        }
        if let Some(a) = self.http_listen {
            config.server.http_listen = a;
        }
        if let Some(url) = self.store {
            config.store.url = url;
        }
        config
            .validate()
            .context("checking the configuration with the flags")?;
        Ok(config)
    }
}

#[derive(Subcommand)]
enum BenchCmd {
    /// N in-process agents heartbeating; K stop at once: the delay from each one's true
    /// deadline to a subscriber seeing degraded and offline, spurious transitions, memory per
    /// agent. (`core` is its former name.)
    #[command(alias = "core")]
    Detect(CoreBench),
    /// Durable events/s and commit latency of the segmented log against segment size.
    Store(vigil::tools::bench::store::StoreBench),
    /// A storm of N offline transitions: time until all are durable and delivered.
    Storm(vigil::tools::bench::store::FleetBench),
    /// Restore time and RSS for N persisted agents; transitions caused by a restart.
    Restart(vigil::tools::bench::store::FleetBench),
    /// Heartbeats/s over loopback TCP (vigil simulate as the load), CPU of each side, and
    /// detection lateness under that load.
    Ingest(vigil::tools::bench::ingest::IngestBench),
    /// M monitors (TCP and WebSocket) while E transitions/s happen: delivery delay, memory
    /// per subscriber.
    Fanout(vigil::tools::bench::fanout::FanoutBench),
    /// One gapless log shared by 1, 2, 3 … writers on a SurrealDB server (the cluster's
    /// stream): events/s, lost heads, append latency.
    SharedLog(vigil::tools::bench::shared_log::SharedLogBench),
    /// Three nodes on one SurrealDB server beside one node on SurrealKV: durable events/s,
    /// cross-node delivery, and a node killed while its agents beat.
    Cluster(vigil::tools::bench::cluster::ClusterBench),
    /// RSS per supervised agent at several fleet sizes (10k, 100k, 1M), each in a fresh
    /// process.
    Memory(vigil::tools::bench::memory::MemoryBench),
    /// One size of `bench memory` (run by it).
    #[command(hide = true)]
    MemoryOne(vigil::tools::bench::memory::MemoryOne),
    /// The monitors' side of `bench fanout` (run by it).
    #[command(hide = true)]
    FanoutMonitors(vigil::tools::bench::fanout_monitors::FanoutMonitors),
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Load and validate the configuration, then print it.
    Check,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The clients (`agents`, `watch`) do not read the server's configuration.
    let config = || Config::load(cli.config.as_deref()).context("loading configuration");
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs::default()));
    // The server's log takes the shape its configuration asks for, so the configuration is
    // read first (an error in it is the one thing said before the log exists, on stderr).
    let command = match command {
        Command::Serve(args) => {
            let config = args.apply(config()?)?;
            vigil::cli::logs::init(config.log.format)?;
            return serve(config);
        }
        other => other,
    };
    vigil::cli::logs::init(LogFormat::Text)?;
    match command {
        Command::Serve(_) => unreachable!("`vigil serve` returned above"),
        Command::Bench {
            quick,
            json_dir,
            scenario: None,
        } => bench::run_all(quick, json_dir),
        Command::Bench {
            scenario: Some(scenario),
            ..
        } => match scenario {
            BenchCmd::Detect(args) => bench::detect::run_core(args),
            BenchCmd::Memory(args) => vigil::tools::bench::memory::run(args),
            BenchCmd::MemoryOne(args) => vigil::tools::bench::memory::run_one(args),
            BenchCmd::Store(args) => vigil::tools::bench::store::run_store(args),
            BenchCmd::Storm(args) => vigil::tools::bench::store::run_storm(args),
            BenchCmd::Restart(args) => vigil::tools::bench::restart::run_restart(args),
            BenchCmd::Ingest(args) => vigil::tools::bench::ingest::run(args),
            BenchCmd::Fanout(args) => vigil::tools::bench::fanout::run(args),
            BenchCmd::SharedLog(args) => vigil::tools::bench::shared_log::run(args),
            BenchCmd::Cluster(args) => vigil::tools::bench::cluster::run(args),
            BenchCmd::FanoutMonitors(args) => {
                vigil::tools::bench::fanout_monitors::run_monitors(args)
            }
        },
        Command::Storm(args) => vigil::tools::storm::run(config()?, args),
        Command::Simulate(args) => vigil::tools::simulate::run(args),
        Command::Agents(args) => client_exit(vigil::cli::agents::run(args)),
        Command::Sinks(args) => client_exit(vigil::cli::sinks::run(args)),
        Command::Policy(args) => client_exit(vigil::cli::policy::run(args)),
        Command::Watch(args) => client_exit(vigil::cli::watch::run(args)),
        Command::Config {
            cmd: ConfigCmd::Check,
        } => {
            // Tokens, webhook URLs and secrets stay out of terminals and logs.
            println!("{:#?}", config()?.redacted());
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "vigil", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir: None } => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .context("writing the manual page"),
        Command::Man { dir: Some(dir) } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("writing the manual pages into {}", dir.display()))
        }
    }
}

/// The operator clients end with one line that says what went wrong (the error and its
/// causes, no backtrace) and exit status 1.
fn client_exit(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

fn serve(config: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let mut rejoins = 0u64;
        loop {
            let Some(reason) = serve_once(&config, rejoins).await? else {
                return Ok(());
            };
            if config.cluster.node_id.is_none() {
                anyhow::bail!("stopped: {reason}");
            }
            // A node fenced by the others (they adopted its agents) comes back empty-handed,
            // with a new epoch, once its old lease has lapsed.
            rejoins += 1;
            warn!(%reason, rejoins, "this node was fenced; it joins the cluster again with a new epoch");
        }
    })
}

/// Serves until a stop signal (`None`) or until this process loses the store (why);
/// `rejoins`: how often a cluster node was fenced and joined again before.
async fn serve_once(config: &Config, rejoins: u64) -> anyhow::Result<Option<String>> {
    let started = std::time::Instant::now();
    let (runtime, held, node_store) = match &config.cluster.node_id {
        None => {
            let store = vigil::serve::store::open(&config.store)
                .await
                .with_context(|| format!("opening the store at {}", config.store.url))?;
            let runtime = Runtime::start(config.runtime(), store.clone())
                .await
                .context("starting the supervision runtime")?;
            (runtime, store, None)
        }
        Some(node) => {
            let store = vigil::serve::store::open_node(&config.store, &config.cluster, node)
                .await
                .with_context(|| {
                    format!("joining the cluster at {} as node {node}", config.store.url)
                })?;
            let runtime = Runtime::start_node(config.runtime(), store.clone())
                .await
                .context("starting the supervision runtime as a cluster node")?;
            let held: std::sync::Arc<dyn vigil::core::Store> = store.clone();
            (runtime, held, Some(store))
        }
    };
    vigil::outbound::start(&runtime, &config.sinks)
        .await
        .context("starting the sinks")?;
    let runtime = std::sync::Arc::new(runtime);
    let mut server_config = config.server_config();
    if let (Some(cert), Some(key)) = (&config.server.tls_cert, &config.server.tls_key) {
        server_config.tls = Some(
            vigil::serve::tls::tls_config(cert, key).context("setting up TLS on the listeners")?,
        );
    }
    let server_tls = server_config.tls.clone();
    let hub = vigil::serve::hub::Hub::new(runtime.clone(), config.broadcast.stats_interval);
    hub.rejoins
        .store(rejoins, std::sync::atomic::Ordering::Relaxed);
    let server = vigil::serve::tcp::Server::start_with(
        config.server.agent_listen,
        hub.clone(),
        server_config,
    )
    .await
    .with_context(|| format!("listening on {}", config.server.agent_listen))?;
    if let Some(store) = &node_store {
        // Where the other nodes send admin writes about this node's agents.
        let address = match &config.cluster.advertise {
            Some(a) => a.clone(),
            None => server.local_addr().to_string(),
        };
        store
            .advertise(&address)
            .await
            .context("advertising this node's address")?;
        let tls = match (&config.server.tls_cert, &config.cluster.peer_ca) {
            (Some(_), Some(ca)) => {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("reading [cluster] peer_ca {}", ca.display()))?;
                Some(
                    vigil::client::ClientTls::with_root_pem(&pem, "")
                        .with_context(|| format!("[cluster] peer_ca {}", ca.display()))?,
                )
            }
            _ => None,
        };
        hub.set_peers(vigil::serve::hub::Peers {
            token: config.auth.admin_tokens.first().cloned(),
            tls,
            name: config.cluster.peer_name.clone(),
        });
    }
    let mut http_config = config.http_config();
    http_config.tls = server_tls;
    let http =
        vigil::serve::http::HttpServer::start(config.server.http_listen, hub.clone(), http_config)
            .await
            .with_context(|| format!("listening on {}", config.server.http_listen))?;
    // Listened for before the ready line: a SIGTERM sent as soon as vigil says it is up
    // would otherwise find no handler and end the process undrained.
    let mut stop = StopSignals::listen().context("listening for stop signals")?;
    info!(
        store = %config.store.url,
        node = config.cluster.node_id.as_deref().unwrap_or("-"),
        agents = %server.local_addr(),
        http = %http.local_addr(),
        tls = config.server.tls_cert.is_some(),
        start_ms = started.elapsed().as_millis() as u64,
        "vigil is supervising; Ctrl-C or SIGTERM stops it"
    );
    let lost = tokio::select! {
        signal = stop.recv() => {
            info!(signal, "shutting down");
            None
        }
        // Another process took the store over: this one has written nothing since, and
        // stops (its connections close, its agents reconnect to the holder).
        reason = held.lost() => Some(reason),
    };
    http.stop().await;
    server.stop().await;
    drop(hub);
    // Every pending event is written even if a listener's last task still holds the
    // runtime.
    let stopped = runtime.shutdown_shared().await;
    match lost {
        Some(reason) => Ok(Some(reason)),
        None => stopped.context("shutting down").map(|()| None),
    }
}

/// Ctrl-C (SIGINT) and, on Unix, SIGTERM (how systemd and Kubernetes stop a service); either
/// one stops vigil the same way: drain, then a last checkpoint. Each is caught from
/// [`StopSignals::listen`] on.
struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn listen() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The first stop signal's name.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            // Registered at the first poll: there is no earlier way off Unix.
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
