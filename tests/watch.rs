//! `vigil::cli::watch` against a real listener: when the listener goes away and comes back while
//! the runtime keeps producing events, the watcher resumes from the last seq it showed, and
//! shows every event exactly once, in order.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use vigil::cli::watch::{watch, Start, WatchLine, WatchOptions};
use vigil::client::ClientConfig;
use vigil::serve::tcp::Server;
use vigil_actors::{AdminRequest, AgentId, MemStore, Registration, Runtime, RuntimeConfig, Status};

const WAIT: Duration = Duration::from_secs(20);

/// What the watcher reported, in order.
struct Seen {
    rx: mpsc::UnboundedReceiver<WatchLine>,
    lines: Vec<WatchLine>,
}

impl Seen {
    /// Reads lines until one satisfies `pred` (within [`WAIT`]) and returns it.
    async fn until(&mut self, what: &str, pred: impl Fn(&WatchLine) -> bool) -> WatchLine {
        loop {
            let line = tokio::time::timeout(WAIT, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}; so far: {:#?}", self.lines))
                .expect("the watcher is running");
            self.lines.push(line.clone());
            if pred(&line) {
                return line;
            }
        }
    }

    async fn until_seq(&mut self, seq: u64) {
        self.until(
            &format!("event {seq}"),
            |l| matches!(l, WatchLine::Event { seq: s, .. } if *s >= seq),
        )
        .await;
    }

    fn seqs(&self) -> Vec<u64> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                WatchLine::Event { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }
}

/// Real status changes (a transition event each), alternating so that none is a non-change.
async fn flip(rt: &Runtime, ids: &[AgentId], round: usize) {
    let status = [Status::Degraded, Status::Offline][round % 2];
    for id in ids {
        let r = rt
            .admin(AdminRequest::SetStatus {
                id: id.clone(),
                status,
                reason: None,
            })
            .await
            .expect("set_status");
        assert!(
            matches!(
                r,
                vigil_actors::AdminResponse::Changed { changed: true, .. }
            ),
            "{r:?}"
        );
    }
}

async fn last_seq(rt: &Runtime) -> u64 {
    rt.stats().await.expect("stats").registry.last_seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_resumes_after_the_listener_restarts_with_every_event_once_in_order() {
    let rt = Arc::new(
        Runtime::start(RuntimeConfig::default(), MemStore::new())
            .await
            .unwrap(),
    );
    let ids: Vec<AgentId> = (0..3)
        .map(|i| AgentId::new(format!("w{i}")).unwrap())
        .collect();
    let mut handles = Vec::new();
    for id in &ids {
        let reg = Registration::new(id.clone()).kind("worker");
        handles.push(rt.register(reg).await.unwrap());
    }
    let server = Server::start(
        ([127, 0, 0, 1], 0).into(),
        rt.clone(),
        vigil::config::Config::default().server_config(),
    )
    .await
    .unwrap();
    let addr = server.local_addr();

    let mut client = ClientConfig::new(addr.to_string());
    client.backoff_min = Duration::from_millis(20);
    client.backoff_max = Duration::from_millis(200);
    let opts = WatchOptions::new(client);
    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(async move {
        watch(&opts, move |line| match tx.send(line) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        })
        .await
    });
    let mut seen = Seen {
        rx,
        lines: Vec::new(),
    };

    // A snapshot first: the three agents, as of their registrations.
    let snapshot = seen
        .until("the snapshot", |l| matches!(l, WatchLine::Snapshot(_)))
        .await;
    let WatchLine::Snapshot(snapshot) = snapshot else {
        unreachable!()
    };
    assert_eq!(snapshot["agents"].as_array().map(Vec::len), Some(3));
    let first = snapshot["seq"].as_u64().expect("the snapshot's seq");

    // Live events.
    flip(&rt, &ids, 0).await;
    flip(&rt, &ids, 1).await;
    let before_stop = last_seq(&rt).await;
    seen.until_seq(before_stop).await;

    // The listener goes away; the watcher notices.
    server.stop().await;
    seen.until("the disconnection", |l| {
        matches!(l, WatchLine::Disconnected { .. })
    })
    .await;
    // Events the watcher cannot see live.
    for round in 2..6 {
        flip(&rt, &ids, round).await;
    }
    let while_down = last_seq(&rt).await;
    assert!(while_down >= before_stop + 12);

    // The listener comes back on the same port; the watcher resumes after the last seq it
    // showed, and the missed events come first.
    let server = Server::start(
        addr,
        rt.clone(),
        vigil::config::Config::default().server_config(),
    )
    .await
    .expect("the port is free again");
    let resumed = seen
        .until("the new subscription", |l| {
            matches!(l, WatchLine::Subscribed { .. })
        })
        .await;
    assert_eq!(
        resumed,
        WatchLine::Subscribed {
            start: Start::Since(before_stop)
        }
    );
    seen.until_seq(while_down).await;
    flip(&rt, &ids, 6).await;
    let end = last_seq(&rt).await;
    seen.until_seq(end).await;

    let want: Vec<u64> = (first + 1..=end).collect();
    assert_eq!(
        seen.seqs(),
        want,
        "every seq after the snapshot exactly once, in order"
    );
    // The watcher reconnected once it could (at least one failed attempt in between is
    // normal), and never took a snapshot again.
    let snapshots = seen
        .lines
        .iter()
        .filter(|l| matches!(l, WatchLine::Snapshot(_)))
        .count();
    assert_eq!(snapshots, 1);
    let connections = seen
        .lines
        .iter()
        .filter(|l| matches!(l, WatchLine::Connected { .. }))
        .count();
    assert_eq!(connections, 2);

    watcher.abort();
    server.stop().await;
    drop(handles);
    let rt = Arc::try_unwrap(rt)
        .ok()
        .expect("the listener released the runtime");
    rt.shutdown().await.unwrap();
}
