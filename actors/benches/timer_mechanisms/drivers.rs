//! The producers: paced beats for correctness, and a blast for throughput.

use super::*;

// ---------------------------------------------------------------------------------------------
// Beat drivers

/// Correctness driver: producer `p` beats agents `p, p + PRODUCERS, ...`, agent `i` at
/// `start + (k + i/N) × period` for each round `k`, and records ground truth after each beat.
///
/// Returns the driver's own lateness over the measured rounds: the largest `beat - scheduled`
/// and how many beats came later than `PACED_LEAD_NS` after their slot.
pub(crate) async fn paced(
    p: usize,
    mech: Arc<Mech>,
    judge: Arc<Judge>,
    start: u64,
    rounds: u64,
) -> (u64, u64) {
    let n = mech.len();
    let mut since_yield = 0;
    let (mut max_late, mut late_beats) = (0, 0);
    for k in 0..rounds {
        for i in (p..n).step_by(PRODUCERS) {
            let sched = start + k * PACED_PERIOD_NS + (i as u64 * PACED_PERIOD_NS) / n as u64;
            let mut at = now_ns();
            if sched > at {
                tokio::time::sleep_until(instant_at(sched)).await;
                at = now_ns();
                since_yield = 0;
            }
            mech.beat(i, at);
            judge.record_beat(i, at);
            if k >= WARMUP_ROUNDS {
                let late = at.saturating_sub(sched);
                max_late = max_late.max(late);
                late_beats += u64::from(late > PACED_LEAD_NS);
            }
            since_yield += 1;
            if since_yield >= BATCH {
                tokio::task::yield_now().await;
                since_yield = 0;
            }
        }
    }
    (max_late, late_beats)
}

/// Throughput driver: producer `p` beats its agents round-robin as fast as it can.
pub(crate) async fn blast(
    p: usize,
    mech: Arc<Mech>,
    stop: Arc<AtomicBool>,
    sent: Arc<[Padded; PRODUCERS]>,
) {
    let n = mech.len();
    if p >= n {
        return;
    }
    let via_actor = mech.via_actor();
    let handled_base = handled_total();
    let mut i = p;
    let mut count = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..BATCH {
            mech.beat(i, now_ns());
            i += PRODUCERS;
            if i >= n {
                i = p;
            }
        }
        count += BATCH as u64;
        sent[p].0.store(count, Ordering::Relaxed);
        if via_actor {
            // Keep the mailboxes bounded: wait for the actors to catch up.
            loop {
                let sent_total: u64 = sent.iter().map(|c| c.0.load(Ordering::Relaxed)).sum();
                let handled = handled_total().saturating_sub(handled_base);
                if sent_total.saturating_sub(handled) <= MAX_IN_FLIGHT
                    || stop.load(Ordering::Relaxed)
                {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        tokio::task::yield_now().await;
    }
}
