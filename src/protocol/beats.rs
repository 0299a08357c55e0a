//! The ids of a `beats` frame, read where they lie in the line: each is checked against the
//! rule for ids as it is read and copied into one buffer for the frame, so a frame of two
//! hundred ids is two allocations, not four hundred.

use std::fmt;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use vigil_actors::AgentId;

/// The ids of a `beats` frame, each valid by the rule for ids.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct BeatIds {
    text: String,
    /// Where each id ends in `text`.
    ends: Vec<u32>,
}

impl BeatIds {
    /// How many ids there are.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The ids, in the frame's order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let id = &self.text[start..end as usize];
            start = end as usize;
            id
        })
    }
}

impl fmt::Debug for BeatIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'de> Deserialize<'de> for BeatIds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(Ids)
    }
}

/// Reads the array.
struct Ids;

impl<'de> Visitor<'de> for Ids {
    type Value = BeatIds;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of agent ids")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BeatIds, A::Error> {
        let mut ids = BeatIds::default();
        while seq.next_element_seed(Push(&mut ids))?.is_some() {}
        Ok(ids)
    }
}

/// Reads one id into the list.
struct Push<'a>(&'a mut BeatIds);

impl<'de> DeserializeSeed<'de> for Push<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Push<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an agent id")
    }

    fn visit_str<E: de::Error>(self, id: &str) -> Result<(), E> {
        if !AgentId::is_valid(id) {
            return Err(E::custom(
                "each id must be 1-128 characters of A-Z a-z 0-9 . _ : -",
            ));
        }
        let ids = self.0;
        ids.text.push_str(id);
        // An id is at most 128 bytes and a frame far less than 4 GiB.
        ids.ends.push(ids.text.len() as u32);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<Vec<String>, String> {
        serde_json::from_str::<BeatIds>(json)
            .map(|ids| ids.iter().map(str::to_owned).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn ids_are_read_in_order_escaped_or_not() {
        assert_eq!(
            read(r#"["a1","b.2","c\u002d3"]"#),
            Ok(vec!["a1".into(), "b.2".into(), "c-3".into()])
        );
        assert_eq!(read("[]"), Ok(vec![]));
    }

    #[test]
    fn one_invalid_id_fails_the_whole_list() {
        for bad in [
            r#"["ok","not ok"]"#,
            r#"["ok",""]"#,
            r#"["ok",1]"#,
            r#""ok""#,
            r#"["ok",null]"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
        let long = format!(r#"["{}"]"#, "x".repeat(129));
        assert!(read(&long).is_err());
    }
}
