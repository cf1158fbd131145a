//! Conversation entries kept as the JSON text they came as, for merges of JSON texts
//! ([`crate::merge::merge_session_texts`]).
//!
//! A merge of two long histories spends most of its time on the entries: allocating their strings,
//! moving them about, writing them out again and freeing them. It only needs each entry's id and time,
//! and a check that the entry is valid. A [`RawEntry`] is that: the id, the time and a slice of the
//! input text, which is written out unchanged.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::clock::parse_rfc3339_millis;
use crate::model::{ConversationEntry, ListEntry, Role, Universe};

/// A conversation entry as a slice of the JSON text it was parsed from. It was checked as a
/// [`ConversationEntry`] would be: what parses as one parses as the other.
#[derive(Clone, Debug)]
pub struct RawEntry<'a> {
    id: Cow<'a, str>,
    timestamp: Cow<'a, str>,
    /// `timestamp` read once: a merge orders by it many times over.
    millis: Option<i64>,
    text: &'a RawValue,
}

impl RawEntry<'_> {
    /// The entry's JSON text, as it came.
    pub fn text(&self) -> &str {
        self.text.get()
    }

    /// The entry parsed.
    pub fn parsed(&self) -> serde_json::Result<ConversationEntry> {
        serde_json::from_str(self.text.get())
    }
}

impl ListEntry for RawEntry<'_> {
    fn id(&self) -> &str {
        &self.id
    }
    fn time(&self) -> &str {
        &self.timestamp
    }
    fn millis(&self) -> Option<i64> {
        self.millis
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawEntry<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text: &'de RawValue = Deserialize::deserialize(deserializer)?;
        // A struct may also be read from an array; an entry, like a `ConversationEntry` (whose
        // `extra` makes it a map), may not.
        if !text.get().starts_with('{') {
            return Err(de::Error::custom(
                "a conversation entry must be a JSON object",
            ));
        }
        let view: EntryView<'de> = serde_json::from_str(text.get()).map_err(de::Error::custom)?;
        Ok(RawEntry {
            id: view.id,
            millis: parse_rfc3339_millis(&view.timestamp),
            timestamp: view.timestamp,
            text,
        })
    }
}

impl Serialize for RawEntry<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.text.serialize(serializer)
    }
}

/// The fields of a [`ConversationEntry`] with the same types and defaults, read without copying:
/// parsing an entry as this checks it as parsing it as a `ConversationEntry` would. Fields it does not
/// name are what a `ConversationEntry` keeps in `extra`, any JSON value.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryView<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[allow(dead_code)]
    role: Role,
    #[allow(dead_code)]
    #[serde(default)]
    content: AnyString,
    #[allow(dead_code)]
    #[serde(default)]
    universe: Option<Universe>,
    #[serde(default, borrow)]
    timestamp: Cow<'a, str>,
    #[allow(dead_code)]
    #[serde(default)]
    trace_id: Option<AnyString>,
}

/// A JSON string, checked and not kept.
#[derive(Default)]
struct AnyString;

impl<'de> Deserialize<'de> for AnyString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StringVisitor;
        impl Visitor<'_> for StringVisitor {
            type Value = AnyString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<AnyString, E> {
                Ok(AnyString)
            }
        }
        deserializer.deserialize_str(StringVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> serde_json::Result<RawEntry<'_>> {
        serde_json::from_str(text)
    }

    #[test]
    fn what_parses_as_an_entry_parses_as_a_raw_entry_and_nothing_else_does() {
        let cases = [
            r#"{"id":"e1","role":"user","content":"hi","timestamp":"2026-01-01T00:00:00.000Z"}"#,
            r#"{"id":"e\u0031","role":"agent","universe":"story","traceId":"t","tokens":[1,{"a":null}]}"#,
            r#"{"role":"user","id":"e1","traceId":null}"#,
            r#" { "id" : "e1" , "role" : "system" } "#,
            r#"{"id":"e1","role":"robot"}"#,
            r#"{"id":"e1"}"#,
            r#"{"id":"e1","role":"user","content":3}"#,
            r#"{"id":"e1","role":"user","content":null}"#,
            r#"{"id":"e1","role":"user","traceId":7}"#,
            r#"{"id":"e1","role":"user","universe":"moon"}"#,
            r#"{"id":"e1","role":"user","timestamp":null}"#,
            r#"{"id":"e1","id":"e2","role":"user"}"#,
            r#"{"id":1,"role":"user"}"#,
            r#"["e1","user"]"#,
        ];
        for text in cases {
            let typed = serde_json::from_str::<ConversationEntry>(text);
            let raw = raw(text);
            assert_eq!(typed.is_ok(), raw.is_ok(), "{text}: {typed:?} / {raw:?}");
            if let (Ok(typed), Ok(raw)) = (typed, raw) {
                assert_eq!((raw.id(), raw.time()), (typed.id(), typed.time()), "{text}");
                assert_eq!(raw.millis(), typed.millis(), "{text}");
                assert_eq!(raw.text(), text.trim(), "{text}");
                assert_eq!(raw.parsed().unwrap(), typed);
            }
        }
    }

    #[test]
    fn a_raw_entry_is_written_out_as_it_came() {
        let text = r#"{"timestamp":"2026-01-01T00:00:00.000Z", "role":"user","id":"é\n"}"#;
        let entry = raw(text).unwrap();
        assert_eq!(entry.id(), "é\n");
        assert_eq!(
            serde_json::to_string(&vec![entry]).unwrap(),
            format!("[{text}]")
        );
    }
}
