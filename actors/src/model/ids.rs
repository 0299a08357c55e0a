//! Agent ids.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// An agent's id: 1-128 characters of `A-Za-z0-9._:-` (PROTOCOL.md, `register`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentId(Arc<str>);

impl AgentId {
    /// Checks the protocol's rule for ids and wraps the string.
    pub fn new(id: impl AsRef<str>) -> Result<Self, InvalidId> {
        let id = id.as_ref();
        if !Self::is_valid(id) {
            return Err(InvalidId(id.chars().take(140).collect()));
        }
        Ok(Self(Arc::from(id)))
    }

    /// Whether `id` follows the protocol's rule for ids (checked without making an id).
    pub fn is_valid(id: &str) -> bool {
        let ok_byte = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
        !id.is_empty() && id.len() <= 128 && id.as_bytes().iter().all(ok_byte)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id given does not follow the protocol's rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent id {0:?} must be 1-128 characters of A-Za-z0-9._:-")]
pub struct InvalidId(pub String);

impl TryFrom<String> for AgentId {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, InvalidId> {
        AgentId::new(s)
    }
}

impl From<AgentId> for String {
    fn from(id: AgentId) -> String {
        id.0.to_string()
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An id is looked up by its text (a map keyed by ids answers `get(&str)`): it hashes and
/// compares as its text does.
impl std::borrow::Borrow<str> for AgentId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_found_by_its_text() {
        let mut map = std::collections::HashMap::new();
        map.insert(AgentId::new("a-1.b_c:d").expect("valid"), 7);
        assert_eq!(map.get("a-1.b_c:d"), Some(&7));
        assert_eq!(map.get("a-1.b_c:e"), None);
    }

    #[test]
    fn the_rule_for_ids() {
        let long = "x".repeat(128);
        for ok in ["a", "A-z.0_9:x", long.as_str()] {
            assert!(AgentId::is_valid(ok) && AgentId::new(ok).is_ok(), "{ok}");
        }
        let too_long = "x".repeat(129);
        for bad in ["", "a b", "é", "a/b", "a\n", too_long.as_str()] {
            assert!(
                !AgentId::is_valid(bad) && AgentId::new(bad).is_err(),
                "{bad:?}"
            );
        }
    }
}
