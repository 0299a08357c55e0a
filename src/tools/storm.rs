//! `vigil storm`: a crash-test workload. It supervises N in-process agents on the configured
//! store; after a warm-up all but the first `keep` stop beating at once, so a storm of
//! degraded and offline transitions follows. Every event its subscriber receives is printed to
//! stdout as one JSON line, flushed, so a test that kills the process (SIGKILL) knows exactly
//! which events had been delivered — and so were durable — before it died.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use vigil_actors::{AgentId, Beat, Registration, Runtime, SubscribeOptions, SubscriptionItem};

use crate::config::Config;

/// `vigil storm`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct StormArgs {
    /// Agents to supervise.
    #[arg(long, default_value_t = 200)]
    pub agents: usize,
    /// How many of them (the first ones) keep beating through the storm.
    #[arg(long, default_value_t = 50)]
    pub keep: usize,
    /// Heartbeat period of the agents that beat.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub beat_every: Duration,
    /// How long everyone beats before the storm.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
}

/// The id of the `i`th agent (`storm-00042`).
pub fn agent_id(i: usize) -> AgentId {
    AgentId::new(format!("storm-{i:05}")).expect("generated id is valid")
}

/// Runs the storm on `config`'s store, printing each delivered event, until Ctrl-C (or a
/// kill).
pub fn run(config: Config, args: StormArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let store = crate::serve::store::open(&config.store)
            .await
            .context("opening the store")?;
        let runtime = Arc::new(Runtime::start(config.runtime(), store).await?);
        let mut sub = runtime.subscribe(SubscribeOptions::default()).await?;
        let printer = tokio::spawn(async move {
            let stdout = std::io::stdout();
            while let Some(item) = sub.next().await {
                if let SubscriptionItem::Event(e) = item {
                    let mut out = stdout.lock();
                    // A closed stdout (the reader is gone) ends the printing, not the process.
                    if serde_json::to_writer(&mut out, &*e).is_err()
                        || writeln!(out).is_err()
                        || out.flush().is_err()
                    {
                        return;
                    }
                }
            }
        });
        let mut handles = Vec::new();
        for i in 0..args.agents {
            handles.push(
                runtime
                    .register_sequenced(Registration::new(agent_id(i)))
                    .await?
                    .0,
            );
        }
        let storm = Arc::new(AtomicBool::new(false));
        let beater = {
            let storm = storm.clone();
            tokio::spawn(async move {
                loop {
                    let n = if storm.load(Ordering::SeqCst) {
                        args.keep
                    } else {
                        handles.len()
                    };
                    for h in &handles[..n.min(handles.len())] {
                        let _ = h.heartbeat(Beat::healthy());
                    }
                    tokio::time::sleep(args.beat_every).await;
                }
            })
        };
        tokio::time::sleep(args.warmup).await;
        storm.store(true, Ordering::SeqCst);
        eprintln!("storm: {} agents stop beating", args.agents - args.keep);
        // Runs until killed (or Ctrl-C).
        tokio::signal::ctrl_c().await?;
        beater.abort();
        printer.abort();
        if let Ok(rt) = Arc::try_unwrap(runtime) {
            rt.shutdown().await?;
        }
        Ok(())
    })
}
