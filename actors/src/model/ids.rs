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
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
        if id.is_empty() || id.len() > 128 || !id.chars().all(ok_char) {
            return Err(InvalidId(id.chars().take(140).collect()));
        }
        Ok(Self(Arc::from(id)))
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

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}
