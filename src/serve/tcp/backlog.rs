//! [`Metered`]: a connection's reader that tells the runtime how far behind its input it is,
//! so that beats waiting for a busy server are not taken for the agents' silence. Two ways:
//! - the socket's buffer: reads that fill the whole buffer they are given mean more is
//!   waiting (`vigil_actors::lag::Backlog`), for as long as that lasts;
//! - the scheduler's queue: a reader that found nothing registers a waker that notes when its
//!   input woke it, and holds the input from then ([`vigil_actors::InputHold`]) until the
//!   task runs and reads it: with 1,000 connections on two threads, a woken task can queue
//!   behind hundreds of others, and a deadline must not pass meanwhile for want of a beat
//!   that only waits to be read.
//!
//! It also keeps its connection's [`Applied`] up to date: the deadline wheel asks it whether
//! the input has been applied up to a deadline before that deadline passes.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;
use vigil_actors::lag::Backlog;
use vigil_actors::{InputHold, Runtime};

use super::applied::Applied;

/// Being behind by less than this is the ordinary pace of reading, not worth a report (the
/// lag monitor's threshold is larger still).
const REPORTED: Duration = Duration::from_millis(10);

/// Where a reader's backlog goes.
pub(crate) trait BacklogSink: Send + Sync {
    fn behind(&self, by: Duration);
    /// The reader's input is held from now until the hold is dropped.
    fn hold(&self) -> InputHold;
}

impl BacklogSink for Runtime {
    fn behind(&self, by: Duration) {
        self.observe_backlog(by);
    }

    fn hold(&self) -> InputHold {
        self.hold_input()
    }
}

/// Reads `inner`, measuring how long it has been behind its input.
pub(crate) struct Metered<R> {
    inner: R,
    backlog: Backlog,
    /// Where the measure goes: nowhere until the connection is an agent's (a client that
    /// floods before its `hello`, or a monitor, does not stretch the fleet's deadlines).
    sink: Option<Arc<dyn BacklogSink>>,
    /// After a read that found nothing: the waker the input wakes, which notes when.
    waiting: Option<Arc<WakeStamp>>,
    /// How far the input has been applied.
    applied: Arc<Applied>,
}

impl<R> Drop for Metered<R> {
    fn drop(&mut self) {
        self.applied.closed();
    }
}

/// The task's waker, when the input first woke it, and the input held since.
struct WakeStamp {
    task: Waker,
    sink: Option<Arc<dyn BacklogSink>>,
    woken: Mutex<Option<(Instant, InputHold)>>,
}

impl Wake for WakeStamp {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        {
            let mut woken = self.woken.lock();
            if woken.is_none() {
                let hold = self
                    .sink
                    .as_ref()
                    .map_or_else(InputHold::none, |s| s.hold());
                *woken = Some((Instant::now(), hold));
            }
        }
        self.task.wake_by_ref();
    }
}

impl<R> Metered<R> {
    /// Reads `inner`, whose input is `applied`, reporting to nobody yet.
    pub(crate) fn new(inner: R, applied: Arc<Applied>) -> Self {
        Metered {
            inner,
            backlog: Backlog::default(),
            sink: None,
            waiting: None,
            applied,
        }
    }

    /// Reports from now on to `sink`.
    pub(crate) fn report_to(&mut self, sink: Arc<dyn BacklogSink>) {
        self.sink = Some(sink);
    }

    fn report(&self, behind: Duration) {
        if let (true, Some(sink)) = (behind >= REPORTED, &self.sink) {
            sink.behind(behind);
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Metered<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.applied.reading();
        let (before, room) = (buf.filled().len(), buf.remaining());
        // How long the task took to run after its input woke it (and the input held since
        // is let go: it is being read).
        let queued = self
            .waiting
            .take()
            .and_then(|w| w.woken.lock().take())
            .map_or(Duration::ZERO, |(at, _held)| {
                Instant::now().saturating_duration_since(at)
            });
        let mut r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if r.is_pending() {
            // Nothing waiting: wait again through a waker that notes when the input comes (a
            // second poll with nothing ready only registers it).
            let stamp = Arc::new(WakeStamp {
                task: cx.waker().clone(),
                sink: self.sink.clone(),
                woken: Mutex::new(None),
            });
            let waker = Waker::from(stamp.clone());
            r = Pin::new(&mut self.inner).poll_read(&mut Context::from_waker(&waker), buf);
            if r.is_pending() {
                self.waiting = Some(stamp);
            }
        }
        let now = Instant::now();
        let behind = match &r {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                self.backlog.read(read > 0 && read == room, now)
            }
            Poll::Ready(Err(_)) => Duration::ZERO,
            Poll::Pending => {
                // Every frame read before was handled (a read is made only then); whether the
                // socket is empty the kernel says (a Pending read may not have asked it).
                self.applied.waiting(now);
                self.backlog.caught_up(now)
            }
        };
        self.report(behind.max(queued));
        r
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use tokio::io::AsyncReadExt;

    use super::*;

    /// Input that has `n` bytes waiting (`Some(n)`) or nothing (`None`) at each read; it
    /// keeps the waker of a read that found nothing, as a socket does.
    struct Input(VecDeque<Option<usize>>, Arc<Mutex<Option<Waker>>>);

    impl Input {
        fn new(script: impl Into<VecDeque<Option<usize>>>) -> Self {
            Input(script.into(), Arc::default())
        }
    }

    impl AsyncRead for Input {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if self.0.front() == Some(&None) {
                // Nothing waiting, until the script's next read.
                *self.1.lock() = Some(cx.waker().clone());
                self.0.pop_front();
                return Poll::Pending;
            }
            match self.0.pop_front().flatten() {
                Some(n) => {
                    let n = n.min(buf.remaining());
                    buf.put_slice(&vec![b'x'; n]);
                    Poll::Ready(Ok(()))
                }
                None => {
                    *self.1.lock() = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }
    }

    #[derive(Default)]
    struct Reports(Mutex<Vec<Duration>>);

    fn metered<R>(input: R, sink: Arc<dyn BacklogSink>) -> Metered<R> {
        let mut m = Metered::new(input, Applied::new());
        m.report_to(sink);
        m
    }

    impl BacklogSink for Reports {
        fn behind(&self, by: Duration) {
            self.0.lock().push(by);
        }

        fn hold(&self) -> InputHold {
            InputHold::none()
        }
    }

    /// One read into a 100-byte buffer, `now_or_never` (a pending read reads nothing).
    fn read_one<R: AsyncRead + Unpin>(r: &mut R) -> usize {
        use futures::FutureExt;
        let mut buf = [0u8; 100];
        r.read(&mut buf)
            .now_or_never()
            .map_or(0, |n| n.unwrap_or(0))
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stays_behind_its_input_reports_for_how_long() {
        let reports = Arc::new(Reports::default());
        // Full reads for 300 ms (the server busy, the socket's buffer filling), a partial one,
        // then nothing waiting.
        let input = Input::new([Some(100), Some(100), Some(100), Some(40), None, None]);
        let mut r = metered(input, reports.clone());
        let ms = Duration::from_millis;
        assert_eq!(read_one(&mut r), 100);
        tokio::time::advance(ms(150)).await;
        assert_eq!(read_one(&mut r), 100);
        tokio::time::advance(ms(150)).await;
        assert_eq!(read_one(&mut r), 100);
        tokio::time::advance(ms(5)).await;
        assert_eq!(read_one(&mut r), 40);
        assert_eq!(*reports.0.lock(), vec![ms(150), ms(300), ms(305)]);
        // Caught up: an idle connection is not behind, however long it stays idle.
        tokio::time::advance(ms(5_000)).await;
        assert_eq!(read_one(&mut r), 0);
        assert_eq!(reports.0.lock().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_buffer_filled_exactly_then_an_empty_socket_is_no_backlog() {
        let reports = Arc::new(Reports::default());
        let mut r = metered(
            Input::new([Some(100), None, None, Some(10)]),
            reports.clone(),
        );
        assert_eq!(read_one(&mut r), 100);
        assert_eq!(read_one(&mut r), 0, "nothing waiting: caught up at once");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(read_one(&mut r), 10);
        assert_eq!(*reports.0.lock(), Vec::<Duration>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_runs_late_after_its_input_woke_it_reports_the_wait() {
        let reports = Arc::new(Reports::default());
        let input = Input::new([None, None, Some(10), None, None]);
        let socket = input.1.clone();
        let mut r = metered(input, reports.clone());
        let ms = Duration::from_millis;
        assert_eq!(read_one(&mut r), 0);
        // Idle for a while: that is no backlog.
        tokio::time::advance(ms(120)).await;
        // The input comes and wakes the task, which runs 80 ms later.
        socket.lock().take().expect("a waker").wake();
        tokio::time::advance(ms(80)).await;
        assert_eq!(read_one(&mut r), 10);
        assert_eq!(*reports.0.lock(), vec![ms(80)]);
        // Woken and run at once: nothing to report.
        assert_eq!(read_one(&mut r), 0);
        socket.lock().take().expect("a waker").wake();
        assert_eq!(read_one(&mut r), 0);
        assert_eq!(reports.0.lock().len(), 1);
    }

    /// How the runtime learns of the 700 ms its agent's beat waits.
    #[derive(PartialEq)]
    enum Told {
        /// It is not told.
        Nothing,
        /// The reader measures its backlog as it reads.
        Reads,
        /// The connection holds its input (as while it makes a registration) and reads
        /// nothing meanwhile.
        Held,
        /// The input wakes the reader's task, which runs only 700 ms later (queued behind
        /// others): nothing is read, so nothing is measured, before it runs.
        Woken,
    }

    /// An agent beats every 500 ms (interval 1 s); from 900 ms on, the server reads its
    /// connection behind the input for 700 ms (the beats wait in the socket's buffer), or
    /// does not read it at all, then applies the waiting beat; the agent beats on. The
    /// transitions the runtime recorded.
    async fn a_backlog_of_700_ms(told: Told) -> usize {
        use vigil_actors::{
            AdminRequest, AdminResponse, AgentId, Beat, EventBody, MemStore, Registration,
            RuntimeConfig,
        };
        let rt = Arc::new(
            Runtime::start(RuntimeConfig::default(), MemStore::new())
                .await
                .expect("a runtime"),
        );
        let id = AgentId::new("a").expect("an id");
        let agent = rt
            .register(Registration::new(id).heartbeat_interval(Duration::from_secs(1)))
            .await
            .expect("registered");
        let ms = Duration::from_millis;
        for _ in 0..4 {
            tokio::time::sleep(ms(500)).await;
            agent.heartbeat(Beat::healthy()).expect("a beat");
        }
        // Behind from here: every read fills its buffer, every 10 ms, for 700 ms; or no read
        // while the input is held.
        tokio::time::sleep(ms(900)).await;
        if told == Told::Held {
            let _held = rt.hold_input();
            tokio::time::sleep(ms(700)).await;
        } else if told == Told::Woken {
            let input = Input::new([None, None, Some(100)]);
            let socket = input.1.clone();
            let mut reader = metered(input, rt.clone());
            assert_eq!(read_one(&mut reader), 0, "idle, waiting for its input");
            socket.lock().take().expect("a waker").wake();
            tokio::time::sleep(ms(700)).await;
            assert_eq!(read_one(&mut reader), 100);
        } else {
            let sink: Arc<dyn BacklogSink> = match told {
                Told::Reads => rt.clone(),
                _ => Arc::new(Reports::default()),
            };
            let mut reader = metered(Input::new(vec![Some(100); 71]), sink);
            for _ in 0..70 {
                read_one(&mut reader);
                tokio::time::sleep(ms(10)).await;
            }
            read_one(&mut reader);
        }
        agent
            .heartbeat(Beat::healthy())
            .expect("the beat that waited");
        for _ in 0..6 {
            tokio::time::sleep(ms(500)).await;
            agent.heartbeat(Beat::healthy()).expect("a beat");
        }
        let events = rt
            .admin(AdminRequest::Events {
                id: None,
                since: Some(0),
                limit: Some(usize::MAX),
                latest: false,
            })
            .await
            .expect("the log");
        let AdminResponse::Events(events) = events else {
            panic!("not events: {events:?}");
        };
        rt.shutdown_shared().await.expect("stopped");
        events
            .iter()
            .filter(|e| matches!(e.body, EventBody::Transition { .. }))
            .count()
    }

    #[tokio::test(start_paused = true)]
    async fn beats_waiting_behind_a_backlog_are_not_taken_for_silence() {
        assert_eq!(a_backlog_of_700_ms(Told::Reads).await, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn beats_held_unread_are_not_taken_for_silence() {
        assert_eq!(a_backlog_of_700_ms(Told::Held).await, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn beats_whose_reader_waits_to_run_are_not_taken_for_silence() {
        assert_eq!(a_backlog_of_700_ms(Told::Woken).await, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn unmeasured_the_same_backlog_blames_the_agent() {
        // The control: the scenario above is one that degrades the agent, then recovers it.
        assert_eq!(a_backlog_of_700_ms(Told::Nothing).await, 2);
    }
}
