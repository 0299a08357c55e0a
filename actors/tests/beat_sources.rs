//! A deadline waits for the agent's own input: while its connection has not applied what it
//! received by the deadline, no beat is taken as missing (`AgentHandle::attach_source`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use parking_lot::Mutex;
use tokio::time::{sleep, Instant};
use vigil_actors::lag::BeatSource;
use vigil_actors::*;

/// A connection as the wheel sees it: caught up (`None`), or behind since an instant (it has
/// applied nothing that came after).
#[derive(Debug, Default)]
struct Input {
    behind_since: Mutex<Option<Instant>>,
}

impl Input {
    fn fall_behind(&self) {
        *self.behind_since.lock() = Some(Instant::now());
    }

    fn catch_up(&self) {
        *self.behind_since.lock() = None;
    }
}

impl BeatSource for Input {
    fn applied_through(&self, at: Instant) -> bool {
        self.behind_since.lock().is_none_or(|since| at <= since)
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn transitions(events: &[Event]) -> Vec<(String, Status)> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Transition { to, .. } => Some((e.agent.as_ref()?.to_string(), *to)),
            _ => None,
        })
        .collect()
}

/// An agent beats every 500 ms (1 s interval); then its connection falls behind for 3 s: one
/// beat reached it on time and waits there unread, until the connection catches up and
/// applies it. Another agent, on a connection that keeps up, beats throughout.
async fn connection_behind(attached: bool) -> Vec<Event> {
    let (rt, _) = start(config()).await;
    let slow = rt.register(Registration::new(id("slow"))).await.unwrap();
    let steady = rt.register(Registration::new(id("steady"))).await.unwrap();
    let input = Arc::new(Input::default());
    if attached {
        slow.attach_source(input.clone());
        steady.attach_source(Arc::new(Input::default()));
    }
    for _ in 0..5 {
        sleep(ms(500)).await;
        slow.heartbeat(Beat::healthy()).unwrap();
        steady.heartbeat(Beat::healthy()).unwrap();
    }
    sleep(ms(400)).await;
    input.fall_behind();
    for _ in 0..6 {
        sleep(ms(500)).await;
        steady.heartbeat(Beat::healthy()).unwrap();
    }
    // Caught up: the beat that waited is applied, and the agent goes on beating.
    slow.heartbeat(Beat::healthy()).unwrap();
    input.catch_up();
    for _ in 0..4 {
        sleep(ms(500)).await;
        slow.heartbeat(Beat::healthy()).unwrap();
        steady.heartbeat(Beat::healthy()).unwrap();
    }
    let events = all_events(&rt).await;
    rt.shutdown().await.unwrap();
    events
}

#[tokio::test(start_paused = true)]
async fn a_deadline_waits_while_the_agents_connection_is_behind() {
    let events = connection_behind(true).await;
    assert_eq!(transitions(&events), vec![], "{events:#?}");
}

#[tokio::test(start_paused = true)]
async fn without_a_source_the_same_backlog_blames_the_agent() {
    // The control: the scenario above is one that does cause transitions.
    let events = connection_behind(false).await;
    let slow = |to| ("slow".to_string(), to);
    assert_eq!(
        transitions(&events),
        vec![
            slow(Status::Degraded),
            slow(Status::Offline),
            slow(Status::Online)
        ],
        "{events:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_agent_on_a_connection_that_keeps_up_is_degraded_on_time() {
    let (rt, _) = start(config()).await;
    let mut sub = live(&rt).await;
    let agent = rt.register(Registration::new(id("quiet"))).await.unwrap();
    agent.attach_source(Arc::new(Input::default()));
    sleep(ms(500)).await;
    agent.heartbeat(Beat::healthy()).unwrap();
    let last = Instant::now();
    let (_, from, to, _) = next_transition(&mut sub).await;
    let after = last.elapsed();
    assert_eq!((from, to), (Status::Online, Status::Degraded));
    // Its deadline, 1 s after the beat, and the wheel's millisecond: nothing waited.
    assert!(after >= ms(1000) && after <= ms(1002), "{after:?}");
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_connection_behind_for_longer_than_max_slack_no_longer_vouches() {
    let (rt, _) = start(config()).await;
    let mut sub = live(&rt).await;
    let agent = rt.register(Registration::new(id("stuck"))).await.unwrap();
    let input = Arc::new(Input::default());
    agent.attach_source(input.clone());
    sleep(ms(500)).await;
    agent.heartbeat(Beat::healthy()).unwrap();
    let last = Instant::now();
    input.fall_behind();
    let (_, from, to, _) = next_transition(&mut sub).await;
    let after = last.elapsed();
    assert_eq!((from, to), (Status::Online, Status::Degraded));
    let max_slack = LagConfig::default().max_slack;
    assert!(
        // Its deadline, plus `max_slack`, plus at most the wheel's last wait between asks.
        after >= ms(1000) + max_slack && after <= ms(1300) + max_slack,
        "{after:?}"
    );
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_source_of_an_earlier_registration_is_not_asked() {
    let (rt, _) = start(config()).await;
    let mut sub = live(&rt).await;
    let first = rt.register(Registration::new(id("again"))).await.unwrap();
    let stale = Arc::new(Input::default());
    first.attach_source(stale.clone());
    stale.fall_behind();
    // Registered again (a takeover): its deadlines are the new registration's alone.
    let again = rt.register(Registration::new(id("again"))).await.unwrap();
    again.heartbeat(Beat::healthy()).unwrap();
    let last = Instant::now();
    first.attach_source(stale);
    let (_, from, to, _) = next_transition(&mut sub).await;
    let after = last.elapsed();
    assert_eq!((from, to), (Status::Online, Status::Degraded));
    assert!(after <= ms(1002), "{after:?}");
    rt.shutdown().await.unwrap();
}
