//! The `[[sinks]]` entries: each outbound channel as the file describes it, and the core's
//! settings for it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use vigil_actors::{EventKind, SinkConfig, SinkFilter, StartAt, Status};

/// One `[[sinks]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSection {
    /// A unique name; it names the sink's cursor in the store.
    pub name: String,
    /// `webhook` or `log`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Webhook: where to POST.
    #[serde(default)]
    pub url: Option<String>,
    /// Webhook: the HMAC-SHA256 key of `X-Vigil-Signature`.
    #[serde(default)]
    pub secret: Option<String>,
    /// Webhook: certificates (PEM) to trust for an `https://` url besides the system's roots,
    /// e.g. a private CA.
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
    /// Webhook: extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Webhook: a title added to each event, e.g. `"{agent} ({kind}) is {to}"`. Placeholders:
    /// `{seq} {at} {event} {agent} {kind} {from} {to} {reason} {issue} {severity} {detail}`.
    #[serde(default)]
    pub title: Option<String>,
    /// Webhook: how long one POST may take (default 10 s).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Only these event kinds (`transition`, `registered`, `deregistered`, `activity`, `job`,
    /// `alert`); empty: all.
    #[serde(default)]
    pub events: Vec<EventKind>,
    /// Only agents of these kinds; empty: all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Only changes to these statuses; empty: all.
    #[serde(default)]
    pub statuses: Vec<Status>,
    /// Most events per delivery (default 100).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Attempts before a batch becomes a dead letter (default 10).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// The wait after the first failed attempt, doubled per attempt with jitter (default 500 ms).
    #[serde(default = "default_backoff_initial", with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// The longest wait between attempts (default 60 s).
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Dead letters kept (default 1,000).
    #[serde(default = "default_dead")]
    pub max_dead_letters: usize,
    /// `now` (default) or `beginning`: where a sink with no saved cursor starts.
    #[serde(default)]
    pub start: StartAt,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_batch() -> usize {
    100
}
fn default_attempts() -> u32 {
    10
}
fn default_backoff_initial() -> Duration {
    Duration::from_millis(500)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(60)
}
fn default_dead() -> usize {
    1000
}

impl SinkSection {
    /// The core's settings for this sink.
    pub fn config(&self) -> SinkConfig {
        let mut c = SinkConfig::new(&self.name, &self.kind);
        c.filter = SinkFilter {
            events: self.events.clone(),
            kinds: self.kinds.clone(),
            statuses: self.statuses.clone(),
        };
        c.batch_size = self.batch_size;
        c.max_attempts = self.max_attempts;
        c.backoff_initial = self.backoff_initial;
        c.backoff_max = self.backoff_max;
        c.max_dead_letters = self.max_dead_letters;
        c.start = self.start;
        c
    }

    /// Checks the entry: the core's settings, the type, and a webhook's `http(s)://` url.
    pub fn validate(&self) -> Result<(), String> {
        self.config().validate()?;
        match self.kind.as_str() {
            "log" => Ok(()),
            "webhook" => {
                let url = self
                    .url
                    .as_deref()
                    .ok_or_else(|| format!("sink {}: a webhook needs a url", self.name))?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!(
                        "sink {}: url must be http:// or https://",
                        self.name
                    ));
                }
                Ok(())
            }
            other => Err(format!(
                "sink {}: unknown type {other:?} (webhook or log)",
                self.name
            )),
        }
    }
}
