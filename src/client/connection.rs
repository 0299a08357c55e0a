//! One connection after the handshake, and its reading and writing halves.

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_util::codec::FramedRead;

use super::{ClientConfig, ClientError, Received, ServerFrame, Welcome};
use crate::protocol::framing::{Line, LineFrames};
use crate::protocol::{Role, PROTOCOL_VERSION};

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Receiving half of a [`Connection`].
pub struct FrameReader {
    frames: FramedRead<ReadHalf<Box<dyn Io>>, LineFrames>,
}

/// Sending half of a [`Connection`].
pub struct FrameWriter {
    write: WriteHalf<Box<dyn Io>>,
}

/// One connection after the handshake.
pub struct Connection {
    /// The server's `welcome`.
    pub welcome: Welcome,
    reader: FrameReader,
    writer: FrameWriter,
}

impl Connection {
    /// Connects, says `hello` with `role`, and waits for `welcome`.
    pub async fn connect(cfg: &ClientConfig, role: Role) -> Result<Self, ClientError> {
        let tcp = tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(&cfg.addr))
            .await
            .map_err(|_| ClientError::Timeout("connect"))??;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &cfg.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(tls.server_name.clone())
                    .map_err(|e| ClientError::Tls(e.to_string()))?;
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                let s = tokio::time::timeout(cfg.connect_timeout, connector.connect(name, tcp))
                    .await
                    .map_err(|_| ClientError::Timeout("TLS handshake"))??;
                Box::new(s)
            }
        };
        let (read, write) = tokio::io::split(io);
        let mut reader = FrameReader {
            frames: FramedRead::new(read, LineFrames::new(16 << 20)),
        };
        let mut writer = FrameWriter { write };
        let mut hello = json!({
            "type": "hello",
            "protocol": PROTOCOL_VERSION,
            "role": role,
            "client": cfg.client_name,
        });
        if let Some(t) = &cfg.token {
            hello["token"] = json!(t);
        }
        if !cfg.features.is_empty() {
            hello["features"] = json!(cfg.features);
        }
        writer.send(&hello).await?;
        let first = tokio::time::timeout(cfg.connect_timeout, reader.recv())
            .await
            .map_err(|_| ClientError::Timeout("welcome"))??;
        match first.map(|r| r.frame) {
            Some(ServerFrame::Welcome(welcome)) => Ok(Self {
                welcome,
                reader,
                writer,
            }),
            Some(ServerFrame::Error { code, message, .. }) => {
                Err(ClientError::Refused { code, message })
            }
            Some(other) => Err(ClientError::Protocol(format!(
                "expected welcome, got {other:?}"
            ))),
            None => Err(ClientError::Closed),
        }
    }

    /// Sends one frame (one line).
    pub async fn send(&mut self, frame: &Value) -> Result<(), ClientError> {
        self.writer.send(frame).await
    }

    /// Sends bytes as they are (lines built by the caller, e.g. a batch of heartbeats).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.writer.send_raw(bytes).await
    }

    /// The next frame and the `ref` it answers; `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Result<Option<Received>, ClientError> {
        self.reader.recv().await
    }

    /// The next frame as JSON, whatever its type (see [`FrameReader::recv_value`]).
    pub async fn recv_value(&mut self) -> Result<Option<Value>, ClientError> {
        self.reader.recv_value().await
    }

    /// The two halves, to read and write from different tasks.
    pub fn split(self) -> (FrameReader, FrameWriter) {
        (self.reader, self.writer)
    }
}

impl FrameWriter {
    /// Sends one frame (one line).
    pub async fn send(&mut self, frame: &Value) -> Result<(), ClientError> {
        let mut line =
            serde_json::to_vec(frame).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.send_raw(&line).await
    }

    /// Sends bytes as they are (lines built by the caller, e.g. a batch of heartbeats).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.write.write_all(bytes).await?;
        Ok(())
    }

    /// Closes the sending side.
    pub async fn close(&mut self) {
        let _ = self.write.shutdown().await;
    }
}

impl FrameReader {
    /// The next frame and the `ref` it answers; `None` when the server closed the connection.
    /// A frame of a later protocol version is [`ServerFrame::Other`].
    pub async fn recv(&mut self) -> Result<Option<Received>, ClientError> {
        let Some(value) = self.recv_value().await? else {
            return Ok(None);
        };
        Received::from_value(value)
            .map(Some)
            .map_err(|e| ClientError::Protocol(format!("{e}")))
    }

    /// The next frame as the JSON the server sent (to print or keep it as it was). `None`
    /// when the server closed the connection.
    pub async fn recv_value(&mut self) -> Result<Option<Value>, ClientError> {
        loop {
            match self.frames.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Line::TooLarge)) => {
                    return Err(ClientError::Protocol("a frame over 16 MiB".into()))
                }
                Some(Ok(Line::Frame(bytes))) => {
                    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                        continue;
                    }
                    return serde_json::from_slice(&bytes)
                        .map(Some)
                        .map_err(|e| ClientError::Protocol(format!("{e}")));
                }
            }
        }
    }
}
