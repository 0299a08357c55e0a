//! One admin operation over protocol v1, as the operator's commands (`vigil agents`,
//! `vigil sinks`, `vigil policy`) send it: connect, `hello` as admin, one
//! `{"type":"admin","op":...,"args":{...},"ref":1}` frame, and its `result` (or `error`).
//!
//! The answer's `data` is read as JSON, not as the core's Rust types, so that a command works
//! against a server a version ahead or behind and shows fields it does not know yet.

use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

use crate::cli::conn::ConnArgs;
use crate::client::{ClientConfig, ClientError, Connection, ErrorCode, ServerFrame};
use crate::protocol::Role;

/// The flags every admin command shares: where and how to connect, how to print, how long
/// to wait.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Where and how to connect.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Print the answer as JSON (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    /// How long to wait for the answer.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    pub timeout: Duration,
}

impl AdminArgs {
    /// Runs `op` with `args` and prints its answer: as JSON with `--json`, else as `render`
    /// makes it. The only part of the admin commands that prints.
    pub fn run(
        &self,
        client_name: &str,
        op: &str,
        args: Value,
        render: impl FnOnce(&Value) -> String,
    ) -> anyhow::Result<()> {
        let cfg = self.conn.client_config(client_name)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let data = rt.block_on(call(&cfg, op, args, self.timeout))?;
        let out = if self.json {
            serde_json::to_string_pretty(&data)?
        } else {
            render(&data)
        };
        println!("{}", out.trim_end());
        Ok(())
    }
}

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The connection or the handshake failed.
    #[error("cannot reach the server at {addr}: {error}{hint}")]
    Connect {
        /// The address tried.
        addr: String,
        /// What went wrong.
        error: ClientError,
        /// What the operator may have got wrong.
        hint: &'static str,
    },
    /// The server refused: the handshake (`unauthorized`, ...) or the operation
    /// (`unknown_agent`, `invalid_field`, ...).
    #[error("{code}: {message}")]
    Refused {
        /// The error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// No answer came within the timeout (the timeout is given).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server's answer was not what the protocol says.
    #[error("{0}")]
    Protocol(String),
}

impl CallError {
    /// The protocol's error code, when the server gave one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            CallError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// One admin operation: connects as admin, sends `op` with `args` (`Null`: none), and
/// returns the result's `data`.
pub async fn call(
    cfg: &ClientConfig,
    op: &str,
    args: Value,
    timeout: Duration,
) -> Result<Value, CallError> {
    let mut conn = Connection::connect(cfg, Role::Admin)
        .await
        .map_err(|e| match e {
            ClientError::Refused { code, message } => CallError::Refused { code, message },
            error => CallError::Connect {
                addr: cfg.addr.clone(),
                hint: match (&error, &cfg.tls) {
                    (ClientError::Io(e), _)
                        if e.kind() == std::io::ErrorKind::ConnectionRefused =>
                    {
                        " (is `vigil serve` running there?)"
                    }
                    (ClientError::Protocol(_) | ClientError::Closed, None) => {
                        " (if the server uses TLS, give --ca)"
                    }
                    _ => "",
                },
                error,
            },
        })?;
    let mut frame = json!({"type": "admin", "op": op, "ref": 1});
    if !args.is_null() {
        frame["args"] = args;
    }
    let lost = |e: ClientError| CallError::Protocol(format!("the connection failed: {e}"));
    conn.send(&frame).await.map_err(lost)?;
    let answer = tokio::time::timeout(timeout, async {
        loop {
            match conn.recv().await.map_err(lost)? {
                None => {
                    return Err(CallError::Protocol(
                        "the server closed the connection without answering".into(),
                    ))
                }
                // Ours, or an error about the connection itself (it has only this request).
                Some(r) if r.reference == Some(json!(1)) => return Ok(r.frame),
                Some(r)
                    if matches!(r.frame, ServerFrame::Error { .. }) && r.reference.is_none() =>
                {
                    return Ok(r.frame)
                }
                Some(_) => continue,
            }
        }
    })
    .await
    .map_err(|_| CallError::Timeout(timeout))??;
    match answer {
        ServerFrame::Result { ok: true, data } => Ok(data),
        ServerFrame::Error { code, message } => Err(CallError::Refused { code, message }),
        ServerFrame::Result { ok: false, data } => Err(CallError::Refused {
            code: ErrorCode::Internal,
            message: data.to_string(),
        }),
        other => Err(CallError::Protocol(format!("unexpected answer: {other:?}"))),
    }
}
