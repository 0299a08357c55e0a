//! The strategies: random policies, inputs, gaps between them, and where a run starts.

use super::*;

pub(crate) fn policy_strategy() -> impl Strategy<Value = Policy> {
    let thresholds = (1u32..=3).prop_flat_map(|d| (Just(d), d..=5u32));
    let restart_grace = prop_oneof![
        3 => Just(None),
        1 => (0u64..=20_000).prop_map(|m| Some(ms(m))),
    ];
    (
        1_000u64..=10_000,
        thresholds,
        1u32..=3,
        0u64..=2_000,
        any::<bool>(),
        restart_grace,
    )
        .prop_map(
            |(interval, (degraded_after, offline_after), recovery, grace, off, restart_grace)| {
                Policy {
                    heartbeat_interval: ms(interval),
                    degraded_after,
                    offline_after,
                    recovery,
                    grace: ms(grace),
                    on_disconnect: if off {
                        OnDisconnect::Offline
                    } else {
                        OnDisconnect::Keep
                    },
                    restart_grace,
                }
            },
        )
}

pub(crate) fn reported_strategy() -> impl Strategy<Value = Reported> {
    prop_oneof![
        4 => Just(Reported::Healthy),
        1 => Just(Reported::Degraded),
        1 => Just(Reported::Unhealthy),
    ]
}

pub(crate) fn status_strategy() -> impl Strategy<Value = Status> {
    prop::sample::select(Status::ALL.to_vec())
}

pub(crate) fn input_strategy() -> impl Strategy<Value = Input> {
    prop_oneof![
        12 => reported_strategy().prop_map(Input::Heartbeat),
        2 => Just(Input::Disconnected),
        2 => status_strategy().prop_map(Input::SetStatus),
        2 => any::<bool>().prop_map(Input::Maintenance),
        1 => prop_oneof![Just(Reason::Deregistered), Just(Reason::Evicted)].prop_map(Input::Leave),
        1 => Just(Input::Register),
    ]
}

/// Time before an input, relative to the previous input.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Gap {
    Ms(u64),
    /// `interval + grace + delta` ms: right on the edge of a beat counting as late.
    BeatEdge(i64),
}

impl Gap {
    pub(crate) fn resolve(self, p: &Policy) -> Duration {
        match self {
            Gap::Ms(m) => ms(m),
            Gap::BeatEdge(delta) => {
                let base = (p.heartbeat_interval + p.grace).as_millis() as i64;
                ms((base + delta).max(0) as u64)
            }
        }
    }
}

pub(crate) fn gap_strategy() -> impl Strategy<Value = Gap> {
    prop_oneof![
        6 => (0u64..=12_000).prop_map(Gap::Ms),
        3 => (-2i64..=2).prop_map(Gap::BeatEdge),
        1 => (12_000u64..=60_000).prop_map(Gap::Ms),
    ]
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Start {
    Registered,
    Restored(Status, Reported),
}

pub(crate) fn start_strategy() -> impl Strategy<Value = Start> {
    prop_oneof![
        3 => Just(Start::Registered),
        1 => (status_strategy(), reported_strategy()).prop_map(|(s, r)| Start::Restored(s, r)),
    ]
}
