//! vigil's own log: `tracing` events on stderr, as lines for a person or as one JSON object
//! per line (`[log] format`, `--log-format`). Which events are written is `RUST_LOG`'s
//! business; stdout stays for what a command prints.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The events written when `RUST_LOG` is not set: vigil's at `info`, the store's only when
/// something is wrong.
pub const DEFAULT_FILTER: &str = "info,surrealkv=warn,surrealdb=warn,surrealdb_core=warn";

/// Sets the process's subscriber, writing to stderr in `format`; records of the `log` crate
/// (some dependencies use it) are written too. Fails if a subscriber is already set.
pub fn init(format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_FILTER.into());
    let set = match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(colour_on_stderr())
            .with_writer(std::io::stderr)
            .finish()
            .try_init(),
        LogFormat::Json => json(filter, std::io::stderr).try_init(),
    };
    set.map_err(|e| anyhow::anyhow!("setting up the log: {e}"))
}

/// Colours in the text log only on a terminal, and not when `NO_COLOR` is set: a journal, a
/// file or a pipe gets plain text.
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The JSON subscriber: per event `timestamp` (RFC 3339), `level`, `target`, `fields` (the
/// message and the event's fields), `span` (the innermost span, its name and fields) and
/// `spans` (every span from the outermost in), so a collector sees an event's context
/// without joining lines.
fn json<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(true)
        .with_env_filter(filter)
        .with_writer(writer)
        .finish()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::Mutex;
    use serde_json::Value;

    use super::*;

    /// Everything written, shared with the test.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_json_line_holds_the_event_its_fields_and_its_spans() {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = json(EnvFilter::new("info"), move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("connection", peer = "127.0.0.1:5000");
            let _o = outer.enter();
            let inner = tracing::info_span!("session", conn = 7u64);
            let _i = inner.enter();
            tracing::info!(agent = "w-1", "registered");
            tracing::debug!("filtered out");
        });
        let text = String::from_utf8(buf.0.lock().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let v: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["level"], "INFO", "{v}");
        assert_eq!(v["fields"]["message"], "registered", "{v}");
        assert_eq!(v["fields"]["agent"], "w-1", "{v}");
        assert_eq!(v["target"], module_path!(), "{v}");
        let ts = v["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{v}");
        assert_eq!(v["span"]["name"], "session", "{v}");
        assert_eq!(v["span"]["conn"], 7, "{v}");
        assert_eq!(v["spans"][0]["name"], "connection", "{v}");
        assert_eq!(v["spans"][0]["peer"], "127.0.0.1:5000", "{v}");
        assert_eq!(v["spans"][1]["name"], "session", "{v}");
    }
}
