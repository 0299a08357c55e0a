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
    pub(crate) fn spawn(
        cfg: SinkConfig,
        sink: Arc<dyn Sink>,
        source: Arc<dyn LogSource>,
        store: Arc<dyn Store>,
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
        let task = tokio::spawn(runner.run());
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

/// Where a sink's dead letters are saved: `/` is not allowed in a sink's name, so no sink's
/// cursor can share the key.
pub(super) fn dead_key(name: &str) -> String {
    format!("{name}/dead")
}
