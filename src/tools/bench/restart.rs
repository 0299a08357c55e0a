//! `vigil bench restart`: N agents persisted; time and RSS to restore them, next to the time
//! merely to spawn N ractor actors here; then every agent reconnects over loopback TCP (`vigil
//! simulate` in a separate process), registers again and beats through the restart grace:
//! the time until all are registered again, and the transitions caused (should be 0). A
//! transition decided once the generator stopped, or that its own late beats explain, is not
//! the restart's doing and is counted apart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use vigil_actors::{EventBody, Policy, SubscribeOptions, SubscriptionItem};

use super::store::{
    bench_policy, command, open_runtime, register_all, runtime, scratch, FleetBench,
};
use crate::serve::tcp::{Server, ServerConfig};
use crate::tools::bench::{rss_bytes, write_json, Machine};
use crate::tools::simulate::{LateGap, SenderGaps, Verdict};

/// What `vigil bench restart` measured, as its JSON records it.
#[derive(Debug, Serialize)]
pub struct RestartResult {
    /// The machine it ran on.
    pub machine: Machine,
    /// The command line it ran with.
    pub command: String,
    /// Agents persisted, restored and registered again.
    pub agents: usize,
    /// Registering every agent before the restart, in seconds.
    pub register_secs: f64,
    /// The shutdown (its final checkpoint), in seconds.
    pub shutdown_secs: f64,
    /// Opening the store and restoring every agent, in seconds.
    pub restore_secs: f64,
    /// Memory the restore added to the process, in bytes.
    pub rss_after_restore_bytes: u64,
    /// Spawning as many actors that do nothing, in seconds (to compare with `restore_secs`).
    pub spawn_only_secs: f64,
    /// The restart grace the restored agents got, in seconds.
    pub restart_grace_secs: f64,
    /// From the start of the load generator until every agent was registered again over TCP.
    pub reregister_secs: f64,
    /// Status changes of agents while they beat on time (the bench fails unless 0).
    pub transitions_after_restart: usize,
    /// Status changes the generator's own late beats explain.
    pub sender_late_transitions: usize,
    /// Status changes decided once the generator had stopped (its agents silent by then).
    pub transitions_after_stop: usize,
    /// `registered` events after the restart (one per agent that reconnected).
    pub reregistered: usize,
}

/// Runs `vigil bench restart`: persist the agents, restart, reconnect them all over TCP; fails
/// if a transition happened or an agent did not register again.
pub fn run_restart(args: FleetBench) -> anyhow::Result<()> {
    let dir = scratch(&args.dir, "restart")?;
    let url = format!("surrealkv://{}/db", dir.display());
    let tokio_rt = runtime()?;
    // Phase 1: persist N online agents (registration events + the shutdown checkpoint); a
    // long interval keeps them online until the shutdown, as a beating fleet would be.
    let (register_secs, shutdown_secs) = tokio_rt.block_on(async {
        let long = Policy {
            heartbeat_interval: Duration::from_secs(3600),
            ..bench_policy()
        };
        let rt = open_runtime(&url, long).await?;
        let t = Instant::now();
        let handles = register_all(&rt, args.agents).await?;
        let register_secs = t.elapsed().as_secs_f64();
        drop(handles);
        let t = Instant::now();
        rt.shutdown().await?;
        anyhow::Ok((register_secs, t.elapsed().as_secs_f64()))
    })?;
    drop(tokio_rt);
    // Phase 2, in a fresh async runtime: restore.
    let tokio_rt = runtime()?;
    let r = tokio_rt.block_on(async {
        let rss0 = rss_bytes();
        let t = Instant::now();
        let policy = Policy {
            heartbeat_interval: Duration::from_millis(args.interval_ms),
            restart_grace: args.restart_grace_ms.map(Duration::from_millis),
            ..bench_policy()
        };
        let grace = policy.restart_grace();
        let deadline_ms = (policy.heartbeat_interval + policy.grace).as_millis() as i64;
        let rt = open_runtime(&url, policy).await?;
        let restore_secs = t.elapsed().as_secs_f64();
        let rss = rss_bytes().saturating_sub(rss0);
        let mut sub = rt.subscribe(SubscribeOptions::default()).await?;
        // Every agent reconnects over TCP within the restart grace, registers again (the path
        // a real restart takes) and beats through the grace.
        let rt = Arc::new(rt);
        let server = Server::start(
            ([127, 0, 0, 1], 0).into(),
            rt.clone(),
            ServerConfig {
                rate_limit: 0,
                max_connections: 1000,
                max_agents_per_connection: args.agents,
                heartbeat_interval: Duration::from_millis(args.interval_ms),
                ..crate::config::Config::default().server_config()
            },
        )
        .await?;
        let out = std::env::temp_dir().join(format!("vigil-restart-{}.json", std::process::id()));
        let exe = std::env::current_exe().context("finding the vigil binary")?;
        let t = Instant::now();
        let status = tokio::process::Command::new(exe)
            .arg("simulate")
            .args(["--connect", &server.local_addr().to_string()])
            .args(["--agents", &args.agents.to_string()])
            .args([
                "--connections",
                &args.agents.div_ceil(1000).clamp(1, 100).to_string(),
            ])
            .args(["--interval", &format!("{}ms", args.interval_ms)])
            .args(["--late-after", &format!("{}ms", args.interval_ms)])
            .args(["--prefix", "agent", "--kind", "bench"])
            // Agents reconnect at once, as separate processes would; their registrations
            // share group commits.
            .args(["--register-window", "500"])
            .args(["--duration", &format!("{}ms", (grace * 2).as_millis())])
            .arg("--quiet")
            .arg("--json")
            .arg(&out)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .status()
            .await
            .context("starting the load generator (vigil simulate)")?;
        anyhow::ensure!(status.success(), "the load generator failed: {status}");
        let gen: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&out).with_context(|| format!("reading {}", out.display()))?,
        )?;
        let _ = std::fs::remove_file(&out);
        anyhow::ensure!(
            gen["errors"].as_u64() == Some(0),
            "the load generator saw errors: {gen}"
        );
        let reregister_secs = gen["register_secs"].as_f64().unwrap_or(f64::NAN);
        let stopped_ms = gen["stopped_ms"]
            .as_i64()
            .context("the generator's summary has no stopped_ms")?;
        let late: Vec<LateGap> =
            serde_json::from_value(gen["late"].clone()).context("the generator's late gaps")?;
        let gaps = SenderGaps::new(late);
        eprintln!(
            "{} agents registered again over TCP in {reregister_secs:.2} s (generator ran {:.1} s)",
            args.agents,
            t.elapsed().as_secs_f64()
        );
        let (mut transitions, mut reregistered) = (0, 0);
        let (mut sender_late, mut after_stop) = (0, 0);
        let mut reasons = std::collections::BTreeMap::<String, usize>::new();
        while let Ok(Some(item)) =
            tokio::time::timeout(Duration::from_millis(200), sub.next()).await
        {
            // Only an agent's change of status counts; an alert (e.g. runtime_lagging while
            // the restore loads the CPU) is not caused to any agent, and each agent that
            // registers again gets its `registered` event.
            if let SubscriptionItem::Event(e) = item {
                match &e.body {
                    EventBody::Registered { .. } => reregistered += 1,
                    EventBody::Transition { to, reason, .. } => {
                        let Some(agent) = &e.agent else { continue };
                        let decided = Some(e.at.timestamp_millis());
                        match gaps.judge(agent.as_str(), decided, stopped_ms, deadline_ms) {
                            Verdict::AfterStop => after_stop += 1,
                            Verdict::SenderLate => sender_late += 1,
                            Verdict::False => {
                                transitions += 1;
                                *reasons.entry(format!("{to:?}/{reason:?}")).or_default() += 1;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        if !reasons.is_empty() {
            eprintln!("transitions after the restart, by status/reason: {reasons:?}");
        }
        if sender_late + after_stop > 0 {
            eprintln!(
                "not the restart's: {sender_late} transitions the generator's late beats explain, \
                 {after_stop} decided after it stopped"
            );
        }
        server.stop().await;
        rt.shutdown_shared().await?;
        anyhow::Ok((
            restore_secs,
            rss,
            transitions,
            grace.as_secs_f64(),
            reregister_secs,
            reregistered,
            (sender_late, after_stop),
        ))
    })?;
    drop(tokio_rt);
    let spawn_only_secs = runtime()?.block_on(spawn_only(args.agents))?;
    let _ = std::fs::remove_dir_all(&dir);
    let out = RestartResult {
        machine: Machine::read(),
        command: command(),
        agents: args.agents,
        register_secs,
        shutdown_secs,
        restore_secs: r.0,
        rss_after_restore_bytes: r.1,
        spawn_only_secs,
        transitions_after_restart: r.2,
        restart_grace_secs: r.3,
        reregister_secs: r.4,
        reregistered: r.5,
        sender_late_transitions: r.6 .0,
        transitions_after_stop: r.6 .1,
    };
    println!("| agents | restore | spawning {} bare actors | RSS after restore | all registered again over TCP | transitions in the grace ({:.0} s) | (register / shutdown checkpoint) |", out.agents, out.restart_grace_secs);
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {} | {:.2} s | {:.2} s | {:.0} MiB | {:.2} s ({} events) | {} | {:.1} s / {:.1} s |",
        out.agents,
        out.restore_secs,
        out.spawn_only_secs,
        out.rss_after_restore_bytes as f64 / (1 << 20) as f64,
        out.reregister_secs,
        out.reregistered,
        out.transitions_after_restart,
        out.register_secs,
        out.shutdown_secs
    );
    write_json(&args.json, &out)?;
    anyhow::ensure!(
        out.transitions_after_restart == 0,
        "a restart within the grace caused {} transitions",
        out.transitions_after_restart
    );
    anyhow::ensure!(
        out.reregistered == out.agents,
        "{} of {} agents registered again",
        out.reregistered,
        out.agents
    );
    Ok(())
}

/// Time to spawn N ractor actors that do nothing, for comparison with a restore.
async fn spawn_only(n: usize) -> anyhow::Result<f64> {
    use ractor::{Actor, ActorProcessingErr, ActorRef};
    struct Idle;
    impl Actor for Idle {
        type Msg = ();
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }
    let t = Instant::now();
    let mut refs = Vec::with_capacity(n);
    for _ in 0..n {
        refs.push(Actor::spawn(None, Idle, ()).await?.0);
    }
    let secs = t.elapsed().as_secs_f64();
    for r in refs {
        r.stop(None);
    }
    Ok(secs)
}
