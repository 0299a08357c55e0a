//! A running sink as the runtime holds it: its task, its control channel, its saved state.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::warn;

use super::{DeadLetter, LogSource, Runner, SavedDead, Sink, SinkConfig, SinkStatus};
use crate::store::Store;

/// A request to a sink's task.
pub(crate) enum Control {
    /// Deliver dead letters again (all, or one id); answers how many were delivered and how
    /// many are still held.
    Replay(Option<u64>, oneshot::Sender<Result<(usize, usize), String>>),
    /// The dead letters held now.
    DeadLetters(oneshot::Sender<Vec<DeadLetter>>),
}

/// A running sink.
pub(crate) struct SinkHandle {
    pub name: String,
    pub status: Arc<Mutex<SinkStatus>>,
    pub control: mpsc::Sender<Control>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl SinkHandle {
    /// Runs the sink in a task of its own; with `duty` (on a cluster node), only while it
    /// says this node delivers the sinks, and on standby otherwise.
    pub(crate) fn spawn(
        cfg: SinkConfig,
        sink: Arc<dyn Sink>,
        source: Arc<dyn LogSource>,
        store: Arc<dyn Store>,
        duty: Option<watch::Receiver<bool>>,
    ) -> Self {
        let status = Arc::new(Mutex::new(SinkStatus {
            name: cfg.name.clone(),
            kind: cfg.kind.clone(),
            state: "starting".into(),
            delivered_seq: 0,
            lag: 0,
            delivered: 0,
            consecutive_failures: 0,
            last_error: None,
            last_error_at: None,
            last_delivery_at: None,
            dead_letters: 0,
            dead_letters_dropped: 0,
        }));
        let (stop, stop_rx) = watch::channel(false);
        let (control, control_rx) = mpsc::channel(16);
        let name = cfg.name.clone();
        let runner = Runner {
            cfg,
            sink,
            source,
            store,
            status: status.clone(),
            stop: stop_rx,
            control: control_rx,
            cursor: 0,
            saved_cursor: 0,
            saved_at: tokio::time::Instant::now(),
            dead: SavedDead::default(),
        };
        let task = match duty {
            None => tokio::spawn(async move {
                runner.run().await;
            }),
            Some(duty) => tokio::spawn(on_duty(runner, duty, stop.subscribe())),
        };
        SinkHandle {
            name,
            status,
            control,
            stop,
            task: Some(task),
        }
    }

    /// Stops the task after it saves its cursor (an undelivered batch is delivered again
    /// after a restart).
    pub(crate) async fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(mut t) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut t)
                .await
                .is_err()
            {
                warn!(sink = %self.name, "sink did not stop within 5 s; aborted");
                t.abort();
            }
        }
        self.status.lock().state = "stopped".into();
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// Runs `runner` whenever `duty` says this node delivers the sinks, until `stop`: on
/// standby meanwhile (another node delivers; the saved dead letters are shown, a replay is
/// refused). A runner that ended by itself (its saved state unreadable) waits for the duty to
/// go and come back before it is run again.
async fn on_duty(
    mut runner: Runner,
    mut duty: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if runner.status.lock().state != "failed" {
            runner.status.lock().state = "standby".into();
        }
        loop {
            if *stop.borrow() {
                return;
            }
            if *duty.borrow_and_update() {
                break;
            }
            tokio::select! {
                r = duty.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
                Some(c) = runner.control.recv() => standby_answer(&runner, c).await,
            }
        }
        let (halt, halted) = watch::channel(false);
        runner.stop = halted;
        let run = runner.run();
        tokio::pin!(run);
        let mut halting = false;
        runner = loop {
            tokio::select! {
                r = &mut run => break r,
                r = duty.changed(), if !halting => {
                    if r.is_err() || !*duty.borrow() {
                        halting = true;
                        let _ = halt.send(true);
                    }
                }
                _ = stop.changed(), if !halting => {
                    halting = true;
                    let _ = halt.send(true);
                }
            }
        };
        if *stop.borrow() {
            return;
        }
        if !halting {
            // Ended by itself: not again until the duty goes and comes back.
            while *duty.borrow_and_update() {
                tokio::select! {
                    r = duty.changed() => if r.is_err() { return },
                    _ = stop.changed() => return,
                    Some(c) = runner.control.recv() => standby_answer(&runner, c).await,
                }
            }
        }
    }
}

/// Answers a request while another node delivers the sink.
async fn standby_answer(runner: &Runner, c: Control) {
    let name = &runner.cfg.name;
    match c {
        Control::DeadLetters(reply) => {
            let saved = runner.store.sink_state(&dead_key(name)).await;
            let letters = match saved.map(|t| t.map(|t| serde_json::from_str::<SavedDead>(&t))) {
                Ok(Some(Ok(d))) => d.letters,
                Ok(None) => Vec::new(),
                Ok(Some(Err(e))) => {
                    warn!(sink = %name, error = %e, "the sink's saved dead letters are unreadable");
                    Vec::new()
                }
                Err(e) => {
                    warn!(sink = %name, error = %e, "the sink's dead letters could not be read");
                    Vec::new()
                }
            };
            let _ = reply.send(letters);
        }
        Control::Replay(_, reply) => {
            let _ = reply.send(Err(format!(
                "another node of the cluster delivers sink {name} now; send the replay to it"
            )));
        }
    }
}

/// Where a sink's dead letters are saved: `/` is not allowed in a sink's name, so no sink's
/// cursor can share the key.
pub(super) fn dead_key(name: &str) -> String {
    format!("{name}/dead")
}
