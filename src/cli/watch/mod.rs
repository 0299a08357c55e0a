//! `vigil watch`: a terminal monitor over protocol v1 (role `monitor`).
//!
//! [`watch`] connects, subscribes (topics and filters; a snapshot first, or a replay `since` a
//! seq) and hands every line worth showing to a callback as a [`WatchLine`]. It remembers the
//! last seq it handed on ([`Cursor`]); when the connection drops it reconnects with backoff and
//! subscribes again with `since: last_seq`, so across any number of reconnections each event is
//! shown once, in order, and none is missed while the server keeps it. `lagged` resumes the
//! same way on the same connection; `resync_required` (the history is gone) subscribes again
//! with a snapshot and says so.
//!
//! The resume rules are the pure [`Cursor`] (no IO, unit-tested); [`watch`] is the socket
//! loop around it; [`render`] turns a line into text (or the raw frame for `--json`); [`run`]
//! is the command, and the only part that prints.
mod cursor;
#[cfg(test)]
mod tests;

pub use cursor::Cursor;

use std::io::Write;
use std::ops::ControlFlow;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;
use vigil_actors::{Backoff, Jitter, Status};

use crate::cli::conn::{parse_status, ConnArgs};
use crate::cli::render::{format_event, format_stats, snapshot_summary, use_color};
use crate::client::{ClientConfig, ClientError, Connection, ErrorCode, Received, ServerFrame};
use crate::protocol::Role;

/// The topics a monitor may subscribe to.
pub const TOPICS: [&str; 4] = ["agents", "jobs", "alerts", "stats"];

/// `vigil watch`.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// Where and how to connect.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// A topic to follow (repeatable): agents, jobs, alerts, stats.
    #[arg(
        long = "topic",
        value_name = "TOPIC",
        default_values = ["agents", "alerts"],
        value_parser = clap::builder::PossibleValuesParser::new(TOPICS),
        value_delimiter = ','
    )]
    pub topics: Vec<String>,
    /// Only agents of this kind (repeatable).
    #[arg(long = "kind", value_name = "KIND", value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Only this agent (repeatable).
    #[arg(long = "id", value_name = "ID", value_delimiter = ',')]
    pub ids: Vec<String>,
    /// Only events into or out of this status (repeatable).
    #[arg(long = "status", value_name = "STATUS", value_delimiter = ',', value_parser = parse_status)]
    pub statuses: Vec<Status>,
    /// Replay every retained event after this seq first (instead of a snapshot).
    #[arg(long, value_name = "SEQ")]
    pub since: Option<u64>,
    /// Print the server's frames as they are, one JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// No colours (also when NO_COLOR is set or stdout is not a terminal).
    #[arg(long)]
    pub no_color: bool,
}

/// What [`watch`] subscribes to, and where.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Address, token, TLS and the reconnection backoff.
    pub client: ClientConfig,
    /// The topics to follow (of [`TOPICS`]).
    pub topics: Vec<String>,
    /// Only agents of these kinds; empty: every kind.
    pub kinds: Vec<String>,
    /// Only these agents; empty: every agent.
    pub ids: Vec<String>,
    /// Only events into or out of these statuses; empty: every status.
    pub statuses: Vec<Status>,
    /// Start with a replay after this seq instead of a snapshot.
    pub since: Option<u64>,
    /// A ping when the connection has been quiet this long; silence for three of these
    /// means the connection is dead (a half-open socket never reports an error).
    pub ping_interval: Duration,
}

impl WatchOptions {
    /// Topics `agents` and `alerts`, no filter, a snapshot first.
    pub fn new(client: ClientConfig) -> Self {
        Self {
            client,
            topics: vec!["agents".into(), "alerts".into()],
            kinds: Vec::new(),
            ids: Vec::new(),
            statuses: Vec::new(),
            since: None,
            ping_interval: Duration::from_secs(15),
        }
    }

    fn subscribe_frame(&self, start: Start, reference: u64) -> Value {
        let statuses: Vec<&str> = self.statuses.iter().map(|s| s.as_str()).collect();
        let mut f = json!({
            "type": "subscribe",
            "topics": self.topics,
            "filter": {"kinds": self.kinds, "ids": self.ids, "statuses": statuses},
            "ref": reference,
        });
        match start {
            Start::Snapshot => f["snapshot"] = json!(true),
            Start::Since(seq) => f["since"] = json!(seq),
        }
        f
    }
}

/// How a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The state first, then the events after it.
    Snapshot,
    /// Every retained event after this seq, then live.
    Since(u64),
}

/// What [`watch`] reports.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchLine {
    /// Connected and said hello.
    Connected {
        /// The server's address.
        addr: String,
        /// The session's id, from `welcome`.
        session: String,
    },
    /// The server accepted a subscription.
    Subscribed {
        /// How it starts.
        start: Start,
    },
    /// The `snapshot` frame.
    Snapshot(Value),
    /// An `event` frame not shown before.
    Event {
        /// The event's seq.
        seq: u64,
        /// The frame as the server sent it.
        frame: Value,
    },
    /// A `stats` frame.
    Stats(Value),
    /// The server dropped the subscription because the watcher fell behind; it resumes after
    /// `resume_after` on the same connection.
    Lagged {
        /// The `lagged` frame.
        frame: Value,
        /// The seq to resume after: the last one shown, else the frame's `last_seq`; `None`:
        /// from the start.
        resume_after: Option<u64>,
    },
    /// The events after `last_seq` are no longer retained (the oldest kept is `oldest`); the
    /// watcher subscribes again with a snapshot, and what happened in between is not shown.
    Resync {
        /// The `resync_required` frame.
        frame: Value,
        /// The oldest seq the server still retains.
        oldest: u64,
        /// The seq the watcher had reached; `None` when it had shown nothing.
        last_seq: Option<u64>,
    },
    /// An `error` frame the server sent on its own (e.g. `rate_limited`).
    Notice(Value),
    /// The connection was lost (or could not be made); the watcher retries after `retry_in`.
    Disconnected {
        /// What went wrong.
        error: String,
        /// How long the watcher waits before it connects again.
        retry_in: Duration,
    },
}

impl WatchLine {
    /// The server's frame this line stands for, if any (what `--json` prints).
    pub fn frame(&self) -> Option<&Value> {
        match self {
            WatchLine::Snapshot(f)
            | WatchLine::Event { frame: f, .. }
            | WatchLine::Stats(f)
            | WatchLine::Lagged { frame: f, .. }
            | WatchLine::Resync { frame: f, .. }
            | WatchLine::Notice(f) => Some(f),
            WatchLine::Connected { .. }
            | WatchLine::Subscribed { .. }
            | WatchLine::Disconnected { .. } => None,
        }
    }
}

/// Why [`watch`] gave up: the server refused something that retrying will not fix.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The handshake was refused (e.g. `unauthorized`).
    #[error("the server refused the connection: {code}: {message}")]
    Refused {
        /// The error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The `subscribe` was refused (e.g. `invalid_field`).
    #[error("the server refused the subscription: {code}: {message}")]
    Subscribe {
        /// The error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
}

/// How one connection ended.
enum End {
    /// The callback asked to stop.
    Stopped,
    /// Worth another try.
    Retry(String),
    Fatal(WatchError),
}

/// Watches until `out` returns `Break` (then `Ok`), or the server refuses for good (a wrong
/// token, a bad filter). Connection losses are retried for ever, with backoff between
/// `client.backoff_min` and `client.backoff_max`.
pub async fn watch(
    opts: &WatchOptions,
    mut out: impl FnMut(WatchLine) -> ControlFlow<()>,
) -> Result<(), WatchError> {
    let mut cursor = Cursor::new(opts.since);
    // Half fixed, half random: never a tight loop, and many watchers do not return at the
    // same instant.
    let mut backoff = Backoff::new(
        opts.client.backoff_min,
        opts.client.backoff_max,
        Jitter::Equal,
    );
    loop {
        let error = match session(opts, &mut cursor, &mut backoff, &mut out).await {
            End::Stopped => return Ok(()),
            End::Fatal(e) => return Err(e),
            End::Retry(error) => error,
        };
        let wait = backoff.fail();
        if out(WatchLine::Disconnected {
            error,
            retry_in: wait,
        })
        .is_break()
        {
            return Ok(());
        }
        tokio::time::sleep(wait).await;
    }
}

/// Codes that another try would only get again.
fn fatal(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unauthorized
            | ErrorCode::UnsupportedProtocol
            | ErrorCode::Forbidden
            | ErrorCode::InvalidField
            | ErrorCode::MissingField
    )
}

async fn session(
    opts: &WatchOptions,
    cursor: &mut Cursor,
    backoff: &mut Backoff,
    out: &mut impl FnMut(WatchLine) -> ControlFlow<()>,
) -> End {
    let conn = match Connection::connect(&opts.client, Role::Monitor).await {
        Ok(c) => c,
        Err(ClientError::Refused { code, message }) if fatal(code) => {
            return End::Fatal(WatchError::Refused { code, message })
        }
        Err(e) => return End::Retry(e.to_string()),
    };
    let connected = WatchLine::Connected {
        addr: opts.client.addr.clone(),
        session: conn.welcome.session.clone().unwrap_or_default(),
    };
    if out(connected).is_break() {
        return End::Stopped;
    }
    let (mut reader, mut writer) = conn.split();
    let mut reference = 1u64;
    let mut start = cursor.start();
    if let Err(e) = writer.send(&opts.subscribe_frame(start, reference)).await {
        return End::Retry(e.to_string());
    }
    let mut ping = tokio::time::interval(opts.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await; // the first tick is immediate
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            frame = reader.recv_value() => {
                let value = match frame {
                    Ok(Some(f)) => f,
                    Ok(None) => return End::Retry("the server closed the connection".into()),
                    Err(e) => return End::Retry(e.to_string()),
                };
                heard = Instant::now();
                let received = match Received::from_value(value.clone()) {
                    Ok(r) => r,
                    Err(e) => return End::Retry(format!("unexpected from the server: {e}")),
                };
                let ours = received.reference == Some(json!(reference));
                let line = match received.frame {
                    ServerFrame::Ack if ours => {
                        backoff.reset();
                        Some(WatchLine::Subscribed { start })
                    }
                    ServerFrame::Error { code, message } => {
                        if ours && fatal(code) {
                            return End::Fatal(WatchError::Subscribe { code, message });
                        }
                        if ours {
                            return End::Retry(format!("subscribe refused: {code}: {message}"));
                        }
                        Some(WatchLine::Notice(value))
                    }
                    frame => {
                        let (line, again) = cursor.on_frame(&frame, value);
                        if let Some(again) = again {
                            reference += 1;
                            start = again;
                            if let Err(e) = writer.send(&opts.subscribe_frame(start, reference)).await {
                                return End::Retry(e.to_string());
                            }
                        }
                        line
                    }
                };
                if let Some(line) = line {
                    if out(line).is_break() {
                        return End::Stopped;
                    }
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() >= opts.ping_interval * 3 {
                    return End::Retry("the server stopped answering".into());
                }
                if heard.elapsed() >= opts.ping_interval {
                    if let Err(e) = writer.send(&json!({"type": "ping"})).await {
                        return End::Retry(e.to_string());
                    }
                }
            }
        }
    }
}

/// Where a rendered line goes: data on stdout, the watcher's own news on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Out,
    /// Standard error.
    Err,
}

/// A line as text: the raw frame with `json`, otherwise a human line (coloured with
/// `color`). `None` when there is nothing to show.
pub fn render(line: &WatchLine, json: bool, color: bool) -> Option<(Stream, String)> {
    if json {
        if let Some(f) = line.frame() {
            return Some((Stream::Out, f.to_string()));
        }
    }
    let text = match line {
        WatchLine::Connected { addr, session } => {
            return Some((Stream::Err, format!("watching {addr} (session {session})")))
        }
        WatchLine::Subscribed {
            start: Start::Since(seq),
        } => return Some((Stream::Err, format!("following events after seq {seq}"))),
        WatchLine::Subscribed { .. } => return None,
        WatchLine::Snapshot(f) => snapshot_summary(f),
        WatchLine::Event { frame, .. } => format_event(frame, color),
        WatchLine::Stats(f) => format_stats(f),
        WatchLine::Lagged { resume_after, .. } => {
            let after = resume_after.map_or("the start".to_string(), |s| format!("seq {s}"));
            return Some((
                Stream::Err,
                format!("fell behind the server (lagged); resuming after {after}"),
            ));
        }
        WatchLine::Resync {
            oldest, last_seq, ..
        } => {
            let last = last_seq.map_or("-".to_string(), |s| s.to_string());
            return Some((
                Stream::Err,
                format!(
                    "the server no longer keeps the events after seq {last} (oldest {oldest}): \
                     resubscribing with a snapshot; the events in between are not shown"
                ),
            ));
        }
        WatchLine::Notice(f) => {
            let code = f["code"].as_str().unwrap_or("error");
            let message = f["message"].as_str().unwrap_or("");
            return Some((Stream::Err, format!("server: {code}: {message}")));
        }
        WatchLine::Disconnected { error, retry_in } => {
            return Some((
                Stream::Err,
                format!(
                    "disconnected: {error}; reconnecting in {:.1}s",
                    retry_in.as_secs_f64()
                ),
            ))
        }
    };
    Some((Stream::Out, text))
}

/// The command: watches until Ctrl-C, printing each line.
pub fn run(args: WatchArgs) -> anyhow::Result<()> {
    let mut client = args.conn.client_config("vigil-watch")?;
    // An operator watching wants to be back soon after the server is.
    client.backoff_max = Duration::from_secs(5);
    let mut opts = WatchOptions::new(client);
    opts.topics = args.topics;
    opts.kinds = args.kinds;
    opts.ids = args.ids;
    opts.statuses = args.statuses;
    opts.since = args.since;
    let color = !args.json && use_color(args.no_color);
    let json = args.json;
    let printer = move |line: WatchLine| -> ControlFlow<()> {
        let Some((stream, text)) = render(&line, json, color) else {
            return ControlFlow::Continue(());
        };
        let written = match stream {
            Stream::Out => {
                let mut o = std::io::stdout().lock();
                writeln!(o, "{text}").and_then(|()| o.flush())
            }
            Stream::Err => writeln!(std::io::stderr(), "vigil watch: {text}"),
        };
        // A closed stdout (`vigil watch | head`) ends the watch.
        match written {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        tokio::select! {
            r = watch(&opts, printer) => Ok(r?),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
