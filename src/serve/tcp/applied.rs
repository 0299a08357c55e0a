//! [`Applied`]: how far a connection has read its input and applied the frames in it, as the
//! deadline wheel asks before a deadline of one of its agents passes
//! ([`vigil_actors::lag::BeatSource`]).
//!
//! A read that finds nothing comes only once every frame read before it was handled; if the
//! kernel then holds nothing unread for the socket (`FIONREAD`), everything that reached the
//! socket by then is applied, and that moment is the mark. The kernel is asked because a
//! read that returns Pending may not have asked it: after a short read tokio waits for the
//! I/O driver's next word on the socket, and the driver runs between tasks. A reader that
//! waits since its mark is caught up as long as the kernel still holds nothing for it.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::time::Instant;
use vigil_actors::lag::BeatSource;

/// `state` once the reader is gone.
const CLOSED: u64 = u64::MAX;

/// One connection's input, as far as it has been applied.
#[derive(Debug)]
pub(crate) struct Applied {
    base: Instant,
    /// `stamp << 1 | waiting`: the stamp (nanoseconds since `base`, plus one; 0 for never) of
    /// the reader's last read that found nothing, and whether it has not read since.
    state: AtomicU64,
    /// The socket (a duplicate of its descriptor), to ask the kernel about unread input;
    /// dropped with the reader.
    socket: Mutex<Option<Socket>>,
}

#[cfg(unix)]
type Socket = std::os::fd::OwnedFd;
/// Elsewhere the kernel is not asked: a waiting reader counts as caught up.
#[cfg(not(unix))]
type Socket = ();

impl Applied {
    /// The input of a connection whose socket cannot be asked (a reader waiting counts as
    /// caught up).
    #[cfg(test)]
    pub(crate) fn new() -> Arc<Self> {
        Self::with_socket(None)
    }

    /// The input of `stream`.
    pub(crate) fn of(stream: &tokio::net::TcpStream) -> Arc<Self> {
        #[cfg(unix)]
        let socket = {
            use std::os::fd::AsFd;
            match stream.as_fd().try_clone_to_owned() {
                Ok(fd) => Some(fd),
                Err(e) => {
                    // Out of descriptors: a waiting reader counts as caught up.
                    tracing::debug!(error = %e, "socket not duplicated; its input is not asked");
                    None
                }
            }
        };
        #[cfg(not(unix))]
        let socket = {
            let _ = stream;
            None
        };
        Self::with_socket(socket)
    }

    fn with_socket(socket: Option<Socket>) -> Arc<Self> {
        Arc::new(Applied {
            base: Instant::now(),
            state: AtomicU64::new(0),
            socket: Mutex::new(socket),
        })
    }

    /// The reader reads: it waits no more.
    pub(crate) fn reading(&self) {
        let _ = self
            .state
            .fetch_update(SeqCst, SeqCst, |s| (s != CLOSED).then_some(s & !1));
    }

    /// A read at `now` found nothing: every frame read before it had been handled. The mark
    /// moves to `now` only if the kernel holds nothing unread either.
    pub(crate) fn waiting(&self, now: Instant) {
        let mark = match self.unread() {
            false => Some(self.stamp(now) << 1 | 1),
            true => None,
        };
        let _ = self.state.fetch_update(SeqCst, SeqCst, |old| {
            (old != CLOSED).then_some(mark.unwrap_or(old | 1))
        });
    }

    /// The reader is gone: nothing more comes by this input.
    pub(crate) fn closed(&self) {
        self.state.store(CLOSED, SeqCst);
        self.socket.lock().take();
    }

    fn stamp(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_nanos() as u64 + 1
    }

    /// Whether the kernel holds input the reader has not read.
    fn unread(&self) -> bool {
        #[cfg(unix)]
        if let Some(socket) = &*self.socket.lock() {
            return rustix::io::ioctl_fionread(socket).is_ok_and(|n| n > 0);
        }
        false
    }
}

impl BeatSource for Applied {
    fn applied_through(&self, at: Instant) -> bool {
        let s = self.state.load(SeqCst);
        if s == CLOSED || s >> 1 >= self.stamp(at) {
            return true;
        }
        if s & 1 == 0 {
            return false; // reading: the frames it read may hold a beat from before `at`
        }
        // Waiting since before `at`: caught up if the kernel still holds nothing for it, and
        // it still waits as it did (had it read in between, what it read may not be applied).
        !self.unread() && self.state.load(SeqCst) == s
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn input_is_applied_up_to_the_last_read_that_found_nothing() {
        let a = Applied::new();
        let t0 = Instant::now();
        assert!(!a.applied_through(t0), "nothing read yet");
        a.waiting(t0);
        tokio::time::advance(Duration::from_millis(300)).await;
        let t1 = Instant::now();
        assert!(a.applied_through(t1), "waiting since, with nothing unread");
        a.reading();
        assert!(
            a.applied_through(t0),
            "what came before the last wait was applied"
        );
        assert!(
            !a.applied_through(t1),
            "what it reads now may hold a beat from before"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        a.waiting(Instant::now());
        assert!(a.applied_through(t1));
        a.reading();
        a.closed();
        assert!(a.applied_through(Instant::now()), "nothing more comes");
        a.waiting(Instant::now());
        assert!(a.applied_through(Instant::now()), "closed stays closed");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_waiting_reader_with_input_in_the_socket_is_behind() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let a = Applied::of(&server);
        let mark = Instant::now();
        a.waiting(mark);
        assert!(a.applied_through(Instant::now()));
        client.write_all(b"{\"type\":\"beats\"}\n").await.unwrap();
        // The bytes are in the server's socket once it can read them.
        let mut one = [0u8; 1];
        let n = server.peek(&mut one).await.unwrap();
        assert_eq!(n, 1);
        assert!(
            !a.applied_through(Instant::now()),
            "unread input waits there"
        );
        // A read that returns Pending without asking the kernel (tokio's, after a short
        // read) does not move the mark past input that waits.
        a.reading();
        a.waiting(Instant::now());
        assert!(
            !a.applied_through(Instant::now()),
            "the kernel still holds it"
        );
        assert!(a.applied_through(mark), "the mark stayed where it was");
        let mut all = vec![0u8; 64];
        let _ = server.read(&mut all).await.unwrap();
        assert!(a.applied_through(Instant::now()), "read: nothing waits");
        a.closed();
        assert!(
            a.socket.lock().is_none(),
            "the duplicate goes with the reader"
        );
    }
}
