//! Plain data shared by every part of the core: ids, statuses, reasons, policies, agent records
//! and events. Nothing here does IO or holds a lock; everything serializes the way the wire
//! protocol (`docs/protocol.md`) writes it.

mod event;
mod ids;
mod policy;
mod record;
mod status;

pub use event::{Event, EventBody, EventKind, JobReport, JobState, Severity};
pub use ids::{AgentId, InvalidId};
pub use policy::{Policy, PolicyPatch, SavedPolicy};
pub use record::{AgentRecord, Metrics, OpenJob, Registration};
pub use status::{OnDisconnect, Reason, Reported, Status};

/// Timestamps on the wire: RFC 3339, UTC, always with milliseconds.
pub mod ts {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `t` as RFC 3339 with milliseconds and `Z`.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    /// Reads an RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(d)
    }

    /// The same for `Option<DateTime<Utc>>` (`null` for `None`).
    pub mod opt {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        /// Writes `t` as [`ts::serialize`](super::serialize) does, or `null`.
        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        /// Reads an RFC 3339 timestamp or `null`.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<DateTime<Utc>>::deserialize(d)
        }
    }
}

pub(crate) mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod opt_duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_protocol_rule() {
        assert!(AgentId::new("a1").is_ok());
        assert!(AgentId::new("worker-7.eu:x_y").is_ok());
        assert!(AgentId::new("").is_err());
        assert!(AgentId::new("has space").is_err());
        assert!(AgentId::new("x".repeat(128)).is_ok());
        assert!(AgentId::new("x".repeat(129)).is_err());
    }

    #[test]
    fn events_serialize_as_the_protocol_writes_them() {
        let e = Event {
            seq: 1235,
            at: "2026-11-23T10:00:31.002Z".parse().unwrap(),
            agent: Some(AgentId::new("a1").unwrap()),
            kind: Some("worker".into()),
            node: None,
            body: EventBody::Transition {
                from: Status::Online,
                to: Status::Degraded,
                reason: Reason::HeartbeatMissed,
                missed: Some(1),
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"seq":1235,"at":"2026-11-23T10:00:31.002Z","event":"transition",
                "agent":"a1","kind":"worker","from":"online","to":"degraded",
                "reason":"heartbeat_missed","missed":1})
        );
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
