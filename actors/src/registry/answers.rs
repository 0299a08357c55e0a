//! What the registry answers: callers waiting for durability, snapshots parked until their
//! seq is durable, drains, subscriptions, queries and stats.

use std::sync::atomic::Ordering;

use ractor::RpcReplyPort;

use super::stats::RegistryStats;
use super::{Query, RegistryState};
use crate::admin::{AdminError, AdminResponse};
use crate::broadcaster::{BroadcastMsg, Snapshot, Start, SubscribeOptions, Subscription};
use crate::cluster::node::Node;
use crate::model::{AgentId, AgentRecord, Status};

impl RegistryState {
    /// Answers the waiters whose events are all durable.
    pub(super) fn release_waiters(&mut self) {
        while self
            .waiters
            .front()
            .is_some_and(|(seq, _)| *seq <= self.durable_seq)
        {
            if let Some((_, w)) = self.waiters.pop_front() {
                w.answer();
            }
        }
    }

    /// Forgets answers and snapshots whose callers stopped waiting (while the store fails,
    /// they would pile up: a snapshot holds the whole fleet).
    pub(super) fn sweep_abandoned(&mut self) {
        self.waiters.retain(|(_, w)| !w.abandoned());
        self.parked.retain(|(_, _, _, reply)| !reply.is_closed());
    }

    pub(super) fn finish_drains(&mut self) {
        let result = match self.drain_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        };
        for d in self.drains.drain(..) {
            let _ = d.send(result.clone());
        }
    }

    pub(super) fn release_parked(&mut self) {
        let durable = self.durable_seq;
        let mut i = 0;
        while i < self.parked.len() {
            if self.parked[i].0 <= durable {
                let (seq, snapshot, filter, reply) = self.parked.swap_remove(i);
                let _ = self.broadcaster.cast(BroadcastMsg::Add {
                    start: Start::After(seq),
                    filter,
                    snapshot: Some(snapshot),
                    reply,
                });
            } else {
                i += 1;
            }
        }
    }

    pub(super) fn subscribe(&mut self, opts: SubscribeOptions, reply: RpcReplyPort<Subscription>) {
        if opts.snapshot && self.backpressure.refuse_write().is_some() {
            // It would wait for the store with a copy of the fleet: refused (the caller is
            // told `overloaded`).
            return;
        }
        if let Some(cluster) = &self.cluster {
            // The fleet's view: every node's agents, as of a seq the node published.
            cluster.subscribe(opts, reply);
            return;
        }
        if opts.snapshot {
            // The view reflects every event sequenced so far; it may be shown only once they
            // are all durable, and the subscriber continues right after them.
            let seq = self.next_seq - 1;
            let agents = self
                .agents
                .values()
                .filter(|e| opts.filter.matches_record(&e.record))
                .map(|e| e.view(&self.clock))
                .collect();
            let snapshot = Snapshot { seq, agents };
            self.parked.push((seq, snapshot, opts.filter, reply));
            self.release_parked();
        } else {
            let start = match opts.since {
                Some(n) => Start::After(n),
                None => Start::Live,
            };
            let _ = self.broadcaster.cast(BroadcastMsg::Add {
                start,
                filter: opts.filter,
                snapshot: None,
                reply,
            });
        }
    }

    pub(super) fn query(
        &mut self,
        q: Query,
        reply: RpcReplyPort<Result<AdminResponse, AdminError>>,
    ) {
        let own = matches!(q, Query::List { own: true, .. });
        if let Some(cluster) = self.cluster.clone().filter(|_| !own) {
            self.query_fleet(&cluster, q, reply);
            return;
        }
        match q {
            Query::List {
                kind,
                status,
                limit,
                after,
                ..
            } => {
                use std::ops::Bound;
                let lower = match &after {
                    Some(a) => Bound::Excluded(a.clone()),
                    None => Bound::Unbounded,
                };
                let list = self
                    .agents
                    .range((lower, Bound::Unbounded))
                    .map(|(_, e)| e)
                    .filter(|e| kind.as_ref().is_none_or(|k| *e.record.kind == **k))
                    .filter(|e| status.is_none_or(|s| e.record.status == s))
                    .take(limit)
                    .map(|e| e.view(&self.clock))
                    .collect();
                let _ = reply.send(Ok(AdminResponse::Agents(list)));
            }
            Query::Get(id) => {
                let r = match self.agents.get(&id) {
                    Some(e) => Ok(AdminResponse::Agent(Box::new(e.view(&self.clock)))),
                    None => Err(AdminError::UnknownAgent(id)),
                };
                let _ = reply.send(r);
            }
            Query::Events {
                id,
                since,
                limit,
                latest,
            } => {
                let known = id.as_ref().is_none_or(|i| self.agents.contains_key(i));
                self.read_events(id, known, since, limit, latest, reply);
            }
            Query::Stats => {
                let _ = reply.send(Ok(AdminResponse::Registry(self.stats())));
            }
        }
    }

    /// Reads events (of agent `id`, which the view knows when `known`) from the store, off
    /// the actor (only durable events are there).
    fn read_events(
        &self,
        id: Option<AgentId>,
        known: bool,
        since: u64,
        limit: usize,
        latest: bool,
        reply: RpcReplyPort<Result<AdminResponse, AdminError>>,
    ) {
        let refused = match &id {
            None if latest => Some(AdminError::InvalidField(
                "events: latest needs an agent id".into(),
            )),
            Some(id) if !known => Some(AdminError::UnknownAgent(id.clone())),
            _ => None,
        };
        if let Some(e) = refused {
            let _ = reply.send(Err(e));
            return;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            let r = match &id {
                Some(id) if latest => store.agent_events_latest(id, limit).await,
                Some(id) => store.agent_events(id, since, limit).await,
                None => store.read_events(since + 1, limit).await,
            };
            let _ = reply.send(
                r.map(AdminResponse::Events)
                    .map_err(|e| AdminError::Unavailable(e.to_string())),
            );
        });
    }

    /// A query on a cluster node: the whole fleet, from the node's view, with the live
    /// fields (last seen, connected, metrics) of the agents this node supervises.
    fn query_fleet(
        &mut self,
        cluster: &Node,
        q: Query,
        reply: RpcReplyPort<Result<AdminResponse, AdminError>>,
    ) {
        let live = |r: AgentRecord| match self.agents.get(&r.id) {
            Some(e) => e.view(&self.clock),
            None => r,
        };
        let answer = match q {
            Query::List {
                kind,
                status,
                limit,
                after,
                ..
            } => {
                let list = cluster.list(kind.as_deref(), status, limit, after.as_ref());
                Ok(AdminResponse::Agents(list.into_iter().map(live).collect()))
            }
            Query::Get(id) => match cluster.record(&id) {
                Some(r) => Ok(AdminResponse::Agent(Box::new(live(r)))),
                None => Err(AdminError::UnknownAgent(id)),
            },
            Query::Events {
                id,
                since,
                limit,
                latest,
            } => {
                let known = id.as_ref().is_none_or(|i| cluster.record(i).is_some());
                self.read_events(id, known, since, limit, latest, reply);
                return;
            }
            Query::Stats => Ok(AdminResponse::Registry(cluster.fleet_stats(self.stats()))),
        };
        let _ = reply.send(answer);
    }

    pub(super) fn stats(&self) -> RegistryStats {
        RegistryStats {
            agents: Status::ALL
                .iter()
                .map(|s| (*s, self.counts.get(s).copied().unwrap_or(0)))
                .collect(),
            total: self.agents.len(),
            jobs: self.jobs.counts(),
            last_seq: self.next_seq - 1,
            durable_seq: self.durable_seq,
            pending_events: self.pending.len() + self.pipeline.queued_events(),
            pending_bytes: self.pending_bytes,
            side_writes_given_up: self.side_given_up,
            queued_reports: self.backpressure.reports.queued(),
            queued_reports_peak: self.backpressure.reports.peak(),
            store_errors: self.store_errors,
            store_healthy: self.backpressure.store_ok.load(Ordering::SeqCst),
            batches: self.batches,
            by_kind: self
                .by_kind
                .iter()
                .filter(|(_, c)| c.iter().any(|n| *n > 0))
                .map(|(k, c)| {
                    let counts = Status::ALL.iter().map(|s| (*s, c[*s as usize])).collect();
                    (k.to_string(), counts)
                })
                .collect(),
            persisted: self.persisted.clone(),
            batch_latency: self.batch_latency.clone(),
        }
    }
}
