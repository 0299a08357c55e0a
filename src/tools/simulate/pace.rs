//! What the generator records of its own pace: when each agent's messages actually left, so
//! that a bench can tell a late sender from a slow server. A gap between two of an agent's
//! messages (its registration, its beats) longer than `--late-after` is the sender's: the
//! agent was silent by the generator's doing, whatever the server made of it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::Counters;

/// The most gaps a run keeps (it counts them all).
const KEPT: usize = 100_000;

/// An agent the generator left silent for longer than `--late-after`: from its message that
/// left at `from_ms` to the next, at `to_ms` (Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateGap {
    /// The agent's id.
    pub agent: String,
    /// When its message before the gap left.
    pub from_ms: i64,
    /// When its message after the gap left.
    pub to_ms: i64,
}

/// A run's gaps by agent (its summary's `late`): which transitions the sender explains.
#[derive(Debug, Default)]
pub struct SenderGaps(HashMap<String, Vec<(i64, i64)>>);

impl SenderGaps {
    /// The gaps of a summary's `late`.
    pub fn new(late: impl IntoIterator<Item = LateGap>) -> Self {
        let mut by_agent: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
        for g in late {
            by_agent
                .entry(g.agent)
                .or_default()
                .push((g.from_ms, g.to_ms));
        }
        SenderGaps(by_agent)
    }

    /// The longest of `agent`'s gaps (in milliseconds) that explains its transition decided
    /// at `at_ms` (Unix milliseconds), the agent's deadline being `deadline_ms` after a beat:
    /// the transition comes at least a deadline after the gap began and before it ended, or
    /// within a second after it (the next beat's recovery).
    pub fn explaining(&self, agent: &str, at_ms: i64, deadline_ms: i64) -> Option<i64> {
        self.0.get(agent).and_then(|gaps| {
            gaps.iter()
                .filter(|(from, to)| from + deadline_ms <= at_ms && at_ms <= to + 1_000)
                .map(|(from, to)| to - from)
                .max()
        })
    }
}

/// What a simulated agent's transition says about the server that decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Decided once the generator had stopped: its agents were silent then, truly.
    AfterStop,
    /// The generator's own gap explains it (see [`SenderGaps::explaining`]).
    SenderLate,
    /// Nothing the sender did explains it: a false transition.
    False,
}

impl SenderGaps {
    /// The verdict on `agent`'s transition decided at `decided_ms` (Unix milliseconds; `None`
    /// when its time could not be read, which counts as false), the generator having stopped
    /// sending at `stopped_ms` and the agent's deadline being `deadline_ms` after a beat.
    pub fn judge(
        &self,
        agent: &str,
        decided_ms: Option<i64>,
        stopped_ms: i64,
        deadline_ms: i64,
    ) -> Verdict {
        match decided_ms {
            Some(t) if t >= stopped_ms => Verdict::AfterStop,
            Some(t) if self.explaining(agent, t, deadline_ms).is_some() => Verdict::SenderLate,
            _ => Verdict::False,
        }
    }
}

/// One connection's record of when each of its agents' messages last left.
pub(super) struct Pace {
    /// By the agent's index on the connection; 0 before its first message.
    last_ms: Vec<i64>,
    late_ms: i64,
}

impl Pace {
    pub(super) fn new(agents: usize, late_after: std::time::Duration) -> Self {
        Pace {
            last_ms: vec![0; agents],
            late_ms: late_after.as_millis() as i64,
        }
    }

    /// The messages of agents `sent` (indices on the connection) left at `now_ms`; a gap too
    /// long since each one's last goes to `counters`, named by `id`.
    pub(super) fn sent(
        &mut self,
        sent: &[u32],
        now_ms: i64,
        id: impl Fn(u32) -> String,
        counters: &Counters,
    ) {
        for &k in sent {
            let last = std::mem::replace(&mut self.last_ms[k as usize], now_ms);
            if last > 0 && now_ms - last > self.late_ms {
                counters.late_gaps.fetch_add(1, Ordering::Relaxed);
                let mut kept = counters.late.lock();
                if kept.len() < KEPT {
                    kept.push(LateGap {
                        agent: id(k),
                        from_ms: last,
                        to_ms: now_ms,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_explains_a_transition_within_it_or_a_second_after_it() {
        let gap = |from_ms, to_ms| LateGap {
            agent: "a".into(),
            from_ms,
            to_ms,
        };
        let gaps = SenderGaps::new([gap(1_000, 4_000), gap(2_000, 3_000)]);
        // A deadline of 500 ms after a beat.
        let explaining = |agent, at| gaps.explaining(agent, at, 500);
        assert_eq!(explaining("a", 2_500), Some(3_000), "the longest");
        assert_eq!(explaining("a", 4_900), Some(3_000), "its recovery");
        assert_eq!(explaining("a", 5_100), None, "after it");
        assert_eq!(
            explaining("a", 1_400),
            None,
            "before a deadline had passed in it"
        );
        assert_eq!(explaining("a", 900), None, "before it");
        assert_eq!(explaining("b", 2_500), None, "another agent");
    }

    #[test]
    fn a_transition_is_false_unless_the_stop_or_a_gap_explains_it() {
        let gaps = SenderGaps::new([LateGap {
            agent: "a".into(),
            from_ms: 1_000,
            to_ms: 4_000,
        }]);
        let judge = |agent, at| gaps.judge(agent, at, 10_000, 500);
        assert_eq!(judge("a", Some(10_000)), Verdict::AfterStop);
        assert_eq!(judge("b", Some(12_000)), Verdict::AfterStop);
        assert_eq!(judge("a", Some(2_000)), Verdict::SenderLate);
        assert_eq!(
            judge("b", Some(2_000)),
            Verdict::False,
            "another agent's gap"
        );
        assert_eq!(judge("a", Some(9_999)), Verdict::False);
        assert_eq!(
            judge("a", None),
            Verdict::False,
            "a time that cannot be read"
        );
    }

    #[test]
    fn a_gap_longer_than_late_after_is_recorded_with_its_ends() {
        let counters = Counters::default();
        let mut pace = Pace::new(2, std::time::Duration::from_millis(1000));
        let id = |k: u32| format!("a{k}");
        pace.sent(&[0, 1], 10_000, id, &counters);
        pace.sent(&[0], 10_900, id, &counters);
        pace.sent(&[0, 1], 11_800, id, &counters);
        assert_eq!(counters.late_gaps.load(Ordering::Relaxed), 1);
        assert_eq!(
            *counters.late.lock(),
            vec![LateGap {
                agent: "a1".into(),
                from_ms: 10_000,
                to_ms: 11_800
            }]
        );
    }
}
