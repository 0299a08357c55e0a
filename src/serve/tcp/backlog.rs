//! [`Metered`]: a connection's reader that tells the runtime how far behind its input it is
//! (`vigil_actors::lag::Backlog`), so that beats waiting in the socket's buffer while the
//! server is busy are not taken for the agents' silence.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;
use vigil_actors::lag::Backlog;
use vigil_actors::Runtime;

/// Being behind by less than this is the ordinary pace of reading, not worth a report (the
/// lag monitor's threshold is larger still).
const REPORTED: Duration = Duration::from_millis(10);

/// Where a reader's backlog goes.
pub(crate) trait BacklogSink: Send + Sync {
    fn behind(&self, by: Duration);
}

impl BacklogSink for Runtime {
    fn behind(&self, by: Duration) {
        self.observe_backlog(by);
    }
}

/// Reads `inner`, measuring how long it has been behind its input.
pub(crate) struct Metered<R> {
    inner: R,
    backlog: Backlog,
    sink: Arc<dyn BacklogSink>,
}

impl<R> Metered<R> {
    pub(crate) fn new(inner: R, sink: Arc<dyn BacklogSink>) -> Self {
        Metered {
            inner,
            backlog: Backlog::default(),
            sink,
        }
    }

    fn report(&self, behind: Duration) {
        if behind >= REPORTED {
            self.sink.behind(behind);
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Metered<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let (before, room) = (buf.filled().len(), buf.remaining());
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let now = Instant::now();
        let behind = match &r {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                self.backlog.read(read > 0 && read == room, now)
            }
            Poll::Ready(Err(_)) => Duration::ZERO,
            Poll::Pending => self.backlog.caught_up(now),
        };
        self.report(behind);
        r
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use parking_lot::Mutex;
    use tokio::io::AsyncReadExt;

    use super::*;

    /// Input that has `n` bytes waiting (`Some(n)`) or nothing (`None`) at each read.
    struct Input(VecDeque<Option<usize>>);

    impl AsyncRead for Input {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            match self.0.pop_front().flatten() {
                Some(n) => {
                    let n = n.min(buf.remaining());
                    buf.put_slice(&vec![b'x'; n]);
                    Poll::Ready(Ok(()))
                }
                None => Poll::Pending,
            }
        }
    }

    #[derive(Default)]
    struct Reports(Mutex<Vec<Duration>>);

    impl BacklogSink for Reports {
        fn behind(&self, by: Duration) {
            self.0.lock().push(by);
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
        let input = Input([Some(100), Some(100), Some(100), Some(40), None].into());
        let mut r = Metered::new(input, reports.clone());
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
        let mut r = Metered::new(Input([Some(100), None, Some(10)].into()), reports.clone());
        assert_eq!(read_one(&mut r), 100);
        assert_eq!(read_one(&mut r), 0, "nothing waiting: caught up at once");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(read_one(&mut r), 10);
        assert_eq!(*reports.0.lock(), Vec::<Duration>::new());
    }

    /// An agent beats every 500 ms (interval 1 s); from 900 ms on, the server reads its
    /// connection behind the input for 700 ms (the beats wait in the socket's buffer), then
    /// applies the waiting beat; the agent beats on. The transitions the runtime recorded.
    async fn a_backlog_of_700_ms(metered: bool) -> usize {
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
        // Behind from here: every read fills its buffer, every 10 ms, for 700 ms.
        tokio::time::sleep(ms(900)).await;
        let sink: Arc<dyn BacklogSink> = match metered {
            true => rt.clone(),
            false => Arc::new(Reports::default()),
        };
        let mut reader = Metered::new(Input(vec![Some(100); 71].into()), sink);
        for _ in 0..70 {
            read_one(&mut reader);
            tokio::time::sleep(ms(10)).await;
        }
        read_one(&mut reader);
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
        assert_eq!(a_backlog_of_700_ms(true).await, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn unmeasured_the_same_backlog_blames_the_agent() {
        // The control: the scenario above is one that degrades the agent, then recovers it.
        assert_eq!(a_backlog_of_700_ms(false).await, 2);
    }
}
