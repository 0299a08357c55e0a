//! Stopping: agents stopped, every pending event and a full checkpoint written.

use std::sync::Arc;
use std::time::Duration;

use super::{Runtime, RuntimeError};
use crate::fleet::FleetMsg;

impl Runtime {
    /// Stops the runtime: sinks save their cursors, agent actors stop, every pending event is
    /// written and a full checkpoint taken, then the store is closed. An error means the registry
    /// did not finish writing.
    pub async fn shutdown(self) -> Result<(), RuntimeError> {
        let drained = self.stop_and_drain().await;
        for t in self.actor_tasks {
            let _ = t.await;
        }
        self.store.close().await;
        drained
    }

    /// [`Runtime::shutdown`] for a runtime that may still be shared (a listener's last task
    /// may hold it): every pending event is written and checkpointed all the same; only the
    /// wait for the actors' tasks is skipped when others still hold it.
    pub async fn shutdown_shared(self: Arc<Self>) -> Result<(), RuntimeError> {
        match Arc::try_unwrap(self) {
            Ok(rt) => rt.shutdown().await,
            Err(rt) => {
                let drained = rt.stop_and_drain().await;
                rt.store.close().await;
                drained
            }
        }
    }

    pub(super) async fn stop_and_drain(&self) -> Result<(), RuntimeError> {
        // Sinks first: each saves its cursor, and resumes from it after a restart.
        for s in self.sinks.lock().await.iter_mut() {
            s.stop().await;
        }
        for t in &self.tasks {
            t.abort();
        }
        let _ = self
            .fleet
            .call(FleetMsg::StopAll, Some(self.call_timeout))
            .await;
        let drained = self.registry.drain(Duration::from_secs(600)).await;
        self.fleet.stop(None);
        self.registry.stop();
        self.broadcaster.stop(None);
        match drained {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(e.into()),
            _ => Err(RuntimeError::Unavailable(
                "the registry did not finish writing".into(),
            )),
        }
    }
}
