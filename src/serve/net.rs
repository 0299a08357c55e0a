//! Accepted sockets, on both listeners: TCP keepalive (a peer that vanished without a FIN is
//! found within minutes, not hours), a cap on the connections one IP address may hold, and the
//! idle timeout of a protocol connection that sends nothing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tracing::debug;

/// Idle time before the first keepalive probe, and the time between probes.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// Settings for an accepted socket: no Nagle delay (frames are small), TCP keepalive.
pub fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        debug!(error = %e, "TCP keepalive not set");
    }
}

/// Connections open per IP address, with a cap.
#[derive(Debug)]
pub struct PerIp {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    /// A cap of `max` connections per address.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `ip`, or `None` when it holds `max` already.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            owner: self.clone(),
            ip,
        })
    }

    /// Connections open now from `ip`.
    pub fn open(&self, ip: IpAddr) -> usize {
        let open = self.open.lock();
        open.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

/// One connection's place in its address's count, given back when dropped.
#[derive(Debug)]
pub struct IpSlot {
    owner: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A stream that holds its address's slot for as long as it lives.
pub struct Counted<S> {
    io: S,
    _slot: IpSlot,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// An HTTP listener whose connections count against their address's cap; one over it is
/// closed at once.
pub struct CappedListener<L> {
    /// The listener that accepts.
    pub inner: L,
    /// The per-address cap the accepted connections count against.
    pub per_ip: Arc<PerIp>,
}

impl<L> axum::serve::Listener for CappedListener<L>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: Unpin,
{
    type Io = Counted<L::Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (io, peer) = self.inner.accept().await;
            match self.per_ip.admit(peer.ip()) {
                Some(slot) => return (Counted { io, _slot: slot }, peer),
                None => debug!(%peer, "HTTP connection refused: max_connections_per_ip reached"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The idle timeout of one connection: [`Idle::expired`] completes once nothing was
/// [`Idle::touch`]ed for `limit`. Touching is a clock read, not a timer reset.
pub struct Idle {
    limit: Duration,
    last: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl Idle {
    /// An idle timeout of `limit`, counted from now.
    pub fn new(limit: Duration) -> Self {
        let now = Instant::now();
        Self {
            limit,
            last: now,
            sleep: Box::pin(tokio::time::sleep_until(now + limit)),
        }
    }

    /// Something was received.
    pub fn touch(&mut self) {
        self.last = Instant::now();
    }

    /// Completes when nothing was received for `limit`.
    pub async fn expired(&mut self) {
        loop {
            self.sleep.as_mut().await;
            let deadline = self.last + self.limit;
            if Instant::now() >= deadline {
                return;
            }
            self.sleep.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_slots_back_when_its_connections_close() {
        let p = PerIp::new(2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let a = p.admit(ip).unwrap();
        let _b = p.admit(ip).unwrap();
        assert!(p.admit(ip).is_none(), "a third from the same address");
        assert!(
            p.admit(other).is_some(),
            "another address has its own count"
        );
        // The same address written as IPv4-mapped IPv6 is the same address.
        assert!(p.admit("::ffff:10.0.0.1".parse().unwrap()).is_none());
        drop(a);
        assert_eq!(p.open(ip), 1);
        assert!(p.admit(ip).is_some());
    }
}
