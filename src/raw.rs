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
use crate::model::{hash_id, ConversationEntry, ListEntry, Role, Universe};

/// A conversation entry as a slice of the JSON text it was parsed from. It was checked as a
/// [`ConversationEntry`] would be: what parses as one parses as the other.
#[derive(Clone, Debug)]
pub struct RawEntry<'a> {
    id: Cow<'a, str>,
    timestamp: Cow<'a, str>,
    /// `timestamp` read once: a merge orders by it many times over.
    millis: Option<i64>,
    /// The hash of `id`, taken while the text is in the cache: a merge looks ids up once or twice
    /// each, and reading them again from a large text costs more than hashing them.
    id_hash: u64,
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
    fn id_hash(&self) -> u64 {
        self.id_hash
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
        let (id, timestamp) = match quick_view(text.get()) {
            Some((id, timestamp)) => (Cow::Borrowed(id), Cow::Borrowed(timestamp)),
            None => {
                let view: EntryView<'de> =
                    serde_json::from_str(text.get()).map_err(de::Error::custom)?;
                (view.id, view.timestamp)
            }
        };
        Ok(RawEntry {
            id_hash: hash_id(&id),
            id,
            millis: parse_rfc3339_millis(&timestamp),
            timestamp,
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

/// The id and timestamp of the usual entry, read by walking its text, which is valid JSON: about
/// three times faster than [`EntryView`]. Only an entry that [`EntryView`] accepts is read here,
/// and only one whose keys, id, role, universe and timestamp have no escapes; anything else is
/// None, and [`EntryView`] decides (and words the error).
fn quick_view(text: &str) -> Option<(&str, &str)> {
    const ROLES: &[&str] = &["user", "assistant", "system", "agent"];
    const UNIVERSES: &[&str] = &["engineer", "ceremony", "story"];
    let b = text.as_bytes();
    // The known fields, each read once: a second copy of one is for EntryView to refuse.
    let [mut id, mut role, mut content, mut universe, mut timestamp, mut trace_id] = [None; 6];
    let mut i = 1;
    loop {
        i = skip_space(b, i);
        if b.get(i) == Some(&b'}') {
            break;
        }
        let (key, after_key) = plain_string(text, i)?;
        i = skip_space(b, skip_space(b, after_key) + 1); // past the `:`
        let null = b.get(i) == Some(&b'n');
        let (slot, (value, end)): (Option<&mut Option<&str>>, _) = match key {
            "id" => (Some(&mut id), plain_string(text, i)?),
            "timestamp" => (Some(&mut timestamp), plain_string(text, i)?),
            "role" => (Some(&mut role), one_of(plain_string(text, i)?, ROLES)?),
            "universe" if null => (Some(&mut universe), ("", skip_value(b, i)?)),
            "universe" => (
                Some(&mut universe),
                one_of(plain_string(text, i)?, UNIVERSES)?,
            ),
            "content" => (Some(&mut content), ("", string_end(b, i)?)),
            "traceId" if null => (Some(&mut trace_id), ("", skip_value(b, i)?)),
            "traceId" => (Some(&mut trace_id), ("", string_end(b, i)?)),
            // What a `ConversationEntry` keeps in `extra`: any value.
            _ => (None, ("", skip_value(b, i)?)),
        };
        if let Some(slot) = slot {
            slot.replace(value).is_none().then_some(())?;
        }
        i = skip_space(b, end);
        match b.get(i) {
            Some(b',') => i += 1,
            _ => break,
        }
    }
    role?;
    Some((id?, timestamp.unwrap_or("")))
}

/// A string value that must be one of `allowed`.
fn one_of<'t>((value, end): (&'t str, usize), allowed: &[&str]) -> Option<(&'t str, usize)> {
    allowed.contains(&value).then_some((value, end))
}

/// The index after the string starting at `b[i]`, if a string starts there.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    (b.get(i) == Some(&b'"')).then_some(())?;
    skip_string(b, i)
}

fn skip_space(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        i += 1;
    }
    i
}

/// The string starting at `text[i]` and the index after it, if it is a string with no escapes.
fn plain_string(text: &str, i: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    (b.get(i) == Some(&b'"')).then_some(())?;
    let end = i + 1 + quote_or_backslash(&b[i + 1..])?;
    (b[end] == b'"').then(|| (&text[i + 1..end], end + 1))
}

/// The index of the first `"` or `\` in `b`, looked for eight bytes at a time.
fn quote_or_backslash(b: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    // The high bit of each byte of `word` that equals `c` (and perhaps of some bytes after one
    // that does: the lowest set bit is always a true match).
    let matching = |word: u64, c: u8| {
        let x = word ^ (ONES * u64::from(c));
        x.wrapping_sub(ONES) & !x & HIGH
    };
    let mut chunks = b.chunks_exact(8);
    for (n, chunk) in (&mut chunks).enumerate() {
        let word = u64::from_le_bytes(chunk.try_into().ok()?);
        let found = matching(word, b'"') | matching(word, b'\\');
        if found != 0 {
            return Some(n * 8 + found.trailing_zeros() as usize / 8);
        }
    }
    let done = b.len() - chunks.remainder().len();
    let at = chunks
        .remainder()
        .iter()
        .position(|&c| c == b'"' || c == b'\\')?;
    Some(done + at)
}

/// The index after the JSON value starting at `b[i]`, in text known to be valid JSON.
fn skip_value(b: &[u8], mut i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            loop {
                match *b.get(i)? {
                    b'"' => {
                        i = skip_string(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        // A number or a literal runs up to where the object around it goes on.
        _ => {
            let len = b[i..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b' ' | b'\n' | b'\r' | b'\t'))?;
            Some(i + len)
        }
    }
}

/// The index after the string starting at `b[i]`.
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        i += quote_or_backslash(b.get(i..)?)?;
        if b[i] == b'"' {
            return Some(i + 1);
        }
        i += 2;
    }
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
                assert_eq!(raw.id_hash(), typed.id_hash(), "{text}");
                assert_eq!(raw.text(), text.trim(), "{text}");
                assert_eq!(raw.parsed().unwrap(), typed);
            }
        }
    }

    #[test]
    fn the_quick_reading_accepts_only_what_the_view_accepts_and_reads_the_same() {
        let cases = [
            r#"{"id":"e1","role":"user","content":"a \"quoted\" {x}\n","timestamp":"2026-01-01T00:00:00.000Z"}"#,
            r#"{ "id" : "e1" ,"role":"agent", "universe" : null , "traceId":null }"#,
            r#"{"id":"e1","role":"user","universe":"ceremony","traceId":"t\u0031"}"#,
            r#"{"extra":{"a":[1,-2.5e3,true,{"b":"}]\\"}],"c":null},"n":12,"id":"e1","role":"system"}"#,
            r#"{"x":1,"x":2,"id":"e1","role":"user"}"#,
            r#"{"id":"e1","role":"user","id":"e2"}"#,
            r#"{"id":"e1","role":"User"}"#,
            r#"{"id":"e\u0031","role":"user"}"#,
            r#"{"i\u0064":"e1","role":"user"}"#,
            r#"{"id":"e1","role":"user","universe":"st\u006fry"}"#,
            r#"{"id":"e1","role":"user","content":null}"#,
            r#"{"id":"e1","role":"user","content":["x"]}"#,
            r#"{"id":"e1","role":"user","traceId":false}"#,
            r#"{"id":"e1","role":"user","timestamp":null}"#,
            r#"{"id":"e1","role":"user","timestamp":5}"#,
            r#"{"id":null,"role":"user"}"#,
            r#"{"role":"user"}"#,
            r#"{"id":"e1"}"#,
            r#"{}"#,
        ];
        for text in cases {
            let view = serde_json::from_str::<EntryView>(text);
            if let Some((id, timestamp)) = quick_view(text) {
                let view = view
                    .unwrap_or_else(|e| panic!("{text}: read quickly, refused by the view: {e}"));
                assert_eq!((id, timestamp), (&*view.id, &*view.timestamp), "{text}");
            }
        }
        // The usual forms are read quickly.
        for text in &cases[..5] {
            assert!(quick_view(text).is_some(), "{text}");
        }
    }

    #[test]
    fn quotes_and_backslashes_are_found_wherever_they_are() {
        for len in 0..20 {
            for at in 0..len {
                for c in [b'"', b'\\'] {
                    let mut b = vec![b'a'; len];
                    b[at] = c;
                    if at + 1 < len {
                        b[at + 1] = b'"';
                    }
                    assert_eq!(quote_or_backslash(&b), Some(at), "{len} {at}");
                }
            }
            assert_eq!(quote_or_backslash(&vec![0x22 ^ 0x80; len]), None);
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
