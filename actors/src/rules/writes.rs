//! When the registry writes: the flush of a group of events, and whether a checkpoint is full
//! or incremental. Pure: the registry asks, and acts on the answer.

use std::time::Duration;

use tokio::time::Instant;

/// Below this many agents, incremental checkpoints go on until they hold this many records.
pub(crate) const INCREMENTAL_MIN_ROWS: usize = 1000;
/// Records per mirror write: small, so a refresh never holds the pipeline for long.
pub(crate) const MIRROR_CHUNK: usize = 1000;

/// What to do about the events waiting to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    /// A flush is asked for already, or a write is running (its end flushes again).
    Nothing,
    /// Flush after the messages already queued, so they join this group.
    Now,
    /// Let a group gather for this long first.
    After(Duration),
}

/// Whether to ask for a flush, given whether one is asked for already, whether a write is
/// running, whether the next group is held to keep commits apart (`paced`: its wake-up is
/// scheduled, see [`commit_at`]), how many events wait and the group limit, and the linger
/// (`flush_interval`).
pub(crate) fn flush(
    queued: bool,
    running: bool,
    paced: bool,
    pending: usize,
    max_batch: usize,
    linger: Duration,
) -> Flush {
    match (queued, running, paced) {
        // The write's end, or the paced wake-up, flushes again.
        (_, true, _) => Flush::Nothing,
        // A full group goes now rather than at the end of the linger or the pace.
        (false, false, true) if pending >= max_batch => Flush::Now,
        (false, false, true) => Flush::Nothing,
        (false, false, false) if linger.is_zero() => Flush::Now,
        (false, false, false) => Flush::After(linger),
        (true, false, _) if pending >= max_batch => Flush::Now,
        (true, false, _) => Flush::Nothing,
    }
}

/// When the next group of `pending` events may be written: now (`None`) or at the instant
/// returned. Under load, group commits start at least `min_interval` apart (`[store]
/// min_commit_interval`), and the events that arrive meanwhile gather into one commit
/// instead of a stream of small ones, each paying the store's whole cost per commit. A lone
/// event is written at once: the store is idle, or its writer waits for each answer before
/// its next change, and holding it would only slow that writer down. A full group is not
/// held either.
pub(crate) fn commit_at(
    last_start: Option<Instant>,
    now: Instant,
    min_interval: Duration,
    pending: usize,
    max_batch: usize,
) -> Option<Instant> {
    let at = last_start? + min_interval;
    (now < at && pending > 1 && pending < max_batch).then_some(at)
}

/// Whether the next checkpoint replaces every record (full) or adds the changed ones: full
/// when asked for, when the stored checkpoint's size is unknown, or when the incremental
/// records would make a restore read more than twice the fleet (or [`INCREMENTAL_MIN_ROWS`]).
pub(crate) fn checkpoint_is_full(
    asked: bool,
    stored_rows: Option<usize>,
    changed: usize,
    fleet: usize,
) -> bool {
    asked || stored_rows.is_none_or(|rows| rows + changed > (2 * fleet).max(INCREMENTAL_MIN_ROWS))
}

/// The next mirror write, when the pipeline has nothing else to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mirror {
    /// Refresh up to [`MIRROR_CHUNK`] of the rows out of date.
    Chunk,
    /// The rows are up to date: mark the mirror complete as of the last checkpoint.
    MarkComplete,
    /// Nothing (the refresh is not due, or the drain's budget is spent).
    Nothing,
}

/// What the mirror needs next. Its `out_of_date` rows are refreshed after a checkpoint
/// (`due`) or, while a drain refreshes it, within the drain's budget (`in_budget`: `Some`
/// then). Once up to date while a drain waits (`draining`), it is marked complete, unless it
/// already is as of the last checkpoint (`marked`).
pub(crate) fn mirror(
    out_of_date: usize,
    due: bool,
    in_budget: Option<bool>,
    draining: bool,
    marked: bool,
) -> Mirror {
    match out_of_date {
        0 if draining && !marked => Mirror::MarkComplete,
        0 => Mirror::Nothing,
        _ if in_budget.unwrap_or(due) => Mirror::Chunk,
        _ => Mirror::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINGER: Duration = Duration::from_millis(2);
    const ZERO: Duration = Duration::ZERO;

    #[test]
    fn a_flush_is_asked_for_once_and_never_while_a_write_runs() {
        assert_eq!(
            flush(false, false, false, 1, 100, LINGER),
            Flush::After(LINGER)
        );
        assert_eq!(flush(false, false, false, 1, 100, ZERO), Flush::Now);
        assert_eq!(flush(true, false, false, 1, 100, LINGER), Flush::Nothing);
        assert_eq!(flush(false, true, false, 500, 100, LINGER), Flush::Nothing);
        assert_eq!(flush(true, true, false, 500, 100, LINGER), Flush::Nothing);
    }

    #[test]
    fn a_full_group_does_not_wait_for_the_linger() {
        assert_eq!(flush(true, false, false, 99, 100, LINGER), Flush::Nothing);
        assert_eq!(flush(true, false, false, 100, 100, LINGER), Flush::Now);
    }

    #[test]
    fn a_paced_group_waits_for_its_wake_up_unless_it_is_full() {
        assert_eq!(flush(false, false, true, 1, 100, ZERO), Flush::Nothing);
        assert_eq!(flush(false, false, true, 99, 100, LINGER), Flush::Nothing);
        assert_eq!(flush(false, false, true, 100, 100, ZERO), Flush::Now);
        assert_eq!(flush(true, false, true, 100, 100, ZERO), Flush::Now);
        assert_eq!(flush(false, true, true, 100, 100, ZERO), Flush::Nothing);
    }

    #[test]
    fn commits_start_at_least_the_interval_apart() {
        let t0 = Instant::now();
        let pace = Duration::from_millis(2);
        let ms = Duration::from_millis;
        // An idle store (no commit yet, or the last one long ago) writes at once.
        assert_eq!(commit_at(None, t0, pace, 5, 100), None);
        assert_eq!(commit_at(Some(t0), t0 + ms(2), pace, 5, 100), None);
        assert_eq!(commit_at(Some(t0), t0 + ms(5), pace, 5, 100), None);
        // Soon after a commit started, a group waits for the rest of the interval.
        assert_eq!(
            commit_at(Some(t0), t0 + ms(1), pace, 2, 100),
            Some(t0 + pace)
        );
        assert_eq!(commit_at(Some(t0), t0, pace, 99, 100), Some(t0 + pace));
        // A lone event or a full group is not held, and no interval holds nothing.
        assert_eq!(commit_at(Some(t0), t0 + ms(1), pace, 1, 100), None);
        assert_eq!(commit_at(Some(t0), t0 + ms(1), pace, 100, 100), None);
        assert_eq!(commit_at(Some(t0), t0, ZERO, 5, 100), None);
    }

    #[test]
    fn the_mirror_is_refreshed_after_a_checkpoint_and_within_a_drain_budget() {
        assert_eq!(mirror(5, true, None, false, false), Mirror::Chunk);
        assert_eq!(mirror(5, false, None, false, false), Mirror::Nothing);
        assert_eq!(mirror(5, false, Some(true), true, false), Mirror::Chunk);
        assert_eq!(mirror(5, true, Some(false), true, false), Mirror::Nothing);
        // A drain whose budget was cleared (a mirror write given up) goes by `due`.
        assert_eq!(mirror(5, true, None, true, false), Mirror::Chunk);
    }

    #[test]
    fn an_up_to_date_mirror_is_marked_complete_once_at_a_drain() {
        assert_eq!(
            mirror(0, false, Some(true), true, false),
            Mirror::MarkComplete
        );
        assert_eq!(mirror(0, false, None, true, false), Mirror::MarkComplete);
        assert_eq!(mirror(0, false, Some(true), true, true), Mirror::Nothing);
        assert_eq!(mirror(0, true, None, false, false), Mirror::Nothing);
    }

    #[test]
    fn a_checkpoint_is_full_when_asked_or_when_its_size_is_unknown() {
        assert!(checkpoint_is_full(true, Some(0), 0, 10));
        assert!(checkpoint_is_full(false, None, 0, 10));
        assert!(!checkpoint_is_full(false, Some(0), 5, 10));
    }

    #[test]
    fn incremental_records_stop_at_twice_the_fleet() {
        let fleet = 10_000;
        assert!(!checkpoint_is_full(false, Some(15_000), 5_000, fleet));
        assert!(checkpoint_is_full(false, Some(15_000), 5_001, fleet));
    }

    #[test]
    fn a_small_fleet_goes_on_incrementally_up_to_the_minimum() {
        assert!(!checkpoint_is_full(false, Some(990), 10, 3));
        assert!(checkpoint_is_full(false, Some(990), 11, 3));
    }
}
