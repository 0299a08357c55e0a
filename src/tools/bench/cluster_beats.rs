//! The heartbeat phase of `vigil bench cluster`: one `vigil simulate` per node, each beating
//! its own agents on its node at once, and a monitor on one node counting the transitions of
//! those agents while their generator beats them: any transition is a false one, unless the
//! generator's own record shows it sent the agent's beats late.

use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use super::cluster::ClusterBench;
use crate::tools::simulate::{LateGap, SenderGaps, Verdict};

/// Heartbeats on every node at once.
#[derive(Debug, Serialize)]
pub struct Beats {
    /// Nodes beaten on.
    pub nodes: usize,
    /// Agents beating on each node.
    pub agents_per_node: usize,
    /// Heartbeats per second the generators sent over the measured window, summed over the
    /// nodes.
    pub heartbeats_per_sec: f64,
    /// Transitions of the beating agents decided after the warm-up and before their
    /// generator stopped, not explained by its own late beats (must be 0).
    pub false_transitions: usize,
    /// Transitions of those agents before it: the generator beats none of its agents before
    /// it has registered them all, so the first ones may go quiet for longer than their
    /// interval while the others register.
    pub ramp_transitions: usize,
    /// Transitions over the window that the generator's own gaps explain (it sent an agent's
    /// beats late, `vigil simulate`'s `late`): not the server's doing.
    pub sender_late: usize,
    /// The first false transitions' events, to say what went wrong when there are any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub false_examples: Vec<Value>,
}

/// Beats `args.beating` agents on each of `nodes` (one generator each) and counts, from the
/// events `rx` receives, the transitions of those agents until the generators stop.
pub(super) fn beats(
    args: &ClusterBench,
    nodes: &[&str],
    rx: &mpsc::Receiver<(Instant, Value)>,
) -> anyhow::Result<Beats> {
    let exe = std::env::current_exe().context("finding the vigil binary")?;
    let warmup = Duration::from_secs(2);
    let run = warmup + args.beat_window + Duration::from_secs(1);
    let spawned = Instant::now();
    let mut children = Vec::new();
    for (i, addr) in nodes.iter().enumerate() {
        let out = std::env::temp_dir().join(format!(
            "vigil-bench-cluster-beats-{}-{i}.json",
            std::process::id()
        ));
        let child = Command::new(&exe)
            .arg("simulate")
            .args(["--connect", addr])
            .args(["--agents", &args.beating.to_string()])
            .args(["--connections", "8"])
            .args([
                "--interval",
                &format!("{}ms", args.beat_interval.as_millis()),
            ])
            .args(["--duration", &format!("{}ms", run.as_millis())])
            .args(["--measure-from", &format!("{}ms", warmup.as_millis())])
            .args(["--prefix", &format!("hb{i}")])
            .arg("--quiet")
            .arg("--json")
            .arg(&out)
            .env("RUST_LOG", "warn")
            .spawn()
            .context("starting a load generator (vigil simulate)")?;
        children.push((child, out));
    }
    let mut heartbeats_per_sec = 0.0;
    // By generator: when its window starts (its agents all registered, and the warm-up
    // past), when it stopped beating (Unix ms), and its own gaps.
    let mut generators = Vec::new();
    for (mut child, out) in children {
        let status = child.wait().context("waiting for a load generator")?;
        anyhow::ensure!(status.success(), "a load generator failed: {status}");
        let summary: Value = serde_json::from_slice(
            &std::fs::read(&out).with_context(|| format!("reading {}", out.display()))?,
        )?;
        let _ = std::fs::remove_file(&out);
        heartbeats_per_sec += summary["beats_per_sec"].as_f64().unwrap_or(0.0);
        let registered = Duration::from_secs_f64(summary["register_secs"].as_f64().unwrap_or(0.0));
        let stopped_ms = summary["stopped_ms"]
            .as_i64()
            .context("the generator's summary has no stopped_ms")?;
        let late: Vec<LateGap> =
            serde_json::from_value(summary["late"].clone()).context("the generator's late gaps")?;
        // A connection the server dropped, or an agent it evicted, would be silent by the
        // server's doing and yet recorded as the generator's own gap: none may happen.
        for k in ["errors", "reconnects", "evicted"] {
            anyhow::ensure!(
                summary[k].as_u64() == Some(0),
                "a load generator had {} {k}",
                summary[k]
            );
        }
        generators.push((
            spawned + registered + warmup,
            stopped_ms,
            SenderGaps::new(late),
        ));
    }
    let deadline_ms = args.beat_interval.as_millis() as i64;
    // Every event decided before its generator stopped. A generator's agents go quiet when it
    // stops: their transitions decided after that are not false ones. Those still on their
    // way (from the other node) are waited for, two seconds.
    let (mut false_transitions, mut ramp_transitions, mut sender_late) = (0, 0, 0);
    let mut registrations = 0;
    let mut false_examples = Vec::new();
    let until = Instant::now() + Duration::from_secs(2);
    let events = std::iter::from_fn(|| {
        rx.recv_timeout(until.saturating_duration_since(Instant::now()))
            .ok()
    });
    for (arrived, e) in events {
        let agent = e["agent"].as_str().unwrap_or_default();
        let Some((window, stopped_ms, gaps)) = agent
            .strip_prefix("hb")
            .and_then(|rest| rest.split('-').next()?.parse::<usize>().ok())
            .and_then(|i| generators.get(i))
        else {
            continue;
        };
        if e["event"] == "registered" {
            registrations += 1;
            continue;
        }
        if e["event"] != "transition" {
            continue;
        }
        // (A transition whose time cannot be read counts as false: the bench shows it.)
        let decided_ms = e["at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis());
        match gaps.judge(agent, decided_ms, *stopped_ms, deadline_ms) {
            Verdict::AfterStop => {}
            _ if arrived < *window => ramp_transitions += 1,
            Verdict::SenderLate => sender_late += 1,
            Verdict::False => {
                false_transitions += 1;
                if false_examples.len() < 10 {
                    false_examples.push(e);
                }
            }
        }
    }
    // The monitor heard every registration: it listened all along, and a count of 0 false
    // transitions is one.
    anyhow::ensure!(
        registrations == nodes.len() * args.beating,
        "the monitor saw {registrations} of the {} registrations of the beating agents",
        nodes.len() * args.beating
    );
    Ok(Beats {
        nodes: nodes.len(),
        agents_per_node: args.beating,
        heartbeats_per_sec,
        false_transitions,
        ramp_transitions,
        sender_late,
        false_examples,
    })
}
