//! Where a key of a YAML file is: the line and column of a key path such as
//! `providers[1].circuit_breaker.failure_threshold`.
//!
//! Most configuration errors are found while the file is read, and serde-saphyr names
//! their line. Checks that need the whole configuration (a route naming an unknown
//! provider, two sections that contradict each other) run after that, when positions are
//! gone: they name the key path they are about instead, and the path is looked up here in
//! a second, position-keeping read of the same text.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A line and a column, both from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) line: u64,
    pub(crate) column: u64,
}

/// The position of `path` in the YAML `text`: the key's for a mapping key, the element's for
/// a sequence index; for a path that goes deeper than the text (a key left out), the
/// deepest part that is there. `None` when the text does not parse or not even the first
/// key is in it.
pub(crate) fn locate(text: &str, path: &str) -> Option<Position> {
    let segments = parse_path(path)?;
    let root: Spanned<Node> = serde_saphyr::from_str(text).ok()?;
    let mut node = &root;
    let mut found = None;
    for segment in &segments {
        let next = match (&node.value, segment) {
            (Node::Map(entries), Segment::Key(key)) => entries
                .iter()
                .find(|(name, _)| name.value.0 == *key)
                .map(|(name, value)| (position(&name.referenced), value)),
            (Node::Seq(items), Segment::Index(index)) => items
                .get(*index)
                .map(|item| (position(&item.referenced), item)),
            _ => None,
        };
        match next {
            Some((at, value)) => {
                found = at.or(found);
                node = value;
            }
            None => break,
        }
    }
    found
}

fn position(location: &serde_saphyr::Location) -> Option<Position> {
    (location.line() > 0).then(|| Position {
        line: location.line(),
        column: location.column(),
    })
}

/// One step of a key path.
#[derive(Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Splits `a.b[2].c` into its steps; `None` if it is not a key path.
fn parse_path(path: &str) -> Option<Vec<Segment>> {
    let mut segments = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(at) => part.split_at(at),
            None => (part, ""),
        };
        let key_ok = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
        if !key_ok {
            return None;
        }
        segments.push(Segment::Key(key.to_owned()));
        while !rest.is_empty() {
            let close = rest.find(']')?;
            let index = rest.get(1..close)?.parse().ok()?;
            segments.push(Segment::Index(index));
            rest = &rest[close + 1..];
        }
    }
    Some(segments)
}

/// A YAML node with the position of every key and element below it.
enum Node {
    Map(Vec<(Spanned<Key>, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Leaf,
}

/// A mapping key, as text.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl Visitor<'_> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping key")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key(String::new()))
            }
        }

        deserializer.deserialize_any(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodeVisitor;

        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML node")
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Leaf)
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Leaf)
            }

            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
                Ok(Node::Leaf)
            }

            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Leaf)
            }

            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Leaf)
            }

            fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
                Node::deserialize(deserializer)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(Node::Map(entries))
            }
        }

        deserializer.deserialize_any(NodeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
providers:
  - name: a
    model: m
  - name: b
    circuit_breaker:
      failure_threshold: 5
routes:
  - match: x
    providers: [a, b]
";

    #[test]
    fn keys_and_elements_are_found_where_they_are_written() {
        let at = |path| locate(TEXT, path).map(|p| (p.line, p.column));
        assert_eq!(at("providers"), Some((1, 1)));
        assert_eq!(at("providers[1].name"), Some((4, 5)));
        assert_eq!(
            at("providers[1].circuit_breaker.failure_threshold"),
            Some((6, 7))
        );
        assert_eq!(at("routes[0].providers[1]"), Some((9, 20)));
        // A key left out: the deepest part that is written.
        assert_eq!(at("providers[0].priority"), Some((2, 5)));
        assert_eq!(at("health.probe_interval"), None);
        assert_eq!(at("not a path"), None);
    }

    #[test]
    fn paths_split_into_keys_and_indexes() {
        assert_eq!(
            parse_path("a.b[2][3].c-d"),
            Some(vec![
                Segment::Key("a".into()),
                Segment::Key("b".into()),
                Segment::Index(2),
                Segment::Index(3),
                Segment::Key("c-d".into()),
            ])
        );
        assert_eq!(parse_path("provider `x`"), None);
        assert_eq!(parse_path("a[x]"), None);
        assert_eq!(parse_path(""), None);
    }
}
