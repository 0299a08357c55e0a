//! `vigil bench shared-log`: what one gapless log shared by several writers costs on a
//! SurrealDB server (the cluster's stream, `docs/cluster.md`). For 1, 2, 3 … writers (each a
//! connection of its own, as each node has), every writer appends batches as fast as it can
//! for `--each`; the table gives durable events/s summed over the writers, appends/s, how many
//! attempts lost the log's head to another writer, and each append's latency. The invariant is
//! checked after every row: the log is gapless and holds every event once.
//!
//! The server is `--url ws://…`, or one this command starts from `--surreal` (default: the
//! `VIGIL_SURREAL` environment variable; `scripts/surrealdb-server --path` builds one).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use vigil_actors::store::{BatchId, SurrealOptions, SurrealStore};
use vigil_actors::{Event, Severity, Store};

use crate::tools::bench::store::{runtime, write_rows};
use crate::tools::bench::Quantiles;

/// `vigil bench shared-log`'s options.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct SharedLogBench {
    /// The SurrealDB server (`ws://host:port`); without it, one is started from `--surreal`.
    #[arg(long)]
    pub url: Option<String>,
    /// A `surreal` binary to start (in memory) when no `--url` is given.
    #[arg(long, env = "VIGIL_SURREAL")]
    pub surreal: Option<PathBuf>,
    /// Writer counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub writers: Vec<usize>,
    /// Events per append.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Time spent on each writer count.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub each: Duration,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One row: one writer count.
#[derive(Debug, Serialize)]
pub struct SharedLogRow {
    /// Writers appending at once.
    pub writers: usize,
    /// Events per append.
    pub batch: usize,
    /// Durable events per second, summed over the writers.
    pub events_per_sec: f64,
    /// Appends per second, summed over the writers.
    pub appends_per_sec: f64,
    /// Attempts that lost the head to another writer, per append.
    pub conflicts_per_append: f64,
    /// Each append's latency, retries included.
    pub append: Quantiles,
}

/// A server this command started, stopped when dropped.
pub(super) struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(super) fn start_server(bin: &PathBuf) -> anyhow::Result<(Server, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(bin)
        .args(["start", "--bind", &format!("127.0.0.1:{port}")])
        .args(["--unauthenticated", "--log", "warn", "memory"])
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the SurrealDB server did not listen within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((server, format!("ws://127.0.0.1:{port}")))
}

fn event(writer: usize, n: u64) -> Arc<Event> {
    let issue = format!("w{writer}");
    Arc::new(Event::alert(
        n,
        chrono::Utc::now(),
        Severity::Info,
        issue,
        n.to_string(),
    ))
}

/// Runs `vigil bench shared-log`.
pub fn run(args: SharedLogBench) -> anyhow::Result<()> {
    let (_server, url) = match (&args.url, &args.surreal) {
        (Some(url), _) => (None, url.clone()),
        (None, Some(bin)) => {
            let (s, url) = start_server(bin)?;
            (Some(s), url)
        }
        (None, None) => anyhow::bail!(
            "bench shared-log needs a SurrealDB server: --url ws://host:port, or --surreal / \
             VIGIL_SURREAL naming a `surreal` binary to start (scripts/surrealdb-server --path \
             builds one)"
        ),
    };
    println!("| writers | batch | events/s | appends/s | lost head per append | append p50 / p99 / max ms |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let rows = runtime()?.block_on(async {
        let mut rows = Vec::new();
        for &writers in &args.writers {
            // A database of its own per row: each starts from an empty log.
            let database = format!("bench_{}_{writers}", std::process::id());
            let mut tasks = Vec::new();
            let start = Instant::now();
            for w in 0..writers {
                let (url, database, each, batch) =
                    (url.clone(), database.clone(), args.each, args.batch);
                tasks.push(tokio::spawn(async move {
                    let opts = SurrealOptions {
                        database,
                        ..SurrealOptions::default()
                    };
                    let store = SurrealStore::open(&url, opts).await?;
                    let (mut next, mut conflicts, mut lat) = (1u64, 0u64, Vec::new());
                    while start.elapsed() < each {
                        let events: Vec<_> =
                            (next..next + batch as u64).map(|n| event(w, n)).collect();
                        let id = BatchId {
                            node: format!("w{w}"),
                            first: next,
                        };
                        let t = Instant::now();
                        let done = store.append_shared(&id, &events, false).await?;
                        lat.push(t.elapsed());
                        conflicts += u64::from(done.conflicts);
                        next += batch as u64;
                    }
                    anyhow::Ok((store, next - 1, conflicts, lat))
                }));
            }
            let (mut events, mut conflicts, mut lat, mut stores) =
                (0u64, 0u64, Vec::new(), Vec::new());
            for t in tasks {
                let (store, n, c, l) = t.await??;
                events += n;
                conflicts += c;
                lat.extend(l);
                stores.push(store);
            }
            let secs = start.elapsed().as_secs_f64();
            let reader = &stores[0];
            let head = reader.shared_head().await?;
            let log = reader.read_shared(1, usize::MAX).await?;
            let gapless = log.iter().zip(1u64..).all(|(e, want)| e.seq == want);
            anyhow::ensure!(
                head == events && log.len() as u64 == events && gapless,
                "the shared log is not gapless: head {head}, {} events read, {events} appended",
                log.len()
            );
            let appends = lat.len();
            let row = SharedLogRow {
                writers,
                batch: args.batch,
                events_per_sec: events as f64 / secs,
                appends_per_sec: appends as f64 / secs,
                conflicts_per_append: conflicts as f64 / appends.max(1) as f64,
                append: Quantiles::of(lat),
            };
            println!(
                "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} / {:.2} / {:.2} |",
                row.writers,
                row.batch,
                row.events_per_sec,
                row.appends_per_sec,
                row.conflicts_per_append,
                row.append.p50_ms,
                row.append.p99_ms,
                row.append.max_ms
            );
            for s in stores {
                s.close().await;
            }
            rows.push(row);
        }
        anyhow::Ok(rows)
    })?;
    write_rows(&args.json, &rows)
}
